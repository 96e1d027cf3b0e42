"""Embeddings from a real llama.cpp server through the function; and the Responses API, which that server lacks.

The session's model server runs in embedding mode (`--embedding true`, tests/e2e/conftest.py). Gemma 3 270M is a
causal language model, for which llama.cpp pools nothing: each input's `embedding` is one 640-float vector per
token, not OpenAI's one vector per input. The function passes the server's answer on as it came; these tests check
that it does so exactly, and meters the tokens the server counted.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from lambda_chat import telemetry
from local.serve import serving_in_background
from tests.support.metering import last
from tests.support.model_stack import MODEL_KEY, ModelStack

TEXTS = ["Hello world", "A small grey cat."]


@pytest.fixture
def local_api(model_stack: ModelStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The function's OpenAI-compatible API, in front of the model server, with the model as its embedding model."""
    monkeypatch.setenv("EMBEDDING_MODELS", model_stack.model.alias)
    with serving_in_background() as url:
        yield f"{url}/v1"


def post_to_server(stack: ModelStack, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    """What the model server itself answers, with its key and no client library in between."""
    request = urllib.request.Request(
        f"{stack.model.base_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {MODEL_KEY}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_embeddings_through_the_function_are_the_servers_own_and_are_metered(
    local_api: str, model_stack: ModelStack, metered: list[telemetry.CallFigures]
) -> None:
    # Given an unmodified OpenAI client pointed at the function
    client = openai.OpenAI(base_url=local_api, api_key="unused", max_retries=0)
    # When it asks for the embeddings of two texts (the SDK asks for base64; llama.cpp answers floats regardless)
    result = client.embeddings.create(model=model_stack.model.alias, input=TEXTS)
    # Then it gets, exactly, the vectors the server itself answers for the same input
    status, reference = post_to_server(model_stack, "/embeddings", {"model": model_stack.model.alias, "input": TEXTS})
    assert status == 200
    assert [item.index for item in result.data] == [0, 1]
    assert [item.embedding for item in result.data] == [item["embedding"] for item in reference["data"]]
    assert result.model == reference["model"] == model_stack.model.alias
    # And each input got one vector per token the server counted
    assert result.usage.model_dump() == reference["usage"]
    vectors_per_input: list[Any] = [item.embedding for item in result.data]
    assert sum(len(vectors) for vectors in vectors_per_input) == reference["usage"]["prompt_tokens"]
    # And the function metered the server's token count
    call = last(metered)
    assert (call.outcome, call.model) == ("success", model_stack.model.alias)
    assert (call.prompt_tokens, call.completion_tokens) == (reference["usage"]["prompt_tokens"], 0)


def test_the_local_model_has_no_responses_api_so_the_function_answers_400_with_the_servers_404(
    local_api: str, model_stack: ModelStack, metered: list[telemetry.CallFigures]
) -> None:
    """llama-cpp-python's server (0.3.36) has no Responses API: POST /v1/responses is FastAPI's 404 `Not Found`.

    The function reads an upstream 404 as the upstream rejecting the request (400), like OpenAI's own 404s (an
    unknown stored response), whole or streamed. Against this server the Responses route cannot work.
    """
    body = {"model": model_stack.model.alias, "input": "Hi", "max_output_tokens": 4}
    assert post_to_server(model_stack, "/responses", body) == (404, {"detail": "Not Found"})
    client = openai.OpenAI(base_url=local_api, api_key="unused", max_retries=0)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model=model_stack.model.alias, input="Hi", max_output_tokens=4, stream=stream)
        assert caught.value.status_code == 400
        assert caught.value.message.endswith("OpenAI rejected the request: Not Found"), caught.value.message
    assert [call.outcome for call in metered] == ["UpstreamRejectedRequest"] * 2
