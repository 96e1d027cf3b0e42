"""Idempotency against DynamoDB served by moto_server: a retried request never pays OpenAI twice."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from tests.support.events import load_event
from tests.support.fake_openai import Reply, natural_completion
from tests.support.stack import Stack, wait_for


def http_request(body: dict[str, Any], key: str | None) -> dict[str, Any]:
    event = load_event("apigateway-rest.json")
    event["isBase64Encoded"] = False
    event["body"] = json.dumps(body)
    if key is not None:
        event["headers"]["Idempotency-Key"] = key
    return event


def test_a_repeated_key_gets_the_stored_envelope_without_calling_openai(idempotent: Stack) -> None:
    # Given a request that succeeded with an Idempotency-Key
    first = idempotent.invoke(http_request({"prompt": "hi"}, "order-42"))
    # When the client retries it (with the header in another case, as proxies do)
    event = http_request({"prompt": "hi"}, None)
    event["headers"]["idempotency-KEY"] = "order-42"
    second = idempotent.invoke(event)
    # Then it gets the same envelope, marked as replayed, and OpenAI was called once
    assert first["statusCode"] == second["statusCode"] == 200
    assert json.loads(first["body"]) == json.loads(second["body"])
    assert "Idempotent-Replayed" not in first["headers"]
    assert second["headers"]["Idempotent-Replayed"] == "true"
    assert len(idempotent.openai.received) == 1


def test_different_keys_and_no_key_are_separate_calls(idempotent: Stack) -> None:
    for key in ("a", "b", None, None):
        assert idempotent.invoke(http_request({"prompt": "hi"}, key))["statusCode"] == 200
    assert len(idempotent.openai.received) == 4


def test_an_eventbridge_retry_with_the_same_event_id_is_served_once(idempotent: Stack) -> None:
    event = load_event("eventbridge.json")
    first, second = idempotent.invoke(event), idempotent.invoke(event)
    assert first == second and first["success"] is True
    assert len(idempotent.openai.received) == 1


def test_failures_are_not_stored(idempotent: Stack) -> None:
    # Given OpenAI failing for the first attempt
    idempotent.openai.script(*[Reply.error(500, "boom")] * 3)
    assert idempotent.invoke(http_request({"prompt": "hi"}, "k-1"))["statusCode"] == 502
    # When the client retries with the same key
    retry = idempotent.invoke(http_request({"prompt": "hi"}, "k-1"))
    # Then the request is really made again, and succeeds
    assert retry["statusCode"] == 200 and "Idempotent-Replayed" not in retry["headers"]
    assert len(idempotent.openai.received) == 4


def test_a_request_still_in_flight_gets_409(idempotent: Stack) -> None:
    # Given a first request whose OpenAI call takes a while
    idempotent.openai.script(Reply(seconds=1.5, body=natural_completion({"max_tokens": 5})))
    results: list[dict[str, Any]] = []
    first = threading.Thread(target=lambda: results.append(idempotent.invoke(http_request({"prompt": "hi"}, "slow"))))
    first.start()
    # (it is in flight once OpenAI has it: its in-progress record is saved before the call; a fixed sleep raced a
    # slow first start on a loaded 2-core machine, and the retry then went first)
    wait_for(lambda: len(idempotent.openai.received) == 1, seconds=10)
    # When the client retries it before the first has finished
    second = idempotent.invoke(http_request({"prompt": "hi"}, "slow"))
    first.join()
    # Then the retry is told to wait (409), and the first still succeeds
    assert second["statusCode"] == 409
    assert "still in progress" in json.loads(second["body"])["error"]
    assert results[0]["statusCode"] == 200
    assert len(idempotent.openai.received) == 1


def test_the_same_key_with_a_different_request_is_refused(idempotent: Stack) -> None:
    assert idempotent.invoke(http_request({"prompt": "hi"}, "k-2"))["statusCode"] == 200
    reused = idempotent.invoke(http_request({"prompt": "something else"}, "k-2"))
    assert reused["statusCode"] == 422
    assert "different request" in json.loads(reused["body"])["error"]
    assert len(idempotent.openai.received) == 1


def test_an_invalid_request_is_refused_before_any_record_is_made(idempotent: Stack) -> None:
    assert idempotent.invoke(http_request({"prompt": ""}, "k-3"))["statusCode"] == 400
    assert idempotent.invoke(http_request({"prompt": "hi"}, "k-3"))["statusCode"] == 200


def test_an_oversized_key_is_400(idempotent: Stack) -> None:
    response = idempotent.invoke(http_request({"prompt": "hi"}, "k" * 300))
    assert response["statusCode"] == 400
    assert "Idempotency-Key" in json.loads(response["body"])["error"]


def test_an_unreachable_table_is_503_and_openai_is_not_called(
    idempotent: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    response = idempotent.invoke(http_request({"prompt": "hi"}, "k-4"))
    assert response["statusCode"] == 503
    assert idempotent.openai.received == []
