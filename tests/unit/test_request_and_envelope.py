"""The request model, its limits and defaults, and the envelope."""

from __future__ import annotations

from typing import Any

import pytest

from lambda_chat.errors import InvalidRequest
from lambda_chat.models import failure_envelope, parse_request, success_envelope
from lambda_chat.settings import Settings

SETTINGS = Settings(OPENAI_API_KEY_SECRET_ID="s", MAX_PROMPT_CHARS=100, MAX_MESSAGES=3, MAX_TOKENS_CEILING=500)


def refused(data: Any, settings: Settings = SETTINGS) -> str:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(data, settings)
    return caught.value.message


def test_a_prompt_becomes_system_and_user_messages() -> None:
    request = parse_request({"prompt": "hi", "system_message": "be brief"}, SETTINGS)
    assert request.chat_messages() == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


def test_messages_are_sent_as_given() -> None:
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert parse_request({"messages": turns}, SETTINGS).chat_messages() == turns


def test_unset_fields_stay_unset_so_defaults_are_applied_later() -> None:
    request = parse_request({"prompt": "hi"}, SETTINGS)
    assert (request.model, request.temperature, request.max_tokens, request.system_message) == (None,) * 4


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": "hi", "temperature": -0.1}, "temperature"),
        ({"prompt": "hi", "temperature": 2.01}, "temperature"),
        ({"prompt": "hi", "temperature": "0.5"}, "temperature"),
        ({"prompt": "hi", "temperature": True}, "temperature"),
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": 1.5}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": "10"}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": 501}, "max_tokens"),
        ({"prompt": "hi", "model": ""}, "model"),
        ({"prompt": "hi", "system_message": 1}, "system_message"),
        ({"prompt": "hi", "maxtokens": 5}, "maxtokens"),
        ({"prompt": "x" * 101}, "prompt"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": "x", "name": "n"}]}, "messages.0.name"),
        ({"messages": [{"role": "user", "content": "x"}] * 4}, "messages"),
        ({"messages": [{"role": "user", "content": "x" * 60}] * 2}, "messages"),
        ({"prompt": "hi", "messages": [{"role": "user", "content": "x"}]}, "'prompt' or 'messages'"),
        ({"messages": [{"role": "user", "content": "x"}], "system_message": "s"}, "system_message"),
    ],
)
def test_invalid_requests_are_refused_naming_the_field(data: dict[str, Any], field: str) -> None:
    assert field in refused(data)


def test_the_message_does_not_echo_the_input() -> None:
    message = refused({"prompt": "hi", "temperature": "secret-looking-value"})
    assert "secret-looking-value" not in message


@pytest.mark.parametrize("data", [[], "prompt", 3, None])
def test_a_request_must_be_an_object(data: Any) -> None:
    assert refused(data) == "the request must be a JSON object"


def test_the_allowlist_applies_to_the_default_model_too() -> None:
    settings = Settings(OPENAI_API_KEY_SECRET_ID="s", ALLOWED_MODELS="gpt-4.1", DEFAULT_MODEL="gpt-4o-mini")
    assert "not allowed" in refused({"prompt": "hi"}, settings)
    assert parse_request({"prompt": "hi", "model": "gpt-4.1"}, settings).model == "gpt-4.1"


def test_envelopes_always_have_the_same_five_keys() -> None:
    ok = success_envelope("text", {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}, "stop")
    failed = failure_envelope("went wrong")
    assert list(ok) == list(failed) == ["success", "completion", "usage", "finish_reason", "error"]
    assert ok["success"] is True and ok["error"] is None
    assert failed == {"success": False, "completion": None, "usage": None, "finish_reason": None, "error": "went wrong"}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"prompt": "0\ud800"}, "prompt: must be valid Unicode text (it holds a lone surrogate)"),
        ({"prompt": "hi", "system_message": "\udfff"}, "system_message: must be valid Unicode text"),
        ({"messages": [{"role": "user", "content": "a\ud800"}]}, "messages: must be valid Unicode text"),
        ({"prompt": "hi", "model": "gpt\ud800"}, "model: must be valid Unicode text"),
    ],
)
def test_text_that_cannot_be_sent_as_utf8_is_refused_naming_the_field(data: dict[str, Any], field: str) -> None:
    assert field in refused(data)


def test_the_default_token_limit_never_exceeds_the_ceiling() -> None:
    low = Settings(OPENAI_API_KEY_SECRET_ID="s", MAX_TOKENS_CEILING=512)
    assert parse_request({"prompt": "hi"}, low).to_upstream(low).max_tokens == 512
    assert parse_request({"prompt": "hi"}, SETTINGS).to_upstream(SETTINGS).max_tokens == 500
