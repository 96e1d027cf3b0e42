"""Unmodified OpenAI clients (the official Python SDK and npm package) against the local HTTP API.

The local API (local/serve.py) serves /v1 with the streaming function's ASGI app, the one the
Lambda Web Adapter runs, which calls the fake OpenAI server. These tests cover whole
(`stream: false`) answers; tests/integration/test_streaming.py covers streams.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import openai
import pytest

from tests.support.fake_openai import Reply
from tests.support.stack import API_KEY, Stack

NODE_CLIENT = Path(__file__).resolve().parent.parent / "node"


@pytest.fixture
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=base_url,
        api_key="sk-client-side-never-forwarded",
        default_headers={"x-api-key": "local-api-gateway-key"},
        max_retries=0,
    )


def test_create_returns_a_parsed_chat_completion_with_every_parameter_passed_on(
    stack: Stack, client: openai.OpenAI
) -> None:
    # When an unmodified client asks for a completion with OpenAI's own parameters
    completion = client.chat.completions.create(
        model="gpt-4.1-mini",
        messages=[{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}],
        temperature=0.2,
        top_p=0.9,
        max_completion_tokens=5,
        stop=["\n"],
        seed=7,
        user="user-42",
        response_format={"type": "text"},
    )
    # Then it gets the SDK's ChatCompletion, parsed from the upstream's own JSON
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    assert completion.choices[0].finish_reason == "length" and completion.usage is not None
    assert completion.usage.completion_tokens == 5
    # And the upstream got the parameters as sent, the token limit under the parameter it understands,
    # and the function's key: never the client's Authorization header
    sent = stack.openai.received[-1]
    assert {k: sent.json[k] for k in ("model", "temperature", "top_p", "stop", "seed", "user", "response_format")} == {
        "model": "gpt-4.1-mini", "temperature": 0.2, "top_p": 0.9, "stop": ["\n"], "seed": 7, "user": "user-42",
        "response_format": {"type": "text"},
    }  # fmt: skip
    assert sent.json["max_tokens"] == 5 and "max_completion_tokens" not in sent.json
    assert sent.json["messages"][0] == {"role": "developer", "content": "be brief"}
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"


def test_an_omitted_token_limit_is_what_the_model_can_write_within_the_ceiling(
    stack: Stack, client: openai.OpenAI
) -> None:
    # Given the default ceiling (32,768): gpt-4o-mini writes at most 16,384 tokens, a model unknown here the ceiling
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    sent = stack.openai.received[-1].json
    assert sent["max_tokens"] == 16_384 and "temperature" not in sent


def test_models_list_is_the_allowlist(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == ["gpt-4o-mini", "gpt-4.1-mini", "text-embedding-3-small"]


def test_with_raw_response_shows_the_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["content-type"] == "application/json"
    assert raw.headers["cache-control"] == "no-store"
    assert raw.headers["x-request-id"]
    assert raw.parse().choices[0].message.content


def test_a_bad_request_raises_bad_request_error_naming_the_param(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], temperature=5)
    assert caught.value.status_code == 400
    assert caught.value.param == "temperature"
    assert caught.value.type == "invalid_request_error"


def test_a_model_outside_the_allowlist_is_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="not allowed"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


def test_a_rate_limit_raises_rate_limit_error_with_retry_after(stack: Stack, client: openai.OpenAI) -> None:
    stack.openai.script(Reply.error(429, "Rate limit reached", headers={"Retry-After": "120"}))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.response.headers["retry-after"] == "120"
    assert caught.value.code == "rate_limit_exceeded"


def test_an_upstream_failure_raises_internal_server_error_502(stack: Stack, client: openai.OpenAI) -> None:
    stack.openai.script(*[Reply.error(500, "boom")] * 3)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502


def test_the_deadline_raises_internal_server_error_504(
    stack: Stack, client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_DEADLINE_MS", "2000")  # the time an invocation has, outside Lambda
    stack.openai.script(Reply(action="hang", seconds=4))
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 504 and caught.value.code == "timeout"


def test_a_client_side_timeout_raises_api_timeout_error(stack: Stack, base_url: str) -> None:
    stack.openai.script(Reply(seconds=2, body={"choices": [{"message": {"content": "late"}}]}))
    impatient = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


def test_the_official_npm_package_gets_a_completion_and_a_typed_error(stack: Stack, base_url: str) -> None:
    # Given the openai npm package installed by the test set-up (make test runs npm ci in tests/node)
    assert (NODE_CLIENT / "node_modules" / "openai").is_dir(), "run `make test` (it installs tests/node)"
    # When its client script runs against the local API
    result = subprocess.run(
        ["node", "client.mjs", base_url], cwd=NODE_CLIENT, capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # Then it parsed a completion, raised BadRequestError for a bad temperature, and listed the models
    assert seen["object"] == "chat.completion" and seen["content"]
    assert seen["usage"]["total_tokens"] == seen["usage"]["prompt_tokens"] + seen["usage"]["completion_tokens"]
    assert seen["error"] == {
        "name": "BadRequestError",
        "status": 400,
        "param": "temperature",
        "type": "invalid_request_error",
    }
    assert seen["models"] == ["gpt-4o-mini", "gpt-4.1-mini", "text-embedding-3-small"]
    assert stack.openai.received[0].json["seed"] == 7
