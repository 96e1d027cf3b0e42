"""Endpoint quirks learned at run time, and what reaches the logs."""

from __future__ import annotations

import io
import logging

import pytest

from lambda_chat.handler import logger as handler_logger
from tests.support.fake_openai import Reply
from tests.support.rest_calls import PROMPT_CANARY, call
from tests.support.stack import API_KEY, Stack

TEMPERATURE_REJECTED = Reply.error(
    400,
    "Unsupported value: 'temperature' does not support 0.7 with this model. Only the default (1) value is supported.",
    code="unsupported_value",
    param="temperature",
)


def test_a_model_that_rejects_the_default_temperature_is_retried_without_it_and_remembered(stack: Stack) -> None:
    # Given a reasoning model that only accepts its default temperature
    stack.openai.script(TEMPERATURE_REJECTED)
    # When two requests arrive without a temperature
    first = call(stack, {"prompt": "hi", "model": "o4-mini"})
    second = call(stack, {"prompt": "hi", "model": "o4-mini"})
    # Then the first is retried without it, and the second leaves it out from the start
    assert first[0] == second[0] == 200
    sent = [r.json for r in stack.openai.received]
    assert len(sent) == 3
    assert "temperature" in sent[0]
    assert "temperature" not in sent[1] and "temperature" not in sent[2]


def test_an_explicit_temperature_the_model_rejects_is_the_callers_error(stack: Stack) -> None:
    # Given the same model, and a caller who asked for a temperature
    stack.openai.script(TEMPERATURE_REJECTED)
    # When the request arrives
    code, envelope, _ = call(stack, {"prompt": "hi", "model": "o4-mini", "temperature": 0.2})
    # Then it is not silently dropped: the caller gets OpenAI's 400
    assert code == 400
    assert "temperature" in envelope["error"]
    assert len(stack.openai.received) == 1


def test_the_token_limit_moves_to_the_parameter_the_model_accepts(stack: Stack) -> None:
    # Given an endpoint whose model rejects max_tokens
    stack.openai.script(
        Reply.error(
            400,
            "Unsupported parameter: 'max_tokens' is not supported with this model.",
            code="unsupported_parameter",
            param="max_tokens",
        )
    )
    # When two requests arrive
    assert call(stack, {"prompt": "hi", "model": "o3", "max_tokens": 50})[0] == 200
    assert call(stack, {"prompt": "hi", "model": "o3", "max_tokens": 50})[0] == 200
    # Then the limit is resent as max_completion_tokens, and kept that way for the model
    sent = [r.json for r in stack.openai.received]
    assert sent[0]["max_tokens"] == 50
    assert sent[1]["max_completion_tokens"] == 50 and "max_tokens" not in sent[1]
    assert sent[2]["max_completion_tokens"] == 50


def test_openais_own_endpoint_gets_max_completion_tokens(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the function configured with the parameter OpenAI's endpoint uses
    monkeypatch.setenv("TOKEN_LIMIT_PARAMETER", "max_completion_tokens")
    call(stack, {"prompt": "hi", "max_tokens": 42})
    sent = stack.openai.received[-1].json
    assert sent["max_completion_tokens"] == 42 and "max_tokens" not in sent


def test_logs_hold_neither_the_key_nor_the_prompt_nor_the_completion(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    # Given every logger at DEBUG, the function's JSON lines captured, and a completion to look for
    handler_logger.setLevel("DEBUG")
    caplog.set_level(logging.DEBUG)
    json_lines = io.StringIO()
    capture = logging.StreamHandler(json_lines)
    capture.setFormatter(handler_logger.registered_formatter)
    handler_logger.addHandler(capture)
    completion_canary = "canary-completion-91b2"
    stack.openai.script(
        Reply(body={"choices": [{"message": {"content": completion_canary}, "finish_reason": "stop"}]}),
        Reply.error(400, "bad", param="messages"),
        Reply.error(500, "boom"),
        Reply.error(500, "boom"),
        Reply.error(500, "boom"),
    )
    try:
        # When requests succeed, fail upstream, fail validation, and go through a key rotation
        outcomes = [call(stack)[0] for _ in range(3)]
        outcomes.append(call(stack, {"prompt": PROMPT_CANARY, "temperature": 9})[0])
        stack.put_key("sk-rotated-canary-5555")
        stack.openai.required_key = "sk-rotated-canary-5555"
        outcomes.append(call(stack)[0])
    finally:
        handler_logger.setLevel("INFO")
        handler_logger.removeHandler(capture)
    # Then the logs have a line per request, and none of the secrets or texts
    assert outcomes == [200, 400, 502, 400, 200]
    captured = json_lines.getvalue() + caplog.text
    assert captured.count('"message":"chat ') == 5
    assert '"total_tokens":' in captured and '"correlation_id":"c6af9ac6' in captured
    for canary in (API_KEY, "sk-rotated-canary-5555", "canary-prompt-7f3a", completion_canary):
        assert canary not in captured
