"""Trigger detection, body decoding, response shapes, and the handler's last line of defence."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from lambda_chat import handler
from lambda_chat.calls import Outcome
from lambda_chat.errors import InvalidRequest, PayloadTooLarge, UpstreamRateLimited
from lambda_chat.models import failure_envelope
from lambda_chat.triggers import identify, json_body
from local.context import FakeLambdaContext
from tests.support.events import load_event


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("apigateway-rest.json", "api_gateway_rest"),
        ("apigateway-http-api.json", "http_api"),
        ("function-url.json", "http_api"),
        ("eventbridge.json", "eventbridge"),
        ("direct.json", "direct"),
    ],
)
def test_each_sample_is_recognised(name: str, kind: str) -> None:
    assert identify(load_event(name)).kind == kind


def test_a_direct_request_with_a_body_field_is_still_direct() -> None:
    assert identify({"prompt": "hi", "body": "x"}).kind == "direct"
    assert identify(["not", "an", "object"]).kind == "direct"


def test_http_requests_are_read_from_the_body_and_others_from_the_event() -> None:
    rest = identify(load_event("apigateway-rest.json"))
    assert rest.request_data(10_000)["prompt"].startswith("Write a haiku")  # type: ignore[index]
    assert identify(load_event("eventbridge.json")).request_data(10)["max_tokens"] == 40  # type: ignore[index]
    assert identify({"prompt": "hi"}).request_data(1) == {"prompt": "hi"}


def test_the_correlation_id_is_api_gateways_request_id() -> None:
    assert identify(load_event("apigateway-http-api.json")).request_id == "JKJaXmPLvHcESHA="
    assert identify({"prompt": "hi", "requestContext": {"requestId": "x"}}).request_id is None


def test_http_answers_wrap_the_envelope() -> None:
    outcome = Outcome.failed(UpstreamRateLimited("slow", retry_after="12"))
    response = identify(load_event("apigateway-http-api.json")).respond(outcome)
    assert response["statusCode"] == 429
    assert response["headers"] == {
        "Content-Type": "application/json",
        "Cache-Control": "no-store",
        "X-Request-Id": "JKJaXmPLvHcESHA=",
        "Retry-After": "12",
    }
    assert json.loads(response["body"])["error"] == "slow"


@pytest.mark.parametrize(
    ("body", "is_base64", "message"),
    [
        (None, False, "required"),
        ("", False, "required"),
        (123, False, "must be a string"),
        ("{", False, "not valid JSON"),
        ('{"prompt": "hi"}', True, "not valid base64"),
        (base64.b64encode(b"\xff\xfe\xfa").decode(), True, "not valid JSON"),
        ("\ud800", False, "UTF-8"),
        ("[" * 100_000 + "]" * 100_000, False, "nested too deeply"),
    ],
)
def test_bad_bodies_are_400(body: Any, is_base64: bool, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        json_body(body, is_base64, 1_000_000)


@pytest.mark.parametrize("is_base64", [False, True])
def test_the_size_cap_counts_decoded_bytes(is_base64: bool) -> None:
    text = json.dumps({"prompt": "é" * 60}, ensure_ascii=False)  # 120 bytes of UTF-8 in 60 characters
    body = base64.b64encode(text.encode()).decode() if is_base64 else text
    assert json_body(body, is_base64, 200) == {"prompt": "é" * 60}
    with pytest.raises(PayloadTooLarge):
        json_body(body, is_base64, 100)


def test_a_huge_body_is_refused_before_decoding() -> None:
    with pytest.raises(PayloadTooLarge):
        json_body("A" * 10_000_000, True, 1000)


def test_a_misconfigured_function_still_answers_with_an_envelope(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given no secret id configured
    monkeypatch.delenv("OPENAI_API_KEY_SECRET_ID")
    # When a request arrives
    result = handler.lambda_handler({"prompt": "hi"}, FakeLambdaContext())  # type: ignore[arg-type]
    # Then it is a 500 envelope, not a crash
    assert result == failure_envelope("the function is misconfigured; see its logs")


def test_an_unexpected_exception_becomes_a_500_envelope(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a bug deep inside the service
    def explode(self: Any, data: object, deadline: object) -> None:
        raise KeyError("canary-prompt-text")

    monkeypatch.setattr(handler.ChatService, "chat", explode)
    # When an API Gateway request arrives
    response = handler.lambda_handler(load_event("apigateway-http-api.json"), FakeLambdaContext())  # type: ignore[arg-type]
    # Then the caller gets a 500 envelope that reveals nothing
    assert response["statusCode"] == 500
    assert json.loads(response["body"]) == failure_envelope("internal error; the request was not completed")


@pytest.mark.parametrize(
    "event",
    [
        {"body": "null", "detail": None, "source": None, "requestContext": None, "detail-type": None},
        {"httpMethod": None, "requestContext": None, "body": "{}"},
    ],
)
def test_events_with_nulls_where_objects_belong_get_a_400_envelope(event: dict[str, Any]) -> None:
    # Given an event shaped like a trigger's but with nulls (found by the fuzz tests)
    # When the handler runs it, Then the answer is a refusal, not a 500 (and nothing is raised for retries)
    result = handler.lambda_handler(event, FakeLambdaContext())  # type: ignore[arg-type]
    assert result["success"] is False and "internal error" not in result["error"]


def test_who_pays_is_the_api_keys_id_never_the_key() -> None:
    # Given a REST event from API Gateway, which carries both the caller's key and its id
    event = load_event("apigateway-rest.json")
    assert event["requestContext"]["identity"]["apiKey"]
    event["requestContext"]["identity"]["apiKeyId"] = "a1b2c3d4e5"
    # Then the caller is the key's id
    assert identify(event).caller() == "a1b2c3d4e5"
    # And without an id, the authorizer's principal (a digest of the key), then the trigger's kind
    del event["requestContext"]["identity"]["apiKeyId"]
    event["requestContext"]["authorizer"] = {"principalId": "key-0123456789abcdef"}
    assert identify(event).caller() == "key-0123456789abcdef"
    del event["requestContext"]["authorizer"]
    assert identify(event).caller() == "api_gateway_rest"


@pytest.mark.parametrize(("name", "configured", "caller"), [
    ("direct.json", None, "direct"),
    ("eventbridge.json", None, "eventbridge"),
    ("eventbridge.json", "nightly-batch", "nightly-batch"),
    ("function-url.json", "nightly-batch", "http_api"),  # HTTP triggers are attributed by their key, or their kind
])  # fmt: skip
def test_events_and_direct_invokes_are_attributed_to_a_configured_name_or_their_kind(
    name: str, configured: str | None, caller: str
) -> None:
    assert identify(load_event(name)).caller(configured) == caller
