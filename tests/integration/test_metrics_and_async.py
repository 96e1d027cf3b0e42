"""What the function emits (CloudWatch EMF) and how it answers asynchronous triggers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_lambda_powertools.metrics.provider import cold_start

from lambda_chat.errors import RetryLater
from tests.support.emf import KNOWN_RESPONSE, emf_lines
from tests.support.events import load_event
from tests.support.fake_openai import Reply
from tests.support.stack import Stack


def metric_units(blob: dict[str, Any]) -> dict[str, str]:
    return {m["Name"]: m["Unit"] for m in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]}


def test_a_completion_emits_tokens_latency_and_cost_as_emf(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    # Given a cold container, and OpenAI answering with known usage, cached and reasoning tokens
    cold_start.reset_cold_start_flag()
    stack.openai.script(Reply(body=KNOWN_RESPONSE))
    # When an API Gateway request is served
    response = stack.invoke(load_event("apigateway-http-api.json"))
    assert response["statusCode"] == 200
    # Then one EMF line carries the call's figures, under three dimension sets
    blobs = emf_lines(capsys.readouterr().out)
    cold = [b for b in blobs if "ColdStart" in b]
    calls = [b for b in blobs if "Requests" in b]
    assert len(cold) == 1 and cold[0]["ColdStart"] == 1 and cold[0]["function_name"] == "lambda-chat-local"
    assert len(calls) == 1
    call = calls[0]
    directive = call["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "LambdaChat"
    assert directive["Dimensions"] == [["service"], ["service", "model", "trigger"], ["service", "model", "outcome"]]
    assert (call["model"], call["trigger"], call["outcome"]) == ("gpt-4o-mini", "http_api", "success")
    assert metric_units(call) == {
        "Requests": "Count", "Errors": "Count", "HandlerLatency": "Milliseconds", "UpstreamLatency": "Milliseconds",
        "PromptTokens": "Count", "CompletionTokens": "Count", "TotalTokens": "Count", "ReasoningTokens": "Count",
        "CachedTokens": "Count", "EstimatedCostUSD": "None",
    }  # fmt: skip
    assert (call["Requests"], call["Errors"]) == (1, 0)
    assert (call["PromptTokens"], call["CompletionTokens"], call["TotalTokens"]) == (1000, 500, 1500)
    assert (call["ReasoningTokens"], call["CachedTokens"]) == (100, 200)
    # gpt-4o-mini: 800 uncached input at $0.15/M, 200 cached at $0.075/M, 500 output at $0.60/M
    assert call["EstimatedCostUSD"] == pytest.approx((800 * 0.15 + 200 * 0.075 + 500 * 0.60) / 1e6)
    assert 0 < call["UpstreamLatency"] <= call["HandlerLatency"]


def test_with_metrics_disabled_a_cold_container_writes_no_metrics_line(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a cold container whose metrics are disabled
    cold_start.reset_cold_start_flag()
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    stack.openai.script(Reply(body=KNOWN_RESPONSE))
    # When its first request is served
    response = stack.invoke(load_event("apigateway-http-api.json"))
    # Then it is answered, and neither its ColdStart nor its call's figures are written
    assert response["statusCode"] == 200
    assert emf_lines(capsys.readouterr().out) == []


def test_the_price_table_is_replaced_by_configuration(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODEL_PRICES_JSON", json.dumps({"gpt-4o-mini": {"input": 1, "output": 2}}))
    stack.openai.script(Reply(body=KNOWN_RESPONSE))
    stack.invoke({"prompt": "hi"})
    (call,) = [b for b in emf_lines(capsys.readouterr().out) if "Requests" in b]
    assert call["EstimatedCostUSD"] == pytest.approx((1000 * 1 + 500 * 2) / 1e6)


def test_an_unpriced_model_has_no_cost_metric(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    stack.invoke({"prompt": "hi", "model": "my-local-llama"})
    (call,) = [b for b in emf_lines(capsys.readouterr().out) if "Requests" in b]
    assert "EstimatedCostUSD" not in call and call["TotalTokens"] > 0


def test_a_failure_is_counted_by_error_class(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    stack.openai.script(Reply.error(429, "slow down", headers={"Retry-After": "60"}))
    assert stack.invoke({"prompt": "hi"})["success"] is False
    (call,) = [b for b in emf_lines(capsys.readouterr().out) if "Requests" in b]
    assert (call["Requests"], call["Errors"], call["outcome"]) == (1, 1, "UpstreamRateLimited")
    assert "PromptTokens" not in call and "EstimatedCostUSD" not in call


def test_a_bad_price_table_fails_the_configuration(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_PRICES_JSON", '{"gpt-4o-mini": {"input": -1, "output": 1}}')
    assert stack.invoke({"prompt": "hi"})["error"] == "the function is misconfigured; see its logs"


# --- asynchronous triggers (EventBridge) ---------------------------------------------------------


def test_a_transient_failure_of_an_eventbridge_event_raises_for_lambdas_retries(stack: Stack) -> None:
    # Given OpenAI failing with a server error on every attempt
    stack.openai.script(*[Reply.error(503, "overloaded")] * 3)
    # When an EventBridge event is served
    # Then the function raises, so Lambda retries it and finally hands it to the on-failure destination
    with pytest.raises(RetryLater, match="status 502"):
        stack.invoke(load_event("eventbridge.json"))


def test_a_permanent_failure_of_an_eventbridge_event_returns_the_envelope(stack: Stack) -> None:
    # Given an event whose request can never succeed
    event = load_event("eventbridge.json")
    event["detail"]["temperature"] = 5
    # When it is served, Then the failure envelope goes to the on-success destination: no retry would help
    envelope = stack.invoke(event)
    assert envelope["success"] is False and "temperature" in envelope["error"]


def test_raising_for_retries_can_be_switched_off(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAISE_RETRYABLE_ASYNC_FAILURES", "false")
    stack.openai.script(*[Reply.error(503, "overloaded")] * 3)
    envelope = stack.invoke(load_event("eventbridge.json"))
    assert envelope["success"] is False and "503" in envelope["error"]


def test_step_functions_get_the_envelope_to_branch_on(stack: Stack) -> None:
    # Given the state machine input in events/ (a Task state passes it as the payload)
    state_input = load_event("stepfunctions-input.json")
    # When the function runs it, as the Lambda Invoke task does
    result = stack.invoke(state_input)
    # Then the result is the envelope, and success is the boolean the Choice state tests
    assert list(result) == ["success", "completion", "usage", "finish_reason", "error"]
    assert result["success"] is True
    failed = stack.invoke({**state_input, "max_tokens": 0})
    assert failed["success"] is False


def test_a_refused_made_up_model_does_not_become_a_metric_dimension(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given no allowlist, and OpenAI refusing a model name the caller made up
    stack.openai.script(Reply.error(404, "The model `zz-9f3a` does not exist", code="model_not_found"))
    # When the request is served
    assert stack.invoke({"prompt": "hi", "model": "zz-9f3a"})["success"] is False
    # Then its metrics carry no model dimension of that name (each one would be a new custom metric)
    (call,) = [b for b in emf_lines(capsys.readouterr().out) if "Requests" in b]
    assert call["model"] == "none" and call["outcome"] == "UpstreamRejectedRequest"
