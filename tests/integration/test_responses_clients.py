"""Real clients of the Responses and Embeddings APIs, unmodified, against the function: npm `openai` and the Agents SDK.

The official openai npm package streams a response (`responses.create({stream: true})`) and creates embeddings
(tests/node/responses_stream.mjs, tests/node/embeddings.mjs); the OpenAI Agents SDK for Python (`openai-agents`)
runs one agent turn, whole and streamed, in a subprocess given nothing but the function's base URL and a key in its
environment. Each runs against local/serve.py (the streaming function's ASGI app) while the fake upstream answers.
tests/integration/test_responses_and_embeddings.py covers the same routes with the Python SDK.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lambda_chat import telemetry
from local.serve import serving_in_background
from tests.support.fake_openai import Reply
from tests.support.fake_responses import embeddings_document, natural_response, response_events
from tests.support.metering import the_call
from tests.support.node_clients import NODE_CLIENTS, first_line, node_command
from tests.support.stack import API_KEY, Stack

RESPONSES_NPM, EMBEDDINGS_NPM = "responses_stream.mjs", "embeddings.mjs"
DELTAS = [" Streams", " arrive", " one", " event", " at", " a time."]
CEILING = 512  # MAX_TOKENS_CEILING for these tests


@pytest.fixture
def base_url(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("MAX_TOKENS_CEILING", str(CEILING))
    with serving_in_background() as url:
        yield f"{url}/v1"


def run_node(script: str, base_url: str, *arguments: str) -> dict[str, Any]:
    """Run an npm client script to its end; what it saw (its one JSON line)."""
    command = node_command(script, base_url, *arguments)
    result = subprocess.run(command, cwd=NODE_CLIENTS, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    seen: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return seen


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


# The npm openai package: a streamed response


def test_the_npm_sdk_streams_a_response_event_by_event_as_the_upstream_sends_them(
    stack: Stack, base_url: str, metered: list[telemetry.CallFigures]
) -> None:
    # Given an upstream that streams six text deltas 150 ms apart
    stack.openai.script(Reply.stream(DELTAS, interval=0.15))
    # When `responses.create({stream: true})` reads the stream through the function
    seen = run_node(RESPONSES_NPM, base_url)
    # Then the upstream got the body as sent, with the token limit set to the ceiling
    sent = stack.openai.received[-1]
    assert (sent.method, sent.path) == ("POST", "/v1/responses")
    assert sent.json["stream"] is True and sent.json["max_output_tokens"] == CEILING
    assert sent.json["instructions"] == "Be brief." and sent.headers["authorization"] == f"Bearer {API_KEY}"
    # And the client got every event the upstream sent, in order: response.created first, response.completed last
    upstream = response_events(sent.json, DELTAS)
    assert [event["type"] for event in seen["events"]] == [event["type"] for event in upstream]
    assert seen["events"][0]["type"] == "response.created" and seen["events"][-1]["type"] == "response.completed"
    assert [event["sequence_number"] for event in seen["events"]] == list(range(len(upstream)))
    # And the deltas one by one, at the upstream's pace, not buffered into one burst
    assert [delta["text"] for delta in seen["deltas"]] == DELTAS
    between = gaps([delta["t"] for delta in seen["deltas"]])
    assert sum(gap >= 100 for gap in between) >= len(between) - 1, between
    # And the final response, whole, with the upstream's usage
    usage = upstream[-1]["response"]["usage"]
    assert seen["response"]["status"] == "completed" and seen["response"]["text"] == "".join(DELTAS)
    assert seen["response"]["usage"] == usage and seen["error"] is None
    # And the function metered the same tokens, from the response.completed event
    call = the_call(metered)
    assert (call.outcome, call.model) == ("success", "gpt-4o-mini")
    assert (call.prompt_tokens, call.completion_tokens, call.total_tokens) == (
        usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]
    )  # fmt: skip


def test_max_output_tokens_over_the_ceiling_makes_the_npm_sdk_throw_bad_request_with_the_param(
    stack: Stack, base_url: str, metered: list[telemetry.CallFigures], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a deployment that refuses, rather than lowers, a limit over the ceiling
    monkeypatch.setenv("MAX_TOKENS_OVER_CEILING", "refuse")
    # When the npm client asks for one token more than the ceiling
    seen = run_node(RESPONSES_NPM, base_url, "--max-output-tokens", str(CEILING + 1))
    # Then `create` threw BadRequestError (400) naming the field, before any event
    error = seen["error"]
    assert (error["name"], error["status"], error["type"]) == ("BadRequestError", 400, "invalid_request_error")
    assert error["param"] == "max_output_tokens" and f"at most {CEILING}" in error["message"]
    assert seen["events"] == []
    # And nothing reached the upstream; the refusal was counted
    assert stack.openai.received == []
    assert the_call(metered).outcome == "InvalidRequest"


def test_an_aborted_response_stream_stops_the_upstream(
    stack: Stack, base_url: str, metered: list[telemetry.CallFigures]
) -> None:
    # Given an upstream that would stream 100 deltas 50 ms apart (5 s)
    stack.openai.script(Reply.stream([f" w{index}" for index in range(100)], interval=0.05))
    # When the npm client aborts its request (AbortController) after three deltas, and stays alive
    command = node_command(RESPONSES_NPM, base_url, "--abort-after", "3", "--linger-ms", "10000")
    with subprocess.Popen(command, cwd=NODE_CLIENTS, stdout=subprocess.PIPE, text=True) as client:
        try:
            seen = first_line(client, timeout=30)
            aborted = time.monotonic()
            # Then the SDK ended its iteration after the three deltas, quietly, with no terminal event
            assert seen["aborted"] is True and len(seen["deltas"]) == 3 and seen["error"] is None
            assert seen["response"] is None
            # And within 2 s the upstream saw its reader go away, far short of the 100 deltas
            while not stack.openai.streams_abandoned and time.monotonic() - aborted < 2:
                time.sleep(0.02)
            assert client.poll() is None, "the client exited: its exit, not the abort, may have closed the stream"
            assert len(stack.openai.streams_abandoned) == 1 and stack.openai.streams_abandoned[0] < 25
        finally:
            client.kill()
    # And the function recorded the stream as ended by the client
    assert the_call(metered).outcome == "ClientDisconnected"


# The npm openai package: embeddings

VECTORS = [[0.5, -0.25, 0.125], [1.0, 0.0, -2.0]]  # exact in float32, as the SDK decodes them


def base64_float32(vector: list[float]) -> str:
    """A vector as OpenAI sends it for `encoding_format: "base64"`: little-endian float32, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def test_the_npm_sdk_gets_embeddings_in_its_default_base64_encoding_and_the_call_is_metered(
    stack: Stack, base_url: str, metered: list[telemetry.CallFigures]
) -> None:
    # Given an upstream that answers as OpenAI does when asked for base64 (the fake itself only sends floats)
    answer = embeddings_document({"input": ["one two", "three"], "model": "text-embedding-3-small"})
    for item, vector in zip(answer["data"], VECTORS, strict=True):
        item["embedding"] = base64_float32(vector)
    stack.openai.script(Reply(body=answer))
    # When `embeddings.create` is left to its defaults
    seen = run_node(EMBEDDINGS_NPM, base_url, "text-embedding-3-small", json.dumps(["one two", "three"]))
    # Then the SDK's own `encoding_format: "base64"` reached the upstream, and its answer the SDK, which decoded it
    sent = stack.openai.received[-1]
    assert sent.path == "/v1/embeddings" and sent.json == {
        "model": "text-embedding-3-small", "input": ["one two", "three"], "encoding_format": "base64"
    }  # fmt: skip
    assert seen["error"] is None
    assert seen["vectors"] == [{"index": index, "embedding": vector} for index, vector in enumerate(VECTORS)]
    assert seen["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    # And the function metered the prompt tokens, priced as an embedding model
    call = the_call(metered)
    assert (call.outcome, call.model, call.prompt_tokens, call.completion_tokens) == (
        "success", "text-embedding-3-small", 3, 0
    )  # fmt: skip
    assert call.cost_usd == pytest.approx(3 * 0.02 / 1_000_000)


def test_the_npm_sdk_gets_float_embeddings_when_it_asks_for_them(stack: Stack, base_url: str) -> None:
    # When the npm client asks for floats
    seen = run_node(EMBEDDINGS_NPM, base_url, "text-embedding-3-small", '"one two"', "--encoding-format", "float")
    # Then the upstream was asked for floats, and the client got the upstream's vectors as they were
    sent = stack.openai.received[-1]
    assert sent.json["encoding_format"] == "float"
    expected = embeddings_document(sent.json)
    assert seen["vectors"] == [{"index": 0, "embedding": expected["data"][0]["embedding"]}]
    assert seen["model"] == "text-embedding-3-small" and seen["usage"] == expected["usage"]


def test_an_embedding_model_not_allowed_makes_the_npm_sdk_throw_bad_request_with_the_param(
    stack: Stack, base_url: str
) -> None:
    # When the npm client names a chat model for embeddings
    seen = run_node(EMBEDDINGS_NPM, base_url, "gpt-4o-mini", '"one two"')
    # Then it threw BadRequestError naming the field, and the message says which models are allowed
    error = seen["error"]
    assert (error["name"], error["status"], error["param"]) == ("BadRequestError", 400, "model")
    assert "text-embedding-3-small" in error["message"] and stack.openai.received == []


# The OpenAI Agents SDK for Python

# One agent turn, run by the Agents SDK as a user would write it. Its model, client and everything else are the
# SDK's defaults; only the environment (see agent_env) points it at the function. Prints one JSON line.
AGENT_TURN = """
import asyncio, json, sys, time
from agents import Agent, Runner
from agents.models import get_default_model

def warm_event_types() -> None:
    # The SDK builds its stream event models on first use: about 1 s of CPU here, during which the first deltas
    # would wait and then arrive together. Built before the clock starts, so the timing is the stream's.
    from openai._models import construct_type
    from openai.types.responses import ResponseStreamEvent
    construct_type(type_=ResponseStreamEvent, value={"type": "response.created", "sequence_number": 0})

async def main(streamed: bool) -> None:
    agent = Agent(name="Assistant", instructions="Answer in one short sentence.")
    warm_event_types()
    started, deltas = time.monotonic(), []
    if streamed:
        result = Runner.run_streamed(agent, "Count to three.")
        async for event in result.stream_events():
            if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
                deltas.append({"t": round((time.monotonic() - started) * 1000, 1), "text": event.data.delta})
    else:
        result = await Runner.run(agent, "Count to three.")
    usage = result.context_wrapper.usage
    print(json.dumps({
        "default_model": get_default_model(),
        "final_output": result.final_output,
        "deltas": deltas,
        "usage": {"requests": usage.requests, "input_tokens": usage.input_tokens,
                  "output_tokens": usage.output_tokens, "total_tokens": usage.total_tokens},
    }))

asyncio.run(main(sys.argv[1:] == ["--streamed"]))
"""


def agent_env(base_url: str) -> dict[str, str]:
    """Only what points the Agents SDK at the function: its base URL and a key (which the function never forwards).

    OPENAI_AGENTS_DISABLE_TRACING=1 turns off the SDK's trace export, which would otherwise POST each run's trace to
    https://api.openai.com/v1/traces/ingest (it does not follow OPENAI_BASE_URL) with this key.
    """
    kept = {name: value for name, value in os.environ.items() if name in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {
        **kept,
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": "sk-agent-side-never-forwarded",
        "OPENAI_AGENTS_DISABLE_TRACING": "1",
    }


def run_agent(base_url: str, *options: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", AGENT_TURN, *options],
        env=agent_env(base_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    seen: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return seen


def test_an_agent_turn_runs_through_the_function_on_the_responses_api(
    stack: Stack, base_url: str, metered: list[telemetry.CallFigures]
) -> None:
    # When the Agents SDK runs one turn (Runner.run), given only the function's base URL and a key
    seen = run_agent(base_url)
    # Then it used the Responses API: one POST /v1/responses, with the SDK's default model and the agent's
    # instructions, which the function sent on with its own key and the token ceiling
    assert [(r.method, r.path) for r in stack.openai.received] == [("POST", "/v1/responses")]
    sent = stack.openai.received[0]
    assert sent.json["model"] == seen["default_model"] and sent.json["instructions"] == "Answer in one short sentence."
    assert sent.json["max_output_tokens"] == CEILING and sent.headers["authorization"] == f"Bearer {API_KEY}"
    # And the agent's final output is the upstream's text
    expected = natural_response(sent.json)
    assert seen["final_output"] == expected["output"][0]["content"][0]["text"]
    # And the agent counted the tokens the function metered
    call = the_call(metered)
    assert call.outcome == "success" and call.model == seen["default_model"]
    assert seen["usage"] == {
        "requests": 1,
        "input_tokens": call.prompt_tokens,
        "output_tokens": call.completion_tokens,
        "total_tokens": call.total_tokens,
    }


def test_a_streamed_agent_turn_gets_the_deltas_as_the_upstream_sends_them(
    stack: Stack, base_url: str, metered: list[telemetry.CallFigures]
) -> None:
    # Given an upstream that streams six text deltas 150 ms apart
    stack.openai.script(Reply.stream(DELTAS, interval=0.15))
    # When the Agents SDK streams one turn (Runner.run_streamed)
    seen = run_agent(base_url, "--streamed")
    # Then the function streamed from the upstream's POST /v1/responses, and the deltas reached the agent one by one
    assert [(r.method, r.path) for r in stack.openai.received] == [("POST", "/v1/responses")]
    assert stack.openai.received[0].json["stream"] is True
    assert [delta["text"] for delta in seen["deltas"]] == DELTAS
    between = gaps([delta["t"] for delta in seen["deltas"]])
    assert sum(gap >= 100 for gap in between) >= len(between) - 1, between
    # And its final output is the whole text, its usage what the function metered from response.completed
    assert seen["final_output"] == "".join(DELTAS)
    call = the_call(metered)
    assert call.outcome == "success" and call.completion_tokens == len(DELTAS)
    assert (seen["usage"]["input_tokens"], seen["usage"]["output_tokens"]) == (call.prompt_tokens, len(DELTAS))
