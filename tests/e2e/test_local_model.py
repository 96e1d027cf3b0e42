"""The real handler against a real llama.cpp server and moto_server: shapes and numbers, not wording."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from lambda_chat import telemetry
from local.serve import serving_in_background
from tests.support.events import load_event
from tests.support.metering import last
from tests.support.model_stack import MODEL_KEY, ModelStack

QUESTION = {"prompt": "Name a colour.", "temperature": 0, "max_tokens": 8}


def server_answer(stack: ModelStack, messages: list[dict[str, str]], max_tokens: int) -> Any:
    """What the model server itself answers to the same request, through the SDK with the right key."""
    client = openai.OpenAI(api_key=MODEL_KEY, base_url=stack.model.base_url, max_retries=0)
    return client.chat.completions.create(
        model=stack.model.alias,
        messages=messages,
        temperature=0,
        max_tokens=max_tokens,  # type: ignore[arg-type]
    )


def test_a_direct_invoke_gets_the_completion_and_usage_the_server_reported(model_stack: ModelStack) -> None:
    # Given the function in front of the real model
    # When a direct invoke asks a question deterministically (temperature 0)
    envelope = model_stack.invoke(dict(QUESTION))
    # Then the envelope carries what the server itself answers to the same request
    reference = server_answer(model_stack, [{"role": "user", "content": QUESTION["prompt"]}], 8)
    assert envelope["success"] is True and envelope["error"] is None
    assert envelope["completion"].strip()
    assert envelope["completion"] == reference.choices[0].message.content
    assert envelope["finish_reason"] == reference.choices[0].finish_reason
    assert envelope["usage"] == reference.usage.model_dump(
        include={"prompt_tokens", "completion_tokens", "total_tokens"}
    )
    assert 0 < envelope["usage"]["completion_tokens"] <= 8


def test_an_api_gateway_event_gets_200_and_the_envelope(model_stack: ModelStack) -> None:
    event = load_event("apigateway-rest.json")  # base64 body, as sam local generate-event makes it
    request = json.loads(base64.b64decode(event["body"]))
    event["body"] = base64.b64encode(json.dumps({**request, "max_tokens": 16}).encode()).decode()
    response = model_stack.invoke(event)
    assert response["statusCode"] == 200
    envelope = json.loads(response["body"])
    assert envelope["success"] is True and envelope["completion"]
    assert envelope["finish_reason"] in ("stop", "length")
    usage = envelope["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_max_tokens_1_stops_for_length(model_stack: ModelStack) -> None:
    envelope = model_stack.invoke({"prompt": "Write a long story about the sea.", "max_tokens": 1})
    assert envelope["success"] is True
    assert envelope["finish_reason"] == "length"
    assert envelope["usage"]["completion_tokens"] == 1


def test_the_system_message_reaches_the_server(model_stack: ModelStack) -> None:
    # Given the same prompt with and without a long system message
    bare = model_stack.invoke({"prompt": "Hi", "max_tokens": 1})
    with_system = model_stack.invoke(
        {"prompt": "Hi", "system_message": "You are a pirate who answers every question in rhymes.", "max_tokens": 1}
    )
    # Then the server counted the system message's tokens in the prompt
    assert with_system["usage"]["prompt_tokens"] >= bare["usage"]["prompt_tokens"] + 10


def test_a_key_the_server_rejects_gives_502(model_stack: ModelStack) -> None:
    model_stack.put_key("sk-wrong-key")
    response = model_stack.invoke(load_event("apigateway-http-api.json"))
    assert response["statusCode"] == 502
    envelope = json.loads(response["body"])
    assert envelope["success"] is False and "rejected the function's API key" in envelope["error"]


def test_a_rotated_key_is_picked_up_after_a_401(model_stack: ModelStack) -> None:
    # Given a warm container that cached a key the server no longer accepts
    model_stack.put_key("sk-old-key")
    assert model_stack.invoke({"prompt": "Hi", "max_tokens": 1})["success"] is False
    # When the secret is rotated to the right key and the next request arrives
    model_stack.put_key(MODEL_KEY)
    envelope = model_stack.invoke({"prompt": "Hi", "max_tokens": 1})
    # Then the 401 made the function re-read the secret, and the same call succeeded
    assert envelope["success"] is True and envelope["usage"]["completion_tokens"] == 1


@pytest.fixture
def local_api(model_stack: ModelStack) -> Iterator[str]:
    with serving_in_background() as url:
        yield url


def post(url: str, body: bytes) -> tuple[int, dict[str, Any], str]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response), response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        return error.code, json.load(error), error.headers["Content-Type"]


def test_the_local_http_api_answers_a_real_http_request(local_api: str) -> None:
    status, envelope, content_type = post(f"{local_api}/chat", json.dumps({"prompt": "Hi", "max_tokens": 3}).encode())
    assert (status, content_type) == (200, "application/json")
    assert envelope["success"] is True and envelope["usage"]["completion_tokens"] <= 3


def test_the_official_sdk_gets_a_chat_completion_from_the_model_through_the_function(
    local_api: str, model_stack: ModelStack
) -> None:
    # Given an unmodified OpenAI client pointed at the function's OpenAI-compatible API
    client = openai.OpenAI(base_url=f"{local_api}/v1", api_key="unused", max_retries=0)
    # When it asks for a completion and lists the models
    completion = client.chat.completions.create(
        model=model_stack.model.alias, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=4, seed=1
    )
    models = [model.id for model in client.models.list()]
    # Then it parsed the model server's own answer, and sees the deployment's model
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    assert completion.model == model_stack.model.alias
    assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 4
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert models == [model_stack.model.alias, "text-embedding-3-small"]


def test_the_local_http_api_passes_on_errors_and_unknown_paths(local_api: str) -> None:
    status, envelope, _ = post(f"{local_api}/chat", b"{not json")
    assert status == 400 and envelope["error"] == "body: is not valid JSON"
    status, body, _ = post(f"{local_api}/elsewhere", b"{}")
    assert status == 404 and body["error"]["code"] == "not_found"


def test_the_model_streams_through_the_function_to_a_client_with_only_base_url_and_api_key(
    local_api: str, model_stack: ModelStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an OpenAI client configured with nothing but base_url and api_key, and the function's metering watched
    client = openai.OpenAI(base_url=f"{local_api}/v1", api_key="unused")
    metered: list[telemetry.CallFigures] = []
    monkeypatch.setattr(telemetry, "record", metered.append)
    messages = [{"role": "user", "content": "Name a colour."}]
    # When it streams a deterministic answer (temperature 0) from the real model
    started, arrivals, text, finish_reason = time.monotonic(), [], "", None
    stream = client.chat.completions.create(
        model=model_stack.model.alias,
        messages=messages,
        max_tokens=12,
        temperature=0,
        stream=True,  # type: ignore[call-overload]
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
            text += chunk.choices[0].delta.content
        if chunk.choices and chunk.choices[0].finish_reason:
            finish_reason = chunk.choices[0].finish_reason
    # Then it got, piece by piece as the model produced them, the text the model server answers whole
    reference = server_answer(model_stack, messages, 12)
    assert text == reference.choices[0].message.content and finish_reason == reference.choices[0].finish_reason
    assert len(arrivals) >= 3 and arrivals[-1] - arrivals[0] > 0.1
    # And the call was counted as served. llama-cpp-python ignores stream_options.include_usage, so it sends
    # no usage chunk, and a streamed call to it is counted without tokens (OpenAI itself sends them)
    wait = time.monotonic() + 3
    while not metered and time.monotonic() < wait:
        time.sleep(0.02)
    assert last(metered).outcome == "success" and last(metered).total_tokens is None
