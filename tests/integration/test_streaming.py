"""Streamed chat completions (`stream: true`) through the streaming app, with the official Python SDK and raw SSE.

The app is the one the streaming function runs behind the Lambda Web Adapter (lambda_chat.asgi), served by
uvicorn on loopback; it calls the fake upstream, which streams slowly, with the key from moto_server.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import httpx2
import openai
import pytest

from lambda_chat import telemetry
from tests.support.fake_openai import Reply
from tests.support.metering import last
from tests.support.stack import API_KEY, Stack, wait_for

MESSAGES = [{"role": "user", "content": "count to five"}]


@pytest.fixture
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="sk-client-side-never-forwarded", max_retries=0)


def raw_events(base_url: str, body: dict[str, Any], **headers: str) -> tuple[httpx2.Response, list[tuple[float, str]]]:
    """The response and its SSE lines (blank lines dropped), each with its arrival time."""
    started = time.monotonic()
    lines = []
    with httpx2.stream("POST", f"{base_url}/chat/completions", json=body, headers=headers, timeout=30) as response:
        for line in response.iter_lines():
            if line:
                lines.append((time.monotonic() - started, line))
    return response, lines


def test_chunks_are_forwarded_as_they_arrive(
    stack: Stack, client: openai.OpenAI, metered: list[telemetry.CallFigures]
) -> None:
    # Given an upstream that streams five words 200 ms apart
    words = [" one", " two", " three", " four", " five"]
    stack.openai.script(Reply.stream(words, interval=0.2))
    # When the official SDK streams them through the app
    started, arrivals = time.monotonic(), []
    with client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True) as stream:
        chunks = []
        for chunk in stream:
            chunks.append(chunk)
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic() - started)
    # Then each word arrived on its own, about 200 ms after the one before: nothing was buffered
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(words)
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert len(arrivals) == 5 and all(gap > 0.12 for gap in gaps), gaps
    assert arrivals[-1] - arrivals[0] > 0.6
    assert chunks[-1].choices[0].finish_reason == "stop"
    # And the usage chunk the client did not ask for was not passed on, though the upstream was asked for it
    assert all(chunk.usage is None for chunk in chunks)
    assert stack.openai.received[-1].json["stream_options"] == {"include_usage": True}
    assert stack.openai.received[-1].headers["authorization"] == f"Bearer {API_KEY}"
    # And the call was metered from that usage chunk all the same
    wait_for(lambda: bool(metered))
    assert (last(metered).outcome, last(metered).completion_tokens, last(metered).model) == (
        "success",
        5,
        "gpt-4o-mini",
    )
    assert last(metered).total_tokens == last(metered).prompt_tokens + 5 and last(metered).cost_usd


def test_the_usage_chunk_reaches_a_client_that_asks_for_it(
    stack: Stack, client: openai.OpenAI, metered: list[telemetry.CallFigures]
) -> None:
    # Given an upstream that streams three words
    stack.openai.script(Reply.stream([" a", " b", " c"]))
    # When the client asks for usage
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    # Then the last chunk carries the usage, with no choices, as OpenAI sends it
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    # And the function metered the same metered
    wait_for(lambda: bool(metered))
    assert last(metered).completion_tokens == 3 and last(metered).prompt_tokens == chunks[-1].usage.prompt_tokens


def test_a_client_that_goes_away_stops_the_upstream(
    stack: Stack, client: openai.OpenAI, metered: list[telemetry.CallFigures]
) -> None:
    # Given an upstream that would stream 100 chunks, 50 ms apart
    stack.openai.script(Reply.stream([f" w{i}" for i in range(100)], interval=0.05))
    # When the client reads three chunks and closes the stream
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    for _ in range(3):
        next(stream)
    stream.close()
    closed = time.monotonic()
    # Then the upstream request is closed at once: its writes fail long before the 100th chunk
    wait_for(lambda: bool(stack.openai.streams_abandoned))
    assert time.monotonic() - closed < 1.5
    assert stack.openai.streams_abandoned[0] < 30
    # And the call is counted as its own outcome
    wait_for(lambda: bool(metered))
    assert last(metered).outcome == "ClientDisconnected"


@pytest.mark.parametrize(
    ("failure", "outcome", "message"),
    [
        ("reset", "UpstreamMalformed", "ended before its answer was complete"),
        ("error", "UpstreamUnavailable", "OpenAI failed while streaming"),
    ],
)
def test_a_failure_mid_stream_ends_it_with_one_error_event(
    stack: Stack, base_url: str, metered: list[telemetry.CallFigures], failure: str, outcome: str, message: str
) -> None:
    # Given an upstream that fails after the role chunk and two words
    stack.openai.script(Reply.stream([" a", " b", " c", " d"], break_after=3, failure=failure))
    # When a client streams
    response, lines = raw_events(base_url, {"messages": MESSAGES, "stream": True})
    # Then the stream had begun (200, event-stream), the words before the failure arrived,
    # and it ends with one error event in OpenAI's format, and no [DONE]
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1][1] != "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for _, line in lines]
    assert [e["choices"][0]["delta"].get("content") for e in events[1:3]] == [" a", " b"]
    error = events[-1]["error"]
    assert message in error["message"] and error["type"] == "server_error"
    assert sum("error" in event for event in events) == 1
    wait_for(lambda: bool(metered))
    assert last(metered).outcome == outcome


def test_the_sdk_raises_on_the_error_event(stack: Stack, client: openai.OpenAI) -> None:
    stack.openai.script(Reply.stream([" a", " b"], break_after=2, failure="error"))
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError, match="OpenAI failed while streaming"):
        list(stream)


def test_silences_get_keep_alives_and_the_stream_goes_on(
    stack: Stack, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given keep-alives every 0.2 s, and an upstream that thinks for 1 s before its first word
    monkeypatch.setenv("STREAM_KEEPALIVE_SECONDS", "0.2")
    stack.openai.script(Reply.stream([" late", " answer"], pauses={1: 1.0}))
    # When a client streams
    _, lines = raw_events(base_url, {"messages": MESSAGES, "stream": True})
    # Then SSE comments kept the line busy during the silence, and the answer followed in full
    texts = [line for _, line in lines]
    first_word = next(i for i, line in enumerate(texts) if "late" in line)
    assert texts[:first_word].count(": keep-alive") >= 3
    assert texts[-1] == "data: [DONE]" and "answer" in texts[-3]


def test_the_stream_ends_cleanly_before_the_deadline(
    stack: Stack, base_url: str, monkeypatch: pytest.MonkeyPatch, metered: list[telemetry.CallFigures]
) -> None:
    # Given 2.5 s for the invocation (1 s of it kept back), and an upstream far slower than that
    monkeypatch.setenv("LOCAL_DEADLINE_MS", "2500")
    monkeypatch.setenv("STREAM_KEEPALIVE_SECONDS", "0.5")
    stack.openai.script(Reply.stream([f" w{i}" for i in range(100)], interval=0.1))
    # When a client streams
    started = time.monotonic()
    _, lines = raw_events(base_url, {"messages": MESSAGES, "stream": True})
    # Then the stream ends with a timeout error event, whole lines only, before the invocation's time is up
    assert time.monotonic() - started < 2.5
    final = json.loads(lines[-1][1].removeprefix("data: "))
    assert final["error"]["code"] == "timeout" and final["error"]["type"] == "timeout_error"
    assert all(line.startswith(("data: ", ": keep-alive")) for _, line in lines)
    assert 5 < len(lines) < 100
    # And the upstream was closed
    wait_for(lambda: bool(stack.openai.streams_abandoned))
    wait_for(lambda: bool(metered))
    assert last(metered).outcome == "DeadlineExceeded"


BEFORE_THE_FIRST_BYTE = [
    pytest.param({"temperature": 5}, [], 400, "temperature", id="validation"),
    pytest.param({"stream": "yes"}, [], 400, "stream", id="stream-not-boolean"),
    pytest.param({"model": "gpt-4o"}, [], 400, "model", id="model-not-allowed"),
    pytest.param({"max_tokens": 999_999, "n": 2}, [], 400, "max_tokens", id="over-the-ceiling-refused"),
    pytest.param({}, [Reply.error(400, "context too long", code="context_length_exceeded")], 400, None, id="up-400"),
    pytest.param({}, [Reply.error(401, "bad key")] * 2, 502, None, id="upstream-401-twice"),
    pytest.param({}, [Reply.error(403, "no access")], 502, None, id="upstream-403"),
    pytest.param({}, [Reply.error(429, "slow down", headers={"Retry-After": "120"})], 429, None, id="upstream-429"),
    pytest.param({}, [Reply.error(500, "boom")] * 3, 502, None, id="upstream-500"),
    pytest.param({}, [Reply(action="reset")], 502, None, id="upstream-reset"),
]


@pytest.mark.parametrize(("fields", "replies", "status", "param"), BEFORE_THE_FIRST_BYTE)
def test_failures_before_the_first_byte_get_their_status_and_openai_error_json(
    stack: Stack,
    base_url: str,
    fields: dict[str, Any],
    replies: list[Reply],
    status: int,
    param: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an upstream (or a request) that fails before any chunk (a limit over the ceiling is refused, not lowered)
    monkeypatch.setenv("MAX_TOKENS_OVER_CEILING", "refuse")
    stack.openai.script(*replies)
    # When a client asks for a stream
    response = httpx2.post(
        f"{base_url}/chat/completions", json={"messages": MESSAGES, "stream": True, **fields}, timeout=30
    )
    # Then it gets the status table's status and OpenAI's error JSON, not a stream
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["message"] and error["param"] == param
    if status == 429:
        assert response.headers["retry-after"] == "120"


def test_a_hanging_upstream_gets_504_before_the_first_byte(
    stack: Stack, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_DEADLINE_MS", "2000")
    stack.openai.script(Reply(action="hang", seconds=4))
    response = httpx2.post(f"{base_url}/chat/completions", json={"messages": MESSAGES, "stream": True}, timeout=30)
    assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"


def test_a_missing_secret_gets_500_before_the_first_byte(
    stack: Stack, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY_SECRET_ID", "lambda-chat/no-such-secret")
    response = httpx2.post(f"{base_url}/chat/completions", json={"messages": MESSAGES, "stream": True}, timeout=30)
    assert response.status_code == 500 and response.json()["error"]["code"] == "api_key_unavailable"
    assert stack.openai.received == []


def test_a_too_large_body_gets_413(stack: Stack, base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BODY_BYTES", "1000")
    body = {"messages": [{"role": "user", "content": "x" * 2000}], "stream": True}
    response = httpx2.post(f"{base_url}/chat/completions", json=body, timeout=30)
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


def test_an_idempotency_key_on_a_stream_is_refused_saying_why(stack: Stack, base_url: str) -> None:
    # When a streamed request carries an Idempotency-Key
    response = httpx2.post(
        f"{base_url}/chat/completions",
        json={"messages": MESSAGES, "stream": True},
        headers={"Idempotency-Key": "order-42"},
        timeout=30,
    )
    # Then it is refused before anything is sent upstream, so it can never be charged twice
    assert response.status_code == 400
    assert "could not be replayed" in response.json()["error"]["message"]
    assert stack.openai.received == []


def test_the_buffered_handler_refuses_a_stream_and_says_where_to_go(stack: Stack) -> None:
    # Given the handler function reached with an OpenAI-style request that asks for a stream (e.g. a Function URL)
    event = {
        "version": "2.0",
        "rawPath": "/v1/chat/completions",
        "requestContext": {"http": {"method": "POST"}, "requestId": "r-1"},
        "body": json.dumps({"messages": MESSAGES, "stream": True}),
        "isBase64Encoded": False,
    }
    # When it is invoked
    response = stack.invoke(event)
    # Then it answers 400 naming the field and the streaming API, without calling the upstream
    error = json.loads(response["body"])["error"]
    assert response["statusCode"] == 400 and error["param"] == "stream" and "streaming API" in error["message"]
    assert stack.openai.received == []


def test_unknown_routes_and_methods_answer_in_openai_format(base_url: str) -> None:
    missing = httpx2.get(f"{base_url}/nothing-here", timeout=10)
    wrong = httpx2.get(f"{base_url}/chat/completions", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["type"] == "invalid_request_error"
