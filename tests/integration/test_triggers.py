"""Every sample in events/ through the real handler, against the loopback servers."""

from __future__ import annotations

import json

import pytest

from tests.support.events import EVENTS, load_event
from tests.support.stack import Stack

ENVELOPE_KEYS = {"success", "completion", "usage", "finish_reason", "error"}
HTTP_EVENTS = ["apigateway-rest.json", "apigateway-rest-messages.json", "apigateway-http-api.json", "function-url.json"]
PLAIN_EVENTS = ["direct.json", "direct-messages.json", "eventbridge.json", "stepfunctions-input.json"]


def test_every_sample_event_is_covered_here() -> None:
    # Given the files in events/
    names = {path.name for path in EVENTS.glob("*.json")}
    # Then each one is exercised by a test in this module
    covered = set(HTTP_EVENTS) | set(PLAIN_EVENTS) | set(INVALID_EVENTS)
    assert names == covered


@pytest.mark.parametrize("name", HTTP_EVENTS)
def test_http_events_answer_200_with_a_json_envelope(stack: Stack, name: str) -> None:
    # Given an HTTP trigger's sample event
    event = load_event(name)
    # When the handler runs it
    response = stack.invoke(event)
    # Then it answers like API Gateway expects, with the success envelope as the body
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == "application/json"
    envelope = json.loads(response["body"])
    assert set(envelope) == ENVELOPE_KEYS
    assert envelope["success"] is True and envelope["error"] is None
    assert envelope["completion"]
    sent = stack.openai.received[-1].json
    usage = envelope["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert sent["messages"][-1]["role"] == "user"


@pytest.mark.parametrize("name", PLAIN_EVENTS)
def test_direct_and_eventbridge_events_get_the_envelope_itself(stack: Stack, name: str) -> None:
    # Given a direct-invoke or EventBridge sample
    event = load_event(name)
    request = event.get("detail", event)
    # When the handler runs it
    envelope = stack.invoke(event)
    # Then the envelope is the result, and the request reached OpenAI as sent
    assert set(envelope) == ENVELOPE_KEYS
    assert envelope["success"] is True
    sent = stack.openai.received[-1].json
    assert sent["max_tokens"] == request["max_tokens"]
    assert sent["messages"][-1]["content"] == (request.get("prompt") or request["messages"][-1]["content"])


INVALID_EVENTS = {
    "invalid-apigateway-rest-bad-json.json": "body",
    "invalid-apigateway-rest-temperature.json": "temperature",
    "invalid-direct-missing-prompt.json": "prompt",
    "invalid-direct-wrong-types.json": "temperature",
}


@pytest.mark.parametrize(("name", "field"), INVALID_EVENTS.items())
def test_invalid_samples_are_refused_naming_the_field_without_calling_openai(
    stack: Stack, name: str, field: str
) -> None:
    # Given an invalid sample
    event = load_event(name)
    # When the handler runs it
    result = stack.invoke(event)
    # Then it is refused with 400 (for HTTP) and a message naming the field, and OpenAI is not called
    if "statusCode" in result:
        assert result["statusCode"] == 400
        result = json.loads(result["body"])
    assert result["success"] is False and result["completion"] is None
    assert field in result["error"]
    assert stack.openai.received == []


@pytest.mark.parametrize(
    ("path", "method"), [("/v1/responses", "POST"), ("/v1/embeddings", "POST"), ("/v1/responses/resp_1", "GET")]
)
def test_an_openai_client_given_the_handlers_url_for_a_streaming_api_route_is_told_where_it_is(
    stack: Stack, path: str, method: str
) -> None:
    # Given a Function URL event for a route only the streaming API serves (an OpenAI client given the wrong URL)
    event = load_event("function-url.json")
    event["rawPath"] = path
    event["requestContext"]["http"]["method"] = method
    # When the handler runs it
    response = stack.invoke(event)
    # Then it is a 404 in OpenAI's format that says where the route is, and nothing was sent upstream
    assert response["statusCode"] == 404
    error = json.loads(response["body"])["error"]
    assert error["code"] == "not_found" and "streaming API" in error["message"]
    assert stack.openai.received == []
