"""The OpenAI-compatible face: what it accepts, what it passes through, how it words errors."""

from __future__ import annotations

from typing import Any

import pytest

from lambda_chat.errors import InvalidRequest, UpstreamRateLimited, UpstreamRejectedRequest
from lambda_chat.faces import ENVELOPE, OPENAI
from lambda_chat.settings import Settings

SETTINGS = Settings(
    OPENAI_API_KEY_SECRET_ID="s", MAX_PROMPT_CHARS=50, MAX_MESSAGES=3, MAX_TOKENS_CEILING=100, ALLOWED_MODELS="a,b"
)
USER = {"role": "user", "content": "hi"}


def refused(body: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        OPENAI.parse(body, SETTINGS)
    return caught.value


def test_unknown_parameters_pass_through_and_the_token_limit_is_normalised() -> None:
    body = {"model": "b", "messages": [USER], "max_completion_tokens": 7, "seed": 1, "tools": [], "stream": False}
    request = OPENAI.parse(body, SETTINGS)
    assert (request.model, request.max_tokens, request.temperature) == ("b", 7, None)
    assert request.extra == {"seed": 1, "tools": []}
    assert request.messages is body["messages"]


def test_defaults_are_the_default_model_and_the_token_ceiling() -> None:
    settings = Settings(OPENAI_API_KEY_SECRET_ID="s", DEFAULT_MODEL="a", MAX_TOKENS_CEILING=64)
    request = OPENAI.parse({"messages": [USER], "temperature": 0}, settings)
    assert (request.model, request.max_tokens, request.temperature, request.temperature_explicit) == ("a", 64, 0, True)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [USER], "model": "c"}, "model"),
        ({"messages": [USER], "model": "a", "n": 101}, "n"),
        ({"messages": [USER], "model": "a", "n": "2"}, "n"),
        ({"messages": [USER], "model": "a", "service_tier": ["priority"]}, "service_tier"),
        ({"messages": [USER], "model": "a", "tools": [{"description": "x" * 51}]}, "messages"),
        ({"messages": [USER] * 4, "model": "a"}, "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 51}]}], "model": "a"}, "messages"),
        ({"messages": [USER], "model": "a", "stream": "true"}, "stream"),
        ({"messages": [USER], "model": "a", "stream_options": {"include_usage": True}}, "stream_options"),
        (
            {"messages": [USER], "model": "a", "stream": True, "stream_options": {"include_usage": 1}},
            "stream_options.include_usage",
        ),
        ({"messages": [USER], "model": "a", "temperature": 2.5}, "temperature"),
        ({"messages": [{"role": "robot", "content": "x"}], "model": "a"}, "messages.0.role"),
        ({"model": "a"}, "messages"),
    ],
)
def test_refusals_name_the_param(body: dict[str, Any], param: str) -> None:
    assert refused(body).param == param


def test_a_stream_request_says_whether_the_caller_wants_the_usage_chunk() -> None:
    plain = OPENAI.parse({"messages": [USER], "model": "a", "stream": True}, SETTINGS)
    asked = OPENAI.parse(
        {"messages": [USER], "model": "a", "stream": True, "stream_options": {"include_usage": True}}, SETTINGS
    )
    assert (plain.stream, plain.include_usage, asked.stream, asked.include_usage) == (True, False, True, True)
    assert "stream" not in asked.extra and "stream_options" not in asked.extra


def test_the_body_must_be_an_object() -> None:
    assert refused(["not", "an", "object"]).param is None


def test_errors_use_openais_format() -> None:
    bad = OPENAI.failure(InvalidRequest("temperature: too hot", "temperature"))
    assert bad == {
        "error": {"message": "temperature: too hot", "type": "invalid_request_error", "param": "temperature",
                  "code": "invalid_request"}
    }  # fmt: skip
    assert OPENAI.failure(UpstreamRateLimited("slow", retry_after="3"))["error"]["type"] == "rate_limit_error"
    upstream = OPENAI.failure(UpstreamRejectedRequest("too long", param="messages", code="context_length_exceeded"))
    assert upstream["error"]["code"] == "context_length_exceeded" and upstream["error"]["param"] == "messages"


def test_the_envelope_face_keeps_its_five_keys() -> None:
    assert list(ENVELOPE.failure(InvalidRequest("x"))) == ["success", "completion", "usage", "finish_reason", "error"]


def test_models_are_the_allowlist_or_the_default_and_the_embedding_models_each_with_its_routes() -> None:
    assert [(m["id"], m["routes"]) for m in OPENAI.models(SETTINGS)["data"]] == [
        ("a", ["chat.completions", "responses"]),
        ("b", ["chat.completions", "responses"]),
        ("text-embedding-3-small", ["embeddings"]),
    ]
    only_default = Settings(OPENAI_API_KEY_SECRET_ID="s", DEFAULT_MODEL="gpt-4.1-mini", EMBEDDING_MODELS="e1,e2")
    listed = OPENAI.models(only_default)
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == ["gpt-4.1-mini", "e1", "e2"]
    assert listed["data"][0] == {
        "id": "gpt-4.1-mini",
        "object": "model",
        "created": 0,
        "owned_by": "lambda-chat",
        "routes": ["chat.completions", "responses"],
    }


def test_text_that_cannot_be_sent_as_utf8_is_refused() -> None:
    assert "lone surrogate" in refused({"model": "a", "messages": [{"role": "user", "content": "\ud800"}]}).message
