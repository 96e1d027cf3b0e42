"""The fault matrix: every fault, the status it must give, and the time it took.

Each row drives the real handler (API Gateway event) against the fake OpenAI
server and moto_server (or a Secrets Manager endpoint that answers AWS errors),
checks status and envelope, checks the answer came before the Lambda deadline,
and checks the captured logs hold neither the key nor the prompt. The table is
printed at the end of the pytest run (see `pytest_terminal_summary` in conftest).
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from lambda_chat.handler import logger as handler_logger
from tests.support.events import load_event
from tests.support.fake_openai import Reply
from tests.support.fake_secrets_manager import FakeSecretsManager
from tests.support.stack import API_KEY, Stack

PROMPT_CANARY = "canary-prompt-c0ffee the quiet orchard"
FAULT_TABLE: list[tuple[str, int, int, float, str]] = []


@dataclass(frozen=True)
class Fault:
    name: str
    expected: int
    replies: tuple[Reply, ...] = ()
    remaining_ms: int = 30_000
    within_ms: float | None = None  # the answer must come sooner than this (default: the Lambda deadline)
    setup: Callable[[Stack, pytest.MonkeyPatch], None] | None = None
    check: Callable[[dict[str, Any]], bool] = field(default=lambda envelope: True)


def error(status: int, message: str = "fault", code: str | None = None, **headers: str) -> Reply:
    return Reply.error(status, message, code=code, headers=headers)


def completion(message: dict[str, Any] | None, finish_reason: str = "stop", usage: bool = True) -> Reply:
    body: dict[str, Any] = {"model": "m", "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]}
    if usage:
        body["usage"] = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    return Reply(body=body)


def put_secret(value: str | bytes) -> Callable[[Stack, pytest.MonkeyPatch], None]:
    def setup(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
        field = "SecretBinary" if isinstance(value, bytes) else "SecretString"
        stack.moto.secrets_client().put_secret_value(SecretId=stack.secret_id, **{field: value})

    return setup


def missing_secret(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY_SECRET_ID", "lambda-chat/no-such-secret")


def refused_connection(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")


def rotated_while_cached(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    assert stack.invoke({"prompt": "warm up"})["success"] is True
    stack.put_key("sk-rotated-canary-key-9999")
    stack.openai.required_key = "sk-rotated-canary-key-9999"


def ok(finish_reason: str, usage: bool = True, completion: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def check(envelope: dict[str, Any]) -> bool:
        return (
            envelope["finish_reason"] == finish_reason
            and (envelope["usage"] is not None) == usage
            and (completion is None or envelope["completion"] == completion)
        )

    return check


FAULTS = [
    # OpenAI
    Fault("openai 400 context too long", 400, (error(400, "maximum context length", "context_length_exceeded"),)),
    Fault("openai 401 (key rejected twice)", 502, (error(401, "Incorrect API key"), error(401, "Incorrect API key"))),
    Fault("openai 403", 502, (error(403, "Country not supported"),)),
    Fault("openai 404 unknown model", 400, (error(404, "model does not exist", "model_not_found"),)),
    Fault("openai 409 (x3)", 502, (error(409),) * 3),
    Fault("openai 422", 400, (error(422, "unprocessable"),)),
    Fault("openai 429 Retry-After 120", 429, (error(429, "rate limit", **{"Retry-After": "120"}),)),
    Fault("openai 429 no Retry-After (x3)", 429, (error(429, "rate limit"),) * 3),
    Fault("openai 429 then 200", 200, (error(429, "rate limit", **{"Retry-After": "0.1"}),)),
    Fault("openai 429 insufficient_quota", 502, (error(429, "quota", "insufficient_quota"),)),
    Fault("openai 500 (x3)", 502, (error(500),) * 3),
    Fault("openai 502 (x3)", 502, (error(502),) * 3),
    Fault("openai 503 (x3)", 502, (error(503),) * 3),
    Fault("openai 503 then 200", 200, (error(503),)),
    Fault("openai hangs past the deadline", 504, (Reply(action="hang", seconds=10),), remaining_ms=5000),
    Fault("openai slow first byte (1.5 s)", 200, (Reply(seconds=1.5, body=completion({"content": "x"}).body),)),
    Fault("openai connection refused", 502, setup=refused_connection, within_ms=3000),
    Fault("openai connection reset mid-body", 502, (Reply(action="truncate", body={"choices": ["x" * 500]}),)),
    Fault("openai truncated body (clean close)", 502, (Reply(action="cut", body={"choices": ["x" * 500]}),)),
    Fault("openai reset before answering", 502, (Reply(action="reset"),)),
    Fault("openai non-JSON body", 502, (Reply(action="raw", body=b"<html>502 Bad Gateway</html>"),)),
    Fault("openai JSON without choices", 502, (Reply(body={"id": "x", "object": "chat.completion"}),)),
    Fault("openai empty choices", 502, (Reply(body={"choices": []}),)),
    Fault(
        "openai null content", 200, (completion({"role": "assistant", "content": None}),), check=ok("stop", True, "")
    ),
    Fault("openai missing usage", 200, (completion({"content": "x"}, usage=False),), check=ok("stop", usage=False)),
    Fault(
        "openai finish content_filter",
        200,
        (completion({"content": None}, "content_filter"),),
        check=ok("content_filter", True, ""),
    ),
    Fault(
        "openai finish tool_calls",
        200,
        (completion({"content": None, "tool_calls": []}, "tool_calls"),),
        check=ok("tool_calls"),
    ),
    # Secrets Manager
    Fault("secret missing", 500, setup=missing_secret),
    Fault("secret access denied", 500, setup=lambda s, m: None),  # endpoint swapped in the test (AccessDenied)
    Fault("secret read throttled", 500, setup=lambda s, m: None),  # endpoint swapped in the test (Throttling)
    Fault("secret empty string", 500, setup=put_secret(" ")),
    Fault("secret JSON without OPENAI_API_KEY", 500, setup=put_secret('{"key": "sk-x"}')),
    Fault("secret binary", 500, setup=put_secret(b"\x00\x01binary")),
    Fault("secret rotated while cached", 200, setup=rotated_while_cached),
    # Lambda deadline
    Fault("1 s left, openai hangs", 504, (Reply(action="hang", seconds=3),), remaining_ms=1000),
    Fault("1 s left, openai fine", 200, remaining_ms=1000),
    Fault("1 s left, openai 503s", 502, (error(503),) * 3, remaining_ms=1000),
    Fault("3 s left, openai hangs", 504, (Reply(action="hang", seconds=5),), remaining_ms=3000),
    Fault("3 s left, openai 503s", 502, (error(503),) * 3, remaining_ms=3000),
    Fault("30 s left, openai 503s", 502, (error(503),) * 3, remaining_ms=30_000),
]

SECRETS_ERRORS = {"secret access denied": "AccessDeniedException", "secret read throttled": "ThrottlingException"}


@pytest.fixture
def captured_logs(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], str]]:
    """Everything logged, as the function's JSON lines plus every library record, at DEBUG."""
    caplog.set_level(logging.DEBUG)
    handler_logger.setLevel("DEBUG")
    lines = io.StringIO()
    capture = logging.StreamHandler(lines)
    capture.setFormatter(handler_logger.registered_formatter)
    handler_logger.addHandler(capture)
    yield lambda: lines.getvalue() + caplog.text
    handler_logger.removeHandler(capture)
    handler_logger.setLevel("INFO")


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault(stack: Stack, monkeypatch: pytest.MonkeyPatch, captured_logs: Callable[[], str], fault: Fault) -> None:
    # Given the fault
    stack.openai.script(*fault.replies)
    if fault.setup is not None:
        fault.setup(stack, monkeypatch)
    event = load_event("apigateway-rest.json")
    event["isBase64Encoded"] = False
    event["body"] = json.dumps({"prompt": PROMPT_CANARY, "max_tokens": 50})
    # When a request arrives with the given time left
    with FakeSecretsManager(SECRETS_ERRORS.get(fault.name, "")) as fake_secrets:
        if fault.name in SECRETS_ERRORS:
            monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", fake_secrets.endpoint)
        started = time.monotonic()
        response = stack.invoke(event, timeout_ms=fault.remaining_ms)
        elapsed_ms = (time.monotonic() - started) * 1000
    envelope = json.loads(response["body"])
    FAULT_TABLE.append((fault.name, fault.expected, response["statusCode"], elapsed_ms, envelope["error"] or ""))
    # Then the status is the expected one, the envelope well-formed, in time, and the logs clean
    assert response["statusCode"] == fault.expected, envelope["error"]
    assert list(envelope) == ["success", "completion", "usage", "finish_reason", "error"]
    assert envelope["success"] is (fault.expected == 200)
    assert (envelope["error"] is None) is (fault.expected == 200)
    assert fault.check(envelope)
    assert elapsed_ms < (fault.within_ms or fault.remaining_ms)
    exposed = captured_logs() + json.dumps(envelope)
    assert "success" in exposed
    for canary in (API_KEY, "sk-rotated-canary-key-9999", "canary-prompt-c0ffee"):
        assert canary not in exposed
