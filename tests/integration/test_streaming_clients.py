"""Real JavaScript clients streaming from the local API while the fake OpenAI streams slowly.

The official openai npm package (`chat.completions.create({stream: true})`) and the Vercel AI SDK (`streamText`
through `@ai-sdk/openai-compatible`) run unmodified in Node (tests/node), against local/serve.py, which serves the
streaming function's ASGI app. Each script prints one JSON line: the content chunks with their arrival times (ms
since the request started), the finish reason, the usage and the error it saw. tests/integration/test_streaming.py
covers the stream's bytes; these tests cover what clients make of them.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
import urllib.request
from typing import Any

import pytest

from lambda_chat import telemetry
from tests.support.fake_openai import Reply, stream_chunks
from tests.support.metering import the_call
from tests.support.node_clients import NODE_CLIENTS, first_line, node_command
from tests.support.stack import Stack

OPENAI_NPM, AI_SDK = "openai_stream.mjs", "ai_sdk_stream.mjs"
DELTAS = [" Streams", " arrive", " one", " chunk", " at", " a time."]
UPSTREAM_ERROR = "The server had an error while processing your request."  # the fake's mid-stream error event


def run_client(script: str, base_url: str, *options: str) -> dict[str, Any]:
    """Run a client script to its end; what it saw."""
    result = subprocess.run(
        node_command(script, base_url, *options), cwd=NODE_CLIENTS, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    seen: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return seen


def usage_sent(stack: Stack, deltas: list[str]) -> dict[str, int]:
    """The usage chunk the fake streamed for the last request (the function always asks the upstream for it)."""
    sent = stack.openai.received[-1].json
    assert sent["stream_options"] == {"include_usage": True}
    usage: dict[str, int] = stream_chunks(sent, deltas)[-1]["usage"]
    return usage


def text_of(seen: dict[str, Any]) -> str:
    return "".join(chunk["text"] for chunk in seen["chunks"])


def arrival_gaps(seen: dict[str, Any]) -> list[float]:
    times = [chunk["t"] for chunk in seen["chunks"]]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


@pytest.mark.parametrize("script", [OPENAI_NPM, AI_SDK])
def test_chunks_reach_the_client_as_the_upstream_sends_them(stack: Stack, base_url: str, script: str) -> None:
    # Given an upstream that streams six deltas 150 ms apart
    stack.openai.script(Reply.stream(DELTAS, interval=0.15))
    # When a real client streams the completion through the function
    seen = run_client(script, base_url)
    # Then it gets each delta as its own chunk, at the upstream's pace: not buffered into one burst
    assert text_of(seen) == "".join(DELTAS) and len(seen["chunks"]) == len(DELTAS)
    gaps = arrival_gaps(seen)
    assert sum(gap >= 100 for gap in gaps) >= len(gaps) - 1, gaps
    assert seen["chunks"][-1]["t"] - seen["chunks"][0]["t"] >= 600, seen["chunks"]
    # And the stream ends normally
    assert seen["finish_reason"] == "stop" and seen["error"] is None


@pytest.mark.parametrize(
    ("script", "usage_keys"),
    [
        (OPENAI_NPM, ("prompt_tokens", "completion_tokens", "total_tokens")),
        (AI_SDK, ("inputTokens", "outputTokens", "totalTokens")),
    ],
)
def test_a_client_that_asks_for_usage_sees_what_the_upstream_counted(
    stack: Stack, base_url: str, metered: list[telemetry.CallFigures], script: str, usage_keys: tuple[str, ...]
) -> None:
    # Given an upstream that streams six deltas
    stack.openai.script(Reply.stream(DELTAS))
    # When a client asks for the usage (openai: `stream_options.include_usage`; AI SDK: the provider's `includeUsage`)
    seen = run_client(script, base_url, "--include-usage")
    # Then it sees the upstream's token counts
    usage = usage_sent(stack, DELTAS)
    assert [seen["usage"][key] for key in usage_keys] == [
        usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]
    ]  # fmt: skip
    # And the function metered the same tokens
    figures = the_call(metered)
    assert figures.outcome == "success"
    assert (figures.prompt_tokens, figures.completion_tokens, figures.total_tokens) == (
        usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("script", "no_usage"),
    [(OPENAI_NPM, None), (AI_SDK, {"inputTokens": None, "outputTokens": None, "totalTokens": None})],
)
def test_a_client_that_does_not_ask_gets_no_usage_but_the_function_still_meters_it(
    stack: Stack, base_url: str, metered: list[telemetry.CallFigures], script: str, no_usage: Any
) -> None:
    # Given an upstream that streams six deltas
    stack.openai.script(Reply.stream(DELTAS))
    # When a client streams without asking for the usage (the AI SDK's provider, left to its defaults, does not ask)
    seen = run_client(script, base_url)
    # Then it gets the text but no usage chunk
    assert text_of(seen) == "".join(DELTAS)
    assert seen["usage"] == no_usage
    # And the function, which asked the upstream anyway, metered the upstream's tokens
    usage = usage_sent(stack, DELTAS)
    figures = the_call(metered)
    assert figures.outcome == "success"
    assert (figures.prompt_tokens, figures.completion_tokens, figures.total_tokens) == (
        usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]
    )  # fmt: skip


def test_an_aborted_stream_stops_the_upstream(
    stack: Stack, base_url: str, metered: list[telemetry.CallFigures]
) -> None:
    # Given an upstream that would stream 100 deltas 50 ms apart (5 s)
    stack.openai.script(Reply.stream([f" w{index}" for index in range(100)], interval=0.05))
    # When the npm client aborts its request (AbortController) after three chunks, and stays alive
    command = node_command(OPENAI_NPM, base_url, "--abort-after", "3", "--linger-ms", "10000")
    with subprocess.Popen(command, cwd=NODE_CLIENTS, stdout=subprocess.PIPE, text=True) as client:
        try:
            seen = first_line(client, timeout=30)
            aborted = time.monotonic()
            # Then the SDK ends its iteration after the three chunks, quietly (an abort is not an error to it)
            assert seen["aborted"] is True and len(seen["chunks"]) == 3 and seen["error"] is None
            # And within 2 s the upstream sees its reader go away, far short of the 100 chunks
            while not stack.openai.streams_abandoned and time.monotonic() - aborted < 2:
                time.sleep(0.02)
            assert client.poll() is None, "the client exited: its exit, not the abort, may have closed the stream"
            assert len(stack.openai.streams_abandoned) == 1 and stack.openai.streams_abandoned[0] < 20
        finally:
            client.kill()
    # And the function metered the stream as ended by the client
    assert the_call(metered).outcome == "ClientDisconnected"


def test_a_failure_mid_stream_makes_the_npm_sdk_throw_after_the_chunks_before_it(
    stack: Stack, base_url: str, metered: list[telemetry.CallFigures]
) -> None:
    # Given an upstream that streams three deltas 150 ms apart, then an error event
    stack.openai.script(Reply.stream(DELTAS, interval=0.15, break_after=4, failure="error"))
    # When the npm client streams the completion
    seen = run_client(OPENAI_NPM, base_url)
    # Then it got the three chunks, then the SDK threw APIError with the function's message for the failure
    assert text_of(seen) == "".join(DELTAS[:3])
    assert seen["error"]["name"] == "APIError" and UPSTREAM_ERROR in seen["error"]["message"]
    assert seen["error"]["t"] - seen["chunks"][-1]["t"] >= 100 and seen["finish_reason"] is None
    # And the function metered the failure
    assert the_call(metered).outcome == "UpstreamUnavailable"


def test_a_failure_mid_stream_reaches_the_ai_sdk_as_an_error_part(stack: Stack, base_url: str) -> None:
    # Given an upstream that streams three deltas, then an error event
    stack.openai.script(Reply.stream(DELTAS, interval=0.15, break_after=4, failure="error"))
    # When streamText streams the completion
    seen = run_client(AI_SDK, base_url)
    # Then textStream gave the three deltas and ended; onError got the error event's object as sent, and the
    # finish reason says so
    assert text_of(seen) == "".join(DELTAS[:3])
    assert seen["error"]["name"] == "object" and UPSTREAM_ERROR in seen["error"]["message"]
    assert seen["finish_reason"] == "error"


@pytest.mark.parametrize("script", [OPENAI_NPM, AI_SDK])
def test_keep_alive_comments_in_a_silence_are_ignored_by_the_clients(
    stack: Stack, base_url: str, monkeypatch: pytest.MonkeyPatch, script: str
) -> None:
    # Given a function that sends a keep-alive comment every 0.2 s of silence
    monkeypatch.setenv("STREAM_KEEPALIVE_SECONDS", "0.2")
    # And an upstream that goes quiet for 1.2 s before its fourth delta (twice: for a raw read, then the client)
    silent = Reply.stream(DELTAS, interval=0.05, pauses={4: 1.2})
    stack.openai.script(silent, silent)
    request = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=json.dumps({"messages": [{"role": "user", "content": "Say hi"}], "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
    # When a client streams the completion
    seen = run_client(script, base_url)
    # Then the stream held keep-alive comments
    assert raw.count(b": keep-alive\n\n") >= 3, raw
    # And the client got the text intact, the silence between its third and fourth chunks, and no error
    assert text_of(seen) == "".join(DELTAS) and seen["error"] is None
    gaps = arrival_gaps(seen)
    assert gaps[2] >= 1000 and max(gaps[:2] + gaps[3:]) < 1000, gaps
