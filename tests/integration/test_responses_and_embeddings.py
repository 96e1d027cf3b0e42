"""`/v1/responses` (whole and streamed, and a stored response's routes) and `/v1/embeddings`, with the Python SDK.

The app is the streaming function's (lambda_chat.asgi) under uvicorn on loopback; the fake upstream speaks
both APIs. Every route is a thin face over the same validation, key, deadline, error table and metering.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx2
import openai
import pytest

from lambda_chat import telemetry
from tests.support.fake_openai import Reply
from tests.support.metering import last
from tests.support.stack import API_KEY, Stack, wait_for


@pytest.fixture(autouse=True)
def ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_TOKENS_CEILING", "512")
    monkeypatch.setenv("MAX_PROMPT_CHARS", "32000")
    monkeypatch.setenv("MAX_MESSAGES", "100")


@pytest.fixture(scope="module", autouse=True)
def warm_event_types() -> None:
    """The SDK builds its stream event models on first use (about 1 s of CPU here), which would hold back the
    first events of the first stream a test times and then release them together: built before any clock starts."""
    from openai._models import construct_type
    from openai.types.responses import ResponseStreamEvent

    construct_type(type_=ResponseStreamEvent, value={"type": "response.created", "sequence_number": 0})


@pytest.fixture
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="sk-client-side-never-forwarded", max_retries=0)


def test_a_response_is_created_with_the_ceiling_as_its_limit_and_metered(
    stack: Stack, client: openai.OpenAI, metered: list[telemetry.CallFigures]
) -> None:
    # When an unmodified client creates a response, with fields the function does not check
    response = client.responses.create(
        model="gpt-4.1-mini", input="Say hi", instructions="be brief", temperature=0.3, metadata={"team": "a"}
    )
    # Then it gets the SDK's Response, parsed from the upstream's own JSON
    assert isinstance(response, openai.types.responses.Response)
    assert response.output_text == "word " * 6 + "word" and response.status == "completed"
    # And the upstream got the body as sent, the token limit set to the ceiling, and the function's key
    sent = stack.openai.received[-1]
    assert sent.path == "/v1/responses" and sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.json["max_output_tokens"] == 512 and sent.json["temperature"] == 0.3
    assert sent.json["metadata"] == {"team": "a"} and sent.json["instructions"] == "be brief"
    # And the call was metered from the response's usage (input and output tokens)
    assert response.usage is not None
    call = last(metered)
    assert (call.outcome, call.model, call.completion_tokens) == ("success", "gpt-4.1-mini", 7)
    assert call.prompt_tokens == response.usage.input_tokens and call.cost_usd


def test_a_response_is_streamed_as_typed_events_as_they_arrive(
    stack: Stack, client: openai.OpenAI, metered: list[telemetry.CallFigures]
) -> None:
    # Given an upstream that streams three words 150 ms apart
    stack.openai.script(Reply.stream([" one", " two", " three"], interval=0.15))
    # When the SDK's stream helper reads it
    started, deltas = time.monotonic(), []
    with client.responses.stream(model="gpt-4o-mini", input="count") as stream:
        kinds = []
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(time.monotonic() - started)
        final = stream.get_final_response()
    # Then the events came in order, the deltas one by one, and the final response is whole
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert len(deltas) == 3 and deltas[2] - deltas[0] > 0.2
    assert final.output_text == " one two three"
    # And the call was metered from the response.completed event
    wait_for(lambda: bool(metered))
    assert (last(metered).outcome, last(metered).completion_tokens) == ("success", 3)


def test_create_with_stream_true_works_too_and_a_disconnect_stops_the_upstream(
    stack: Stack, client: openai.OpenAI, metered: list[telemetry.CallFigures]
) -> None:
    stack.openai.script(Reply.stream([f" w{i}" for i in range(100)], interval=0.05))
    stream = client.responses.create(model="gpt-4o-mini", input="go on", stream=True)
    for event in stream:
        if event.type == "response.output_text.delta":
            break
    stream.close()
    wait_for(lambda: bool(stack.openai.streams_abandoned))
    assert stack.openai.streams_abandoned[0] < 40
    wait_for(lambda: bool(metered))
    assert last(metered).outcome == "ClientDisconnected"


def test_a_failure_mid_stream_is_one_error_event(stack: Stack, base_url: str) -> None:
    stack.openai.script(Reply.stream([" a", " b"], break_after=5))
    with httpx2.stream("POST", f"{base_url}/responses", json={"input": "x", "stream": True}, timeout=30) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.status_code == 200
    assert lines[-2:] == [
        "event: error",
        'data: {"type":"error","code":"upstream_malformed","message":"the stream from OpenAI ended before its '
        'answer was complete","param":null}',
    ]


def test_a_stored_response_can_be_retrieved_and_deleted_through_the_function(
    stack: Stack, client: openai.OpenAI
) -> None:
    # Given a stored response, and a follow-up that chains to it
    first = client.responses.create(model="gpt-4o-mini", input="remember 7")
    follow_up = client.responses.create(model="gpt-4o-mini", input="what number?", previous_response_id=first.id)
    assert stack.openai.received[-1].json["previous_response_id"] == first.id and follow_up.id != first.id
    # When it is retrieved, its input items listed, cancelled and deleted
    retrieved = client.responses.retrieve(first.id)
    items = client.responses.input_items.list(first.id)
    cancelled = client.responses.cancel(first.id)
    client.responses.delete(first.id)
    # Then each call was relayed with the function's key, and a deleted response is gone (404, OpenAI's error)
    assert retrieved.id == first.id and items.data == [] and cancelled.status == "cancelled"
    assert [(r.method, r.path) for r in stack.openai.received[2:]] == [
        ("GET", f"/v1/responses/{first.id}"),
        ("GET", f"/v1/responses/{first.id}/input_items"),
        ("POST", f"/v1/responses/{first.id}/cancel"),
        ("DELETE", f"/v1/responses/{first.id}"),
    ]
    assert all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in stack.openai.received)
    with pytest.raises(openai.BadRequestError, match="No response found"):
        client.responses.retrieve(first.id)


def test_a_response_id_that_is_not_an_id_is_refused_before_it_reaches_the_upstream_path(
    stack: Stack, base_url: str
) -> None:
    # An id with characters no response id has is refused, naming it; one that would add path segments is no route
    refused = httpx2.get(f"{base_url}/responses/resp.%2E%2E", timeout=10)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "response_id"
    assert httpx2.get(f"{base_url}/responses/..%2F..%2Fsecrets", timeout=10).status_code == 404
    assert stack.openai.received == []


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"model": "gpt-4o"}, "model"),
        ({"max_output_tokens": 513}, "max_output_tokens"),  # with MAX_TOKENS_OVER_CEILING=refuse
        ({"input": "x" * 40_000}, "input"),
        ({"input": [{"role": "user", "content": "x" * 40_000}]}, "input"),
        ({"input": [{"role": "user", "content": "hi"}] * 101}, "input"),
        ({"stream": "yes"}, "stream"),
    ],
)
def test_responses_limits_are_refused_with_the_param(
    stack: Stack, client: openai.OpenAI, fields: dict[str, Any], param: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_TOKENS_OVER_CEILING", "refuse")  # read by the first request's container
    body: dict[str, Any] = {"model": "gpt-4o-mini", "input": "hi", **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/responses", body=body, cast_to=object)
    assert caught.value.status_code == 400 and caught.value.param == param
    assert stack.openai.received == []


def test_embeddings_are_created_and_metered(
    stack: Stack, client: openai.OpenAI, metered: list[telemetry.CallFigures]
) -> None:
    # When the SDK asks for the embeddings of two texts, naming no model
    result = client.embeddings.create(input=["one two", "three"], model="text-embedding-3-small")
    # Then it gets them, and the call was metered (prompt tokens, priced as an embedding model)
    assert [item.index for item in result.data] == [0, 1] and len(result.data[0].embedding) == 3
    sent = stack.openai.received[-1]
    assert sent.path == "/v1/embeddings" and sent.json["input"] == ["one two", "three"]
    call = last(metered)
    assert (call.model, call.prompt_tokens, call.completion_tokens) == ("text-embedding-3-small", 3, 0)
    assert call.cost_usd == pytest.approx(3 * 0.02 / 1_000_000)


@pytest.mark.parametrize(
    ("fields", "param", "env"),
    [
        ({"model": "gpt-4o-mini"}, "model", {}),
        ({"input": ["a"] * 5}, "input", {"MAX_EMBEDDING_INPUTS": "4"}),
        ({"input": "x" * 101}, "input", {"MAX_EMBEDDING_INPUT_CHARS": "100"}),
        ({"input": [[1] * 101]}, "input", {"MAX_EMBEDDING_INPUT_CHARS": "100"}),
        ({"input": []}, "input", {}),
        ({"input": {"not": "text"}}, "input", {}),
    ],
)
def test_embeddings_limits_are_refused_with_the_param(
    stack: Stack,
    client: openai.OpenAI,
    monkeypatch: pytest.MonkeyPatch,
    fields: dict[str, Any],
    param: str,
    env: dict[str, str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    body: dict[str, Any] = {"model": "text-embedding-3-small", "input": "hi", **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/embeddings", body=body, cast_to=object)
    assert caught.value.status_code == 400 and caught.value.param == param
    assert stack.openai.received == []


def test_an_upstream_failure_on_any_route_gets_the_status_table(stack: Stack, client: openai.OpenAI) -> None:
    stack.openai.script(Reply.error(429, "slow down", headers={"Retry-After": "30"}), *[Reply.error(500, "boom")] * 3)
    with pytest.raises(openai.RateLimitError) as limited:
        client.embeddings.create(input="x", model="text-embedding-3-small")
    assert limited.value.response.headers["retry-after"] == "30"
    with pytest.raises(openai.InternalServerError) as failed:
        client.responses.create(model="gpt-4o-mini", input="x")
    assert failed.value.status_code == 502


def test_models_say_which_route_each_model_serves(client: openai.OpenAI) -> None:
    listed = {model.id: model.model_extra["routes"] for model in client.models.list()}  # type: ignore[index]
    assert listed == {
        "gpt-4o-mini": ["chat.completions", "responses"],
        "gpt-4.1-mini": ["chat.completions", "responses"],
        "text-embedding-3-small": ["embeddings"],
    }


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/responses", {"input": "hi"}),
        ("/embeddings", {"input": "hi", "model": "text-embedding-3-small"}),
    ],
)
def test_whole_answers_on_every_route_are_idempotent_and_keys_are_kept_apart_per_route(
    stack: Stack, base_url: str, monkeypatch: pytest.MonkeyPatch, path: str, body: dict[str, Any]
) -> None:
    # Given an idempotency table, and a whole answer asked for with an Idempotency-Key
    table = f"lambda-chat-idempotency-{uuid.uuid4().hex[:8]}"
    stack.moto.create_idempotency_table(table)
    monkeypatch.setenv("IDEMPOTENCY_TABLE", table)
    first = httpx2.post(f"{base_url}{path}", json=body, headers={"Idempotency-Key": "k-1"}, timeout=30)
    # When it is retried with the same key
    again = httpx2.post(f"{base_url}{path}", json=body, headers={"Idempotency-Key": "k-1"}, timeout=30)
    # Then the stored answer is replayed without a second upstream call
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert len(stack.openai.received) == 1
    # And the same key on another route is another call
    other = "/embeddings" if path != "/embeddings" else "/responses"
    other_body = {"input": "hi", "model": "text-embedding-3-small"} if other == "/embeddings" else {"input": "hi"}
    assert httpx2.post(f"{base_url}{other}", json=other_body, headers={"Idempotency-Key": "k-1"}, timeout=30).is_success
    assert len(stack.openai.received) == 2
