"""The service, with its slow edges faked: the upstream, the budgets and the idempotency guard (no network)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from lambda_chat import telemetry
from lambda_chat.answers import Answer, Report, read_answer
from lambda_chat.calls import Invocation, Outcome
from lambda_chat.deadline import Deadline, LambdaContextLike
from lambda_chat.errors import InvalidRequest, UpstreamRateLimited
from lambda_chat.faces import ENVELOPE, OPENAI
from lambda_chat.models import UpstreamRequest
from lambda_chat.pricing import Price, PriceTable
from lambda_chat.runners import THREADS, drive
from lambda_chat.service import ChatService
from lambda_chat.settings import Settings
from lambda_chat.stream import ChatStream

MODEL = "gpt-4o-mini"
SETTINGS = Settings(OPENAI_API_KEY_SECRET_ID="s", DEFAULT_MODEL=MODEL, ALLOWED_MODELS=f"{MODEL},gpt-4.1")
# USD per million tokens: input, cached input, output.
PRICES = PriceTable({MODEL: Price(2.0, 1.0, 4.0)})
USAGE = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
COST = (100 * 2.0 + 50 * 4.0) / 1_000_000
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
    "usage": USAGE,
}
USER = {"role": "user", "content": "hi"}


class FakeStream:
    def __init__(self, chunks: list[dict[str, Any]]) -> None:
        self.chunks, self.closed = chunks, 0

    async def __aiter__(self) -> AsyncIterator[object]:
        for chunk in self.chunks:
            yield chunk

    async def close(self) -> None:
        self.closed += 1


@dataclass
class FakeUpstream:
    log: list[Any]
    answer: Answer | None = None
    failure: Exception | None = None
    stream: FakeStream | None = None
    warmed: int = 0

    async def complete(self, request: UpstreamRequest, deadline: Deadline) -> Answer:
        self.log.append(("complete", request))
        if self.failure is not None:
            raise self.failure
        assert self.answer is not None
        return self.answer

    async def open(self, request: UpstreamRequest, deadline: Deadline) -> FakeStream:
        self.log.append(("open", request))
        assert self.stream is not None
        return self.stream

    def warm(self) -> None:
        self.warmed += 1

    @property
    def calls(self) -> list[Any]:
        return [entry for entry in self.log if entry[0] in ("complete", "open")]


@dataclass
class FakeStore:
    warmed: int = 0

    def warm(self) -> None:
        self.warmed += 1


@dataclass
class FakeBudgets:
    log: list[Any]
    store: FakeStore = field(default_factory=FakeStore)
    hold: object = field(default_factory=object)

    def reserve(self, caller: str, request: UpstreamRequest, seconds: float) -> object:
        self.log.append(("reserve", caller, request.model, seconds))
        return self.hold

    def settle(self, hold: object, spent: Any) -> None:
        self.log.append(("settle", hold, spent))

    def release(self, hold: object, failure: BaseException) -> None:
        self.log.append(("release", hold, failure))

    def entries(self, kind: str) -> list[Any]:
        return [entry for entry in self.log if entry[0] == kind]


@dataclass
class FakeGuard:
    """Replays `stored` when given, else runs the work once."""

    stored: dict[str, Any] | None = None
    runs: list[tuple[tuple[str, str], str, object]] = field(default_factory=list)

    def run(
        self,
        scope: tuple[str, str],
        key: str,
        request: object,
        work: Callable[[], dict[str, Any]],
        context: LambdaContextLike | None,
    ) -> tuple[dict[str, Any], bool]:
        self.runs.append((scope, key, request))
        if self.stored is not None:
            return self.stored, True
        return work(), False


@dataclass
class World:
    log: list[Any] = field(default_factory=list)
    upstream: FakeUpstream = field(init=False)
    budgets: FakeBudgets = field(init=False)

    def __post_init__(self) -> None:
        self.upstream = FakeUpstream(self.log, answer=read_answer("chat", json.dumps(COMPLETION).encode()))
        self.budgets = FakeBudgets(self.log)

    def service(self, guard: FakeGuard | None = None, *, budgets: bool = True, **options: Any) -> ChatService:
        return ChatService(
            options.pop("settings", SETTINGS),
            self.upstream,
            prices=PRICES,
            budgets=self.budgets if budgets else None,  # type: ignore[arg-type]
            guard_factory=(lambda: guard) if guard is not None else None,  # type: ignore[arg-type,return-value]
            **options,
        )


def invocation(**fields: Any) -> Invocation:
    return Invocation(**{"trigger": "direct", "deadline": Deadline(30_000), **fields})


def outcome_of(result: Outcome | ChatStream) -> Outcome:
    assert isinstance(result, Outcome), result
    return result


def test_a_whole_answer_in_the_envelope_face() -> None:
    # Given an upstream that answers
    world = World()

    # When a prompt arrives through the envelope face
    outcome = outcome_of(drive(world.service().chat({"prompt": "hi"}, invocation(face=ENVELOPE))))

    # Then the envelope carries the answer's text, usage and finish reason
    assert outcome.status == 200
    assert outcome.body == {
        "success": True,
        "completion": "Hello!",
        "usage": USAGE,
        "finish_reason": "stop",
        "error": None,
    }
    [(_, sent)] = world.upstream.calls
    assert sent.messages == [{"role": "user", "content": "hi"}]


def test_a_whole_answer_in_the_openai_face_is_the_upstreams_json() -> None:
    # Given an upstream that answers
    world = World()

    # When a chat completion body arrives through the OpenAI face
    body = {"model": "gpt-4.1", "messages": [USER], "seed": 7}
    outcome = outcome_of(drive(world.service().chat(body, invocation(face=OPENAI))))

    # Then the answer is OpenAI's document as it came, and the call asked for the caller's model and parameters
    assert (outcome.status, outcome.body, outcome.replayed) == (200, COMPLETION, False)
    [(_, sent)] = world.upstream.calls
    assert (sent.model, sent.extra) == ("gpt-4.1", {"seed": 7})


@pytest.mark.parametrize(
    ("face", "body", "param"),
    [
        (ENVELOPE, {"prompt": "hi", "temperature": 5}, "temperature"),
        (OPENAI, {"messages": [USER], "model": "not-allowed"}, "model"),
        (OPENAI, {"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ],
)
def test_a_validation_failure_is_a_400_naming_the_field_without_a_call_or_a_hold(
    face: Any, body: dict[str, Any], param: str, metered: list[telemetry.CallFigures]
) -> None:
    # Given budgets and an upstream
    world = World()

    # When a request that breaks a rule arrives
    outcome = outcome_of(drive(world.service().chat(body, invocation(face=face))))

    # Then it is refused with 400, naming the field; nothing was held, OpenAI was not called, and it was counted once
    assert outcome.status == 400
    assert isinstance(outcome.error, InvalidRequest)
    assert outcome.error.param == param
    assert param.split(".")[0] in json.dumps(outcome.body)
    assert world.log == []
    assert [figures.outcome for figures in metered] == ["InvalidRequest"]


def test_the_hold_is_reserved_before_the_call_and_settled_once_with_the_answers_cost() -> None:
    # Given budgets, a price table and an upstream that answers with usage
    world = World()

    # When a caller's request is served
    outcome = outcome_of(drive(world.service().chat({"prompt": "hi"}, invocation(caller="key-1"))))

    # Then the estimate was held for that caller before the call, and settled once, after it, with its cost
    assert outcome.status == 200
    assert [entry[0] for entry in world.log] == ["reserve", "complete", "settle"]
    _, caller, model, seconds = world.budgets.entries("reserve")[0]
    assert (caller, model) == ("key-1", MODEL)
    assert 0 < seconds <= 30
    [(_, hold, spent)] = world.budgets.entries("settle")
    assert hold is world.budgets.hold
    assert float(spent.usd) == pytest.approx(COST)
    assert spent.tokens == USAGE["total_tokens"]
    assert world.budgets.entries("release") == []


def test_a_call_without_a_caller_is_held_on_the_triggers_account() -> None:
    # Given an invocation that names no caller
    world = World()

    # When it is served
    drive(world.service().chat({"prompt": "hi"}, invocation(trigger="eventbridge")))

    # Then the trigger's kind pays
    assert world.budgets.entries("reserve")[0][1] == "eventbridge"


def test_an_answer_without_usage_settles_the_estimate() -> None:
    # Given an upstream whose answer reports no usage
    world = World()
    world.upstream.answer = Answer("chat", COMPLETION, Report(finish_reason="stop"))

    # When it is served
    drive(world.service().chat({"prompt": "hi"}, invocation()))

    # Then the hold is settled once with no charge of its own (the budgets settle the estimate)
    assert [entry[2] for entry in world.budgets.entries("settle")] == [None]


def test_an_upstream_failure_releases_the_hold_once_and_answers_with_its_status(
    metered: list[telemetry.CallFigures],
) -> None:
    # Given an upstream that is rate limited
    world = World()
    failure = UpstreamRateLimited("OpenAI rate limit reached", retry_after="3")
    world.upstream.failure = failure

    # When a request is served
    outcome = outcome_of(drive(world.service().chat({"messages": [USER]}, invocation(face=OPENAI))))

    # Then the hold is released once, told what failed; nothing settled; the caller gets the error's status
    assert [entry[0] for entry in world.log] == ["reserve", "complete", "release"]
    [(_, hold, passed)] = world.budgets.entries("release")
    assert (hold, passed) == (world.budgets.hold, failure)
    assert (outcome.status, outcome.error, outcome.retry_after) == (429, failure, "3")
    assert outcome.body["error"]["type"] == "rate_limit_error"
    assert [(figures.outcome, figures.model) for figures in metered] == [("UpstreamRateLimited", MODEL)]


def test_a_bug_in_the_upstream_call_releases_the_hold_and_propagates() -> None:
    # Given an upstream that fails with something that is not one of our errors
    world = World()
    world.upstream.failure = RuntimeError("a bug")

    # When a request is served, Then the bug propagates (the entry point's catch-all answers it)
    with pytest.raises(RuntimeError, match="a bug"):
        drive(world.service().chat({"prompt": "hi"}, invocation()))

    # And the hold was released once, with the bug as the failure
    assert [entry[0] for entry in world.log] == ["reserve", "complete", "release"]
    assert world.budgets.entries("release")[0][2] is world.upstream.failure


def test_a_relay_holds_nothing_and_passes_the_stored_responses_route() -> None:
    # Given budgets, and an upstream that answers a stored response's route
    world = World()
    stored = {"id": "resp_1", "object": "response", "status": "completed"}
    world.upstream.answer = Answer("relay", stored, Report())

    # When the route is relayed
    query = (("include[]", "x"),)
    outcome = drive(world.service().relay("GET", "/responses/resp_1", invocation(face=OPENAI), query))

    # Then nothing was held or settled, and the upstream was asked for that path, method and query
    assert (outcome.status, outcome.body) == (200, stored)
    assert world.budgets.entries("reserve") == world.budgets.entries("settle") == []
    [(_, sent)] = world.upstream.calls
    assert (sent.kind, sent.method, sent.path, sent.query) == ("relay", "GET", "/responses/resp_1", query)


def test_a_failed_relay_is_answered_with_the_errors_status() -> None:
    # Given an upstream that fails
    world = World()
    world.upstream.failure = UpstreamRateLimited("slow down")

    # When a stored response's route is relayed
    outcome = drive(world.service().relay("DELETE", "/responses/resp_1", invocation(face=OPENAI)))

    # Then the failure is the answer, and nothing was held or released
    assert outcome.status == 429
    assert [entry[0] for entry in world.log] == ["complete"]


def test_stream_true_is_refused_where_the_entry_point_does_not_stream() -> None:
    # Given the handler function's invocation, which cannot stream
    world = World()

    # When a streamed answer is asked for
    body = {"messages": [USER], "stream": True}
    outcome = outcome_of(drive(world.service().chat(body, invocation(face=OPENAI, streams=False))))

    # Then it is refused naming `stream`, before anything is held or opened
    assert outcome.status == 400
    assert outcome.error is not None
    assert outcome.error.param == "stream"
    assert world.log == []


def test_stream_true_is_refused_with_an_idempotency_key() -> None:
    # Given the streaming app's invocation, carrying an idempotency key
    world = World()
    guard = FakeGuard()
    call = invocation(face=OPENAI, streams=True, idempotency_key="k-1")

    # When a streamed answer is asked for
    result = asyncio.run(world.service(guard, runner=THREADS).chat({"messages": [USER], "stream": True}, call))

    # Then it is refused (a stream cannot be replayed), before anything is held, opened or guarded
    outcome = outcome_of(result)
    assert outcome.status == 400
    assert "Idempotency-Key" in outcome.body["error"]["message"]
    assert world.log == []
    assert guard.runs == []


def test_a_stream_is_held_before_it_opens_and_settled_once_when_it_ends() -> None:
    # Given the streaming app, and an upstream that streams an answer with usage
    world = World()
    world.upstream.stream = FakeStream(
        [
            {"model": MODEL, "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
            {"model": MODEL, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"model": MODEL, "choices": [], "usage": USAGE},
        ]
    )
    service = world.service(runner=THREADS)

    async def served() -> list[bytes]:
        stream = await service.chat({"messages": [USER], "stream": True}, invocation(face=OPENAI, streams=True))
        assert isinstance(stream, ChatStream)
        assert [entry[0] for entry in world.log] == ["reserve", "open"]
        async with stream:
            return [frame async for frame in stream.frames()]

    # When it is served to its end
    frames = asyncio.run(served())

    # Then the frames end with [DONE], the upstream was closed, and the hold was settled once with the cost
    assert frames[-1] == OPENAI.DONE
    assert world.upstream.stream.closed >= 1
    assert [entry[0] for entry in world.log] == ["reserve", "open", "settle"]
    spent = world.budgets.entries("settle")[0][2]
    assert float(spent.usd) == pytest.approx(COST)
    assert spent.tokens == USAGE["total_tokens"]


def test_a_stream_that_fails_to_open_releases_its_hold_and_is_answered_with_the_errors_status() -> None:
    # Given the streaming app, and an upstream that refuses to open the stream
    world = World()
    failure = UpstreamRateLimited("OpenAI rate limit reached")

    async def refused(request: UpstreamRequest, deadline: Deadline) -> FakeStream:
        world.log.append(("open", request))
        raise failure

    world.upstream.open = refused  # type: ignore[method-assign]

    # When a streamed answer is asked for
    call = invocation(face=OPENAI, streams=True)
    result = asyncio.run(world.service(runner=THREADS).chat({"messages": [USER], "stream": True}, call))

    # Then the caller gets the error's status before any stream began, and the hold was released once with it
    assert outcome_of(result).status == 429
    assert [entry[0] for entry in world.log] == ["reserve", "open", "release"]
    assert world.budgets.entries("release")[0][2] is failure


def test_an_idempotent_request_runs_once_through_the_guard_scoped_by_caller_and_face() -> None:
    # Given an idempotency guard that has not seen the key
    world = World()
    guard = FakeGuard()
    built: list[FakeGuard] = []

    def factory() -> FakeGuard:
        built.append(guard)
        return guard

    service = ChatService(SETTINGS, world.upstream, prices=PRICES, guard_factory=factory)  # type: ignore[arg-type]
    body = {"prompt": "hi"}

    # When two keyed requests are served
    for key in ("k-1", "k-2"):
        outcome = outcome_of(drive(service.chat(body, invocation(caller="key-1", idempotency_key=key))))

    # Then each ran through the guard (built once), scoped by trigger, caller and face, and called the upstream
    assert (outcome.status, outcome.replayed) == (200, False)
    assert outcome.body["completion"] == "Hello!"
    assert len(built) == 1
    assert guard.runs == [(("direct:key-1", "envelope"), "k-1", body), (("direct:key-1", "envelope"), "k-2", body)]
    assert len(world.upstream.calls) == 2


def test_an_idempotent_request_in_the_streaming_app_calls_back_into_the_loop_from_the_guards_thread() -> None:
    # Given the streaming app's runner, and a guard that has not seen the key (it blocks, in a worker thread)
    world = World()
    guard = FakeGuard()
    call = invocation(face=OPENAI, streams=True, idempotency_key="k-1", caller="key-1")

    # When a keyed whole answer is served on the event loop
    result = asyncio.run(world.service(guard, runner=THREADS).chat({"messages": [USER]}, call))

    # Then the guard ran the call once, which held, called the upstream and settled, and the answer is OpenAI's
    outcome = outcome_of(result)
    assert (outcome.status, outcome.body, outcome.replayed) == (200, COMPLETION, False)
    assert [run[:2] for run in guard.runs] == [(("direct:key-1", "openai"), "k-1")]
    assert [entry[0] for entry in world.log] == ["reserve", "complete", "settle"]


def test_an_idempotent_repeat_is_replayed_without_a_call_and_logged_once(
    metered: list[telemetry.CallFigures],
) -> None:
    # Given a guard that holds the key's stored answer
    world = World()
    stored = {"success": True, "completion": "stored", "usage": USAGE, "finish_reason": "stop", "error": None}
    service = world.service(FakeGuard(stored=stored))

    # When the key's request is repeated
    outcome = outcome_of(drive(service.chat({"prompt": "hi"}, invocation(idempotency_key="k-1"))))

    # Then the stored answer is replayed; OpenAI was not called, nothing held; the call was logged once as replayed
    assert (outcome.status, outcome.body, outcome.replayed) == (200, stored, True)
    assert world.log == []
    assert [figures.outcome for figures in metered] == ["replayed"]


def test_without_a_guard_configured_a_keyed_request_is_answered_normally() -> None:
    # Given no idempotency table
    world = World()

    # When a keyed request arrives
    outcome = outcome_of(drive(world.service().chat({"prompt": "hi"}, invocation(idempotency_key="k-1"))))

    # Then it is answered (not replayed)
    assert (outcome.status, outcome.replayed) == (200, False)
    assert len(world.upstream.calls) == 1


@pytest.mark.parametrize(
    ("model", "dimension"),
    [("made-up-model", None), (MODEL, MODEL), ("gpt-4.1", "gpt-4.1"), (None, None)],
)
def test_reject_makes_a_model_a_metric_dimension_only_when_the_allowlist_vouches_for_it(
    model: str | None, dimension: str | None, metered: list[telemetry.CallFigures]
) -> None:
    # Given a service with an allowlist
    world = World()

    # When a failure is rejected for a caller-chosen model name
    outcome = world.service().reject(InvalidRequest("model: no", "model"), invocation(face=OPENAI), model=model)

    # Then it is answered in the face's format, and counted under the model only when the allowlist knows it
    assert outcome.status == 400
    assert outcome.body["error"]["param"] == "model"
    [figures] = metered
    assert (figures.model, figures.outcome) == (dimension, "InvalidRequest")


def test_models_lists_the_allowlist() -> None:
    # Given an allowlist
    world = World()

    # When the models are listed
    outcome = world.service().models(invocation(face=OPENAI))

    # Then the chat models are exactly the allowlist, in its order
    chat = [entry["id"] for entry in outcome.body["data"] if "chat.completions" in entry["routes"]]
    assert (outcome.status, chat) == (200, list(SETTINGS.allowed_models))


def test_warm_builds_the_upstream_client_and_the_budget_tables_client() -> None:
    # Given a service with budgets
    world = World()

    # When it is warmed at init
    world.service().warm()

    # Then both clients were built
    assert (world.upstream.warmed, world.budgets.store.warmed) == (1, 1)


def test_where_the_entry_point_answers_first_the_settle_waits_for_the_answer_to_have_gone() -> None:
    # Given an entry point that delivers the answer before the call's books close (the streaming app, off Lambda)
    world = World()

    # When a request is served
    outcome = outcome_of(drive(world.service().chat({"prompt": "hi"}, invocation(caller="k", answer_first=True))))

    # Then the answer is ready with its hold still open: nothing settled, nothing logged yet
    assert outcome.status == 200 and outcome.after is not None
    assert [entry[0] for entry in world.log] == ["reserve", "complete"]
    # And once the entry point has delivered it, the rest settles the answer's cost, once
    drive(outcome.after())
    drive(outcome.after())
    [(_, _, spent)] = world.budgets.entries("settle")
    assert spent.tokens == USAGE["total_tokens"]


def test_elsewhere_the_answer_comes_back_settled_with_nothing_left_to_do() -> None:
    # Given the handler function (it answers when it returns: nothing may run after)
    world = World()

    # When a request is served
    outcome = outcome_of(drive(world.service().chat({"prompt": "hi"}, invocation(caller="k"))))

    # Then the books closed before the answer was handed back
    assert outcome.after is None
    assert [entry[0] for entry in world.log] == ["reserve", "complete", "settle"]
