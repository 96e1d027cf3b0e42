"""The streaming function's entry point as the Lambda Web Adapter drives it: its headers, its health check, its faults.

The adapter passes the invocation's Lambda context (with its deadline, epoch ms) in `x-amzn-lambda-context` and
API Gateway's request context (with the request id) in `x-amzn-request-context`.
"""

from __future__ import annotations

import io
import json
import logging
import time

import httpx2
import pytest

from lambda_chat.asgi import logger as app_logger
from tests.support.fake_openai import Reply
from tests.support.stack import Stack

MESSAGES = [{"role": "user", "content": "hi"}]


def adapter_headers(seconds_left: float, request_id: str = "apigw-req-7") -> dict[str, str]:
    deadline_ms = int((time.time() + seconds_left) * 1000)
    return {
        "x-amzn-lambda-context": json.dumps({"request_id": "lambda-req-1", "deadline": deadline_ms}),
        "x-amzn-request-context": json.dumps({"requestId": request_id, "identity": {"apiKeyId": "k1"}}),
    }


def test_the_lambda_deadline_from_the_adapter_bounds_the_call(stack: Stack, base_url: str) -> None:
    # Given an invocation with 2.5 s left (1 s of it kept back), and an upstream that hangs
    stack.openai.script(Reply(action="hang", seconds=5))
    # When a whole answer is asked for
    started = time.monotonic()
    response = httpx2.post(
        f"{base_url}/chat/completions", json={"messages": MESSAGES}, headers=adapter_headers(2.5), timeout=30
    )
    # Then it answers 504 before the function's own timeout, with API Gateway's request id
    assert response.status_code == 504 and time.monotonic() - started < 2.4
    assert response.headers["x-request-id"] == "apigw-req-7"


def test_a_stream_ends_before_the_lambda_deadline_from_the_adapter(stack: Stack, base_url: str) -> None:
    stack.openai.script(Reply.stream([f" w{i}" for i in range(100)], interval=0.05))
    started = time.monotonic()
    with httpx2.stream(
        "POST",
        f"{base_url}/chat/completions",
        json={"messages": MESSAGES, "stream": True},
        headers=adapter_headers(2.5),
        timeout=30,
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert time.monotonic() - started < 2.4 and response.headers["x-request-id"] == "apigw-req-7"
    assert json.loads(lines[-1].removeprefix("data: "))["error"]["code"] == "timeout"


def test_unreadable_adapter_headers_fall_back_to_the_local_budget(stack: Stack, base_url: str) -> None:
    headers = {"x-amzn-lambda-context": "{not json", "x-amzn-request-context": '["not", "an", "object"]'}
    response = httpx2.post(f"{base_url}/chat/completions", json={"messages": MESSAGES}, headers=headers, timeout=30)
    assert response.status_code == 200 and len(response.headers["x-request-id"]) == 36  # a fresh uuid


def test_the_health_check_needs_no_secret_and_no_upstream(stack: Stack, base_url: str) -> None:
    response = httpx2.get(base_url.removesuffix("/v1") + "/healthz", timeout=10)
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert stack.openai.received == [] and stack.secret_reads == []


@pytest.mark.parametrize(("method", "path"), [("POST", "/chat/completions"), ("GET", "/models")])
def test_a_misconfigured_function_says_so_on_every_route(
    stack: Stack, base_url: str, monkeypatch: pytest.MonkeyPatch, method: str, path: str
) -> None:
    # Given a configuration that does not validate
    monkeypatch.setenv("MAX_TOKENS_CEILING", "-1")
    # When any route is called
    response = httpx2.request(method, f"{base_url}{path}", json={"messages": MESSAGES}, timeout=10)
    # Then it answers 500 in OpenAI's format, naming no detail, and calls nothing
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "the function is misconfigured; see its logs"
    assert stack.openai.received == []


def test_every_log_line_names_who_pays_by_the_keys_id_never_the_key(stack: Stack, base_url: str) -> None:
    # Given the function's log lines captured as it writes them, and API Gateway's request context, which holds
    # the caller's key and its id
    lines = io.StringIO()
    capture = logging.StreamHandler(lines)
    capture.setFormatter(app_logger.registered_formatter)
    app_logger.addHandler(capture)
    context = {"requestId": "r-9", "identity": {"apiKeyId": "a1b2c3d4e5", "apiKey": "key-value-canary-77"}}
    headers = {"x-amzn-request-context": json.dumps(context)}
    try:
        # When a stream and a refused request are served
        stream = {"messages": MESSAGES, "stream": True}
        assert httpx2.post(f"{base_url}/chat/completions", json=stream, headers=headers, timeout=30).status_code == 200
        refused = httpx2.post(f"{base_url}/chat/completions", json={"messages": []}, headers=headers, timeout=30)
        assert refused.status_code == 400
    finally:
        app_logger.removeHandler(capture)
    # Then both log lines name the caller by its key's id, and the key appears nowhere
    served = {line["message"]: line for line in map(json.loads, lines.getvalue().splitlines())}
    assert served["chat completed"]["caller"] == served["chat failed"]["caller"] == "a1b2c3d4e5"
    assert "key-value-canary-77" not in lines.getvalue()
