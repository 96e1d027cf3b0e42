"""What both entry points share: routes, the invocation a trigger's facts make, the catch-all, headers, bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lambda_chat import adapter, telemetry
from lambda_chat.adapter import Facts, find_route, headers_of, idempotency_key_in, invocation_for, json_document
from lambda_chat.calls import Invocation, Outcome
from lambda_chat.deadline import Deadline
from lambda_chat.errors import (
    BudgetExceeded,
    IdempotencyConflict,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UpstreamRateLimited,
)
from lambda_chat.faces import EMBEDDINGS, ENVELOPE, OPENAI, RESPONSES, Face
from lambda_chat.limits import LOWERED_HEADER
from lambda_chat.runners import drive
from lambda_chat.service import ChatService
from lambda_chat.settings import Settings

SETTINGS = Settings(OPENAI_API_KEY_SECRET_ID="s", DEADLINE_SAFETY_MARGIN_MS=1000, API_GATEWAY_TIMEOUT_MS=29_000)


class NoUpstream:
    """The service's upstream, for tests in which it must never be called."""

    async def complete(self, request: Any, deadline: Any) -> Any:
        raise AssertionError("the upstream was called")

    async def open(self, request: Any, deadline: Any) -> Any:
        raise AssertionError("the upstream was called")

    def warm(self) -> None:
        raise AssertionError("the upstream was warmed")


class TimeLeft:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def get_remaining_time_in_millis(self) -> int:
        return self.ms


def service() -> ChatService:
    return ChatService(SETTINGS, NoUpstream())


def facts(face: Face = OPENAI, **fields: Any) -> Facts:
    given: dict[str, Any] = {"time_left": TimeLeft(600_000), "caller": "key-1", "behind_api_gateway": False}
    return Facts("http_api", face, **{**given, **fields})


@pytest.mark.parametrize(
    ("path", "name", "face"),
    [
        ("/prod/v1/chat/completions", "chat_completions", OPENAI),
        ("/v1/chat/completions/", "chat_completions", OPENAI),
        ("/prod/v1/models", "models", OPENAI),
        ("/prod/chat", "chat", ENVELOPE),
        ("/", "chat", ENVELOPE),
        ("", "chat", ENVELOPE),
        ("/prod/v1/chat/completions/extra", "chat", ENVELOPE),
    ],
)
def test_the_handler_matches_routes_by_the_paths_end_and_anything_else_is_the_envelope(
    path: str, name: str, face: Face
) -> None:
    # Given the handler function's entry, behind API Gateway's stage and base path
    # When a path is routed
    route, params = find_route("handler", "POST", path, suffix=True)

    # Then a route whose path ends it is found, else the envelope contract's route
    assert (route.name, route.face, params) == (name, face, {})


@pytest.mark.parametrize(
    ("path", "name", "face", "params"),
    [
        ("/v1/chat/completions", "chat_completions", OPENAI, {}),
        ("/v1/responses", "responses", RESPONSES, {}),
        ("/v1/embeddings", "embeddings", EMBEDDINGS, {}),
        ("/v1/models/", "models", OPENAI, {}),
        ("/healthz", "health", OPENAI, {}),
        ("/v1/responses/resp_1", "stored_response", OPENAI, {"response_id": "resp_1"}),
        ("/v1/responses/resp_1/cancel", "stored_response", OPENAI, {"response_id": "resp_1", "tail": "cancel"}),
        ("/v1/responses/r2/input_items", "stored_response", OPENAI, {"response_id": "r2", "tail": "input_items"}),
    ],
)
def test_the_app_matches_full_paths_with_their_parameters(
    path: str, name: str, face: Face, params: dict[str, str]
) -> None:
    # Given the streaming app's entry
    # When a path is routed
    route, found = find_route("app", "GET", path)

    # Then its route is found, with the path's parameters
    assert (route.name, route.face, found) == (name, face, params)


@pytest.mark.parametrize(
    "path", ["/prod/v1/chat/completions", "/chat", "/", "/v1/responses/r1/other", "/v1/chat/completions/x"]
)
def test_the_app_has_no_envelope_route_and_no_suffix_matching(path: str) -> None:
    # Given the streaming app's entry
    # When a path no route has in full is routed, Then it is not found
    with pytest.raises(NotFound) as caught:
        find_route("app", "POST", path)
    assert caught.value.status == 404


def test_a_route_refuses_a_method_it_does_not_take_naming_those_it_does() -> None:
    # Given the stored response's route, which takes GET and DELETE
    route, _ = find_route("app", "PUT", "/v1/responses/r1")

    # When it is checked for PUT, Then it is 405 and `allow` lists its methods
    with pytest.raises(MethodNotAllowed) as caught:
        route.check("PUT", "/v1/responses/r1")
    assert (caught.value.status, caught.value.allow) == (405, "GET, DELETE")

    # And the methods it takes pass, in any case
    route.check("get", "/v1/responses/r1")
    route.check("DELETE", "/v1/responses/r1")


def test_headers_of_a_success() -> None:
    # Given a success with a note on the request, and a request id
    outcome = Outcome(200, {}, headers={LOWERED_HEADER: "from=9, to=8"})

    # When its headers are made
    headers = headers_of(outcome, "req-1")

    # Then they are JSON's, the note, and the request id; nothing about retrying or replays
    assert headers == {
        "Content-Type": "application/json",
        "Cache-Control": "no-store",
        LOWERED_HEADER: "from=9, to=8",
        "X-Request-Id": "req-1",
    }


def test_headers_of_a_rate_limit_say_when_to_retry_and_do_not_forbid_it() -> None:
    # Given OpenAI's rate limit, which may be retried later
    outcome = Outcome.failed(UpstreamRateLimited("slow down", retry_after="7"), OPENAI)

    # When its headers are made
    headers = headers_of(outcome, None)

    # Then Retry-After is passed on; no x-should-retry; no request id when none is known
    assert headers["Retry-After"] == "7"
    assert "x-should-retry" not in headers
    assert "X-Request-Id" not in headers


def test_headers_of_a_spent_budget_tell_clients_not_to_retry() -> None:
    # Given a spent budget, which will not refill before its period ends
    outcome = Outcome.failed(BudgetExceeded("spent", retry_after="3600"), OPENAI)

    # When its headers are made, Then clients are told not to retry, and when the budget refills
    headers = headers_of(outcome, None)
    assert (headers["x-should-retry"], headers["Retry-After"]) == ("false", "3600")


def test_headers_of_a_conflict_do_not_forbid_a_retry() -> None:
    # Given an idempotency conflict, which may be retried once the first call ends
    # When its headers are made, Then x-should-retry is not sent
    assert "x-should-retry" not in headers_of(Outcome.failed(IdempotencyConflict("busy"), OPENAI), None)


def test_headers_of_a_replay_and_of_a_wrong_method() -> None:
    # Given a replayed answer, and a method not allowed
    replayed = Outcome(200, {}, replayed=True)
    wrong_method = Outcome.failed(MethodNotAllowed("no", allow="GET, DELETE"), OPENAI)

    # When their headers are made, Then the replay is told, and so are the allowed methods
    assert headers_of(replayed, None)["Idempotent-Replayed"] == "true"
    assert "Allow" not in headers_of(replayed, None)
    assert headers_of(wrong_method, None)["Allow"] == "GET, DELETE"
    assert "Idempotent-Replayed" not in headers_of(wrong_method, None)


@pytest.mark.parametrize(
    ("face", "error_of"),
    [
        (OPENAI, lambda body: body["error"]["message"]),
        (ENVELOPE, lambda body: body["error"]),
    ],
)
def test_a_misconfigured_function_is_a_counted_500_in_the_faces_format(
    face: Face, error_of: Any, metered: list[telemetry.CallFigures]
) -> None:
    # Given no service (the configuration was invalid)
    # When an invocation is made for a call
    ready = invocation_for(None, facts(face))

    # Then it is a 500 outcome in the call's face, and counted as a configuration error
    assert isinstance(ready, Outcome)
    assert ready.status == 500
    assert ready.body == face.failure(ready.error)  # type: ignore[arg-type]
    assert "misconfigured" in error_of(ready.body)
    assert [(figures.trigger, figures.outcome) for figures in metered] == [("http_api", "ConfigurationError")]


def test_an_invocation_carries_the_facts() -> None:
    # Given a service and a trigger's facts
    serving = service()
    time_left = TimeLeft(600_000)

    # When the invocation is made
    ready = invocation_for(serving, facts(RESPONSES, time_left=time_left, streams=True))

    # Then it carries the trigger, face, caller, context and whether it streams, with no idempotency key yet
    assert not isinstance(ready, Outcome)
    got, call = ready
    assert got is serving
    assert (call.trigger, call.face, call.caller, call.lambda_context, call.streams) == (
        "http_api",
        RESPONSES,
        "key-1",
        time_left,
        True,
    )
    assert call.idempotency_key is None


def test_the_deadline_is_lambdas_time_less_the_margin_and_capped_behind_api_gateway() -> None:
    # Given ten minutes left in the invocation
    time_left = TimeLeft(600_000)

    # When invocations are made directly and behind API Gateway
    direct = invocation_for(service(), facts(time_left=time_left))
    gateway = invocation_for(service(), facts(time_left=time_left, behind_api_gateway=True))

    # Then the direct call has the time left less the margin; behind API Gateway, its limit less the margin
    assert not isinstance(direct, Outcome)
    assert not isinstance(gateway, Outcome)
    assert direct[1].deadline.remaining() == pytest.approx(599.0, abs=0.5)
    assert gateway[1].deadline.remaining() == pytest.approx(28.0, abs=0.5)


def test_answered_returns_the_works_result() -> None:
    # Given work that succeeds
    async def work() -> str:
        return "done"

    # When it is answered, Then its result comes back
    call = Invocation("http_api", Deadline(1000), OPENAI)
    assert drive(adapter.answered(service(), call, work)) == "done"


def test_answered_turns_a_chat_error_into_its_outcome(metered: list[telemetry.CallFigures]) -> None:
    # Given work that fails with one of our errors
    async def work() -> Outcome:
        raise InvalidRequest("temperature: too hot", "temperature")

    # When it is answered
    outcome = drive(adapter.answered(service(), Invocation("http_api", Deadline(1000), OPENAI), work))

    # Then the outcome is that error's, in the face's format, and counted
    assert isinstance(outcome, Outcome)
    assert outcome.status == 400
    assert outcome.body["error"]["param"] == "temperature"
    assert [figures.outcome for figures in metered] == ["InvalidRequest"]


def test_answered_turns_any_other_exception_into_a_500_without_its_message(
    metered: list[telemetry.CallFigures],
) -> None:
    # Given work that fails with a bug whose message quotes the prompt
    async def work() -> Outcome:
        raise KeyError("the user's secret prompt")

    # When it is answered
    outcome = drive(adapter.answered(service(), Invocation("direct", Deadline(1000), ENVELOPE), work))

    # Then it is an internal error, whose message says nothing of the exception's
    assert isinstance(outcome, Outcome)
    assert outcome.status == 500
    assert "internal error" in outcome.body["error"]
    assert "secret prompt" not in json.dumps(outcome.body)
    assert [figures.outcome for figures in metered] == ["InternalError"]


def test_json_document_reads_an_object() -> None:
    # Given a JSON body within the limit, When it is read, Then it is the document
    assert json_document(b'{"prompt": "hi"}', 100) == {"prompt": "hi"}


@pytest.mark.parametrize(
    ("raw", "error", "words"),
    [
        (b"", InvalidRequest, "required"),
        (b"x" * 101, PayloadTooLarge, "100 bytes"),
        (b"{not json", InvalidRequest, "not valid JSON"),
        (b"\xff\xfe{", InvalidRequest, "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, InvalidRequest, "nested too deeply"),
        (b"1" * 5000, InvalidRequest, "too many digits"),
    ],
    ids=["empty", "too-large", "not-json", "not-utf8", "too-deep", "long-integer"],
)
def test_json_document_refuses_what_it_cannot_read(raw: bytes, error: type[Exception], words: str) -> None:
    # Given a body that cannot be read within the limits
    limit = 100 if len(raw) <= 101 else len(raw)

    # When it is read, Then it is refused with the right error and a message that says why
    with pytest.raises(error, match=words):
        json_document(raw, limit)


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ({}, None),
        ({"Idempotency-Key": "k-1"}, "k-1"),
        ({"idempotency-key": "  k-2  "}, "k-2"),
        ({"IDEMPOTENCY-KEY": "k" * 255}, "k" * 255),
        ({b"idempotency-key": "ignored", "other": "x"}, None),
    ],
)
def test_the_idempotency_key_is_read_in_any_case_and_trimmed(headers: dict[Any, Any], key: str | None) -> None:
    # Given request headers, When the key is read, Then it is the header's value, trimmed, or None
    assert idempotency_key_in(headers) == key


@pytest.mark.parametrize("value", ["", "   ", "k" * 256, 7, ["k"]])
def test_an_idempotency_key_that_is_empty_too_long_or_not_text_is_refused(value: object) -> None:
    # Given a key that is not 1 to 255 characters of text
    # When it is read, Then it is refused
    with pytest.raises(InvalidRequest, match="Idempotency-Key"):
        idempotency_key_in({"Idempotency-Key": value})


@pytest.mark.parametrize(
    ("context", "caller"),
    [
        ({"identity": {"apiKeyId": "id-1", "apiKey": "secret"}}, "id-1"),
        ({"identity": {"apiKey": "secret"}}, None),
        ({"identity": {"apiKeyId": ""}, "authorizer": {"principalId": "digest"}}, "digest"),
        ({"identity": {"apiKeyId": "x" * 129}}, None),
        ({"identity": {"apiKeyId": "line\nbreak"}}, None),
        ({"identity": "not a dict"}, None),
        ("not a dict", None),
    ],
)
def test_the_caller_is_the_keys_id_or_the_authorizers_principal_never_the_key(context: object, caller: str) -> None:
    # Given API Gateway's request context, When the caller is read, Then it is a printable id, never the key
    assert adapter.caller_in(context) == caller


@pytest.mark.parametrize(
    ("context", "request_id"),
    [({"requestId": "r-1"}, "r-1"), ({"requestId": "r\n1"}, None), ({"requestId": 7}, None), (None, None)],
)
def test_the_request_id_is_api_gateways_when_it_is_printable_text(context: object, request_id: str | None) -> None:
    # Given a request context, When its request id is read, Then it is kept only as printable text
    assert adapter.request_id_in(context) == request_id


@pytest.mark.parametrize(
    "path", ["/prod/v1/responses", "/v1/responses/resp_1", "/v1/responses/resp_1/cancel", "/prod/v1/embeddings/"]
)
def test_the_handler_names_what_only_the_streaming_api_serves(path: str) -> None:
    # Given a route only the streaming app serves, asked of the handler function (a client given the wrong URL)
    route, _ = adapter.find_route("handler", "POST", path, suffix=True)
    # Then it is not taken for the envelope contract
    assert route.name == "streaming_only" and route.face is OPENAI
