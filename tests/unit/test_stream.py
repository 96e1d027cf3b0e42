"""A streamed answer, driven directly on an event loop: its frames, its one ending, what it settles and reports."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from lambda_chat import telemetry
from lambda_chat.calls import Invocation
from lambda_chat.deadline import Deadline
from lambda_chat.errors import UpstreamMalformed, UpstreamUnavailable
from lambda_chat.faces import OPENAI, RESPONSES, Face
from lambda_chat.ledger import Books
from lambda_chat.models import UpstreamRequest
from lambda_chat.pricing import Price, PriceTable
from lambda_chat.runners import THREADS
from lambda_chat.stream import ChatStream, StreamMeter

MODEL = "gpt-4o-mini"
PRICES = PriceTable({MODEL: Price(2.0, 1.0, 4.0)})  # USD per million tokens
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def delta(text: str, finish_reason: str | None = None) -> dict[str, Any]:
    return {"model": MODEL, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish_reason}]}


ANSWER = [delta("Hel"), delta("lo"), delta("", "stop"), {"model": MODEL, "choices": [], "usage": USAGE}]


class FakeUpstream:
    """The SDK's stream: chunks (or an exception to raise, or a pause in seconds), then its end."""

    def __init__(self, items: Sequence[object]) -> None:
        self.items, self.closed = copy.deepcopy(items), 0

    async def __aiter__(self) -> AsyncIterator[object]:
        for item in self.items:
            if isinstance(item, Exception):
                raise item
            if isinstance(item, float):
                await asyncio.sleep(item)
                continue
            yield item

    async def close(self) -> None:
        self.closed += 1


@dataclass
class FakeBudgets:
    log: list[tuple[Any, ...]] = field(default_factory=list)
    hold: object = field(default_factory=object)

    def reserve(self, caller: str, request: UpstreamRequest, seconds: float) -> object:
        self.log.append(("reserve", caller))
        return self.hold

    def settle(self, hold: object, spent: Any) -> None:
        self.log.append(("settle", hold, spent))

    def release(self, hold: object, failure: BaseException) -> None:
        self.log.append(("release", hold, failure))

    def settled(self) -> list[Any]:
        return [entry[2] for entry in self.log if entry[0] == "settle"]


@pytest.fixture
def reported(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, telemetry.CallFigures, int]]:
    """Each call's log line: its message, figures and status."""
    seen: list[tuple[str, telemetry.CallFigures, int]] = []
    original = telemetry.report

    def report(message: str, figures: telemetry.CallFigures, tracing: Any, *, status: int, **fields: Any) -> None:
        seen.append((message, figures, status))
        original(message, figures, tracing, status=status, **fields)

    monkeypatch.setattr(telemetry, "report", report)
    return seen


async def opened(
    upstream: FakeUpstream,
    budgets: FakeBudgets,
    *,
    face: Face = OPENAI,
    keepalive: float = 15.0,
    deadline_ms: float = 30_000,
    before_upstream_s: float = 0.0,
    **request: Any,
) -> ChatStream:
    """A stream as the service opens it: its estimate held on the budgets, then the upstream's stream (its call
    having begun `before_upstream_s` after the request)."""
    books = Books(budgets, PRICES, THREADS, telemetry.Tracing(enabled=False))  # type: ignore[arg-type]
    call = Invocation("streaming_api", Deadline(deadline_ms), face, caller="key-1", streams=True)
    started = time.perf_counter() - before_upstream_s
    ledger = books.open(UpstreamRequest(model=MODEL, stream=True, **request), call, started=started)
    async with ledger.held():
        upstream_started = time.perf_counter()
    return ChatStream(upstream, ledger, keepalive_seconds=keepalive, upstream_started=upstream_started)


async def read_all(stream: ChatStream) -> list[bytes]:
    async with stream:
        return [frame async for frame in stream.frames()]


def run(upstream: FakeUpstream, budgets: FakeBudgets, **options: Any) -> list[bytes]:
    async def served() -> list[bytes]:
        return await read_all(await opened(upstream, budgets, **options))

    return asyncio.run(served())


def data_of(frame: bytes) -> Any:
    """The JSON of one `data:` frame (after its `event:` line, if any)."""
    lines = frame.decode().strip().split("\n")
    assert lines[-1].startswith("data: "), frame
    return json.loads(lines[-1].removeprefix("data: "))


def test_the_upstreams_chunks_come_out_as_sse_data_frames_then_done(
    reported: list[tuple[str, telemetry.CallFigures, int]],
) -> None:
    # Given an upstream that streams an answer (the caller did not ask for usage)
    upstream, budgets = FakeUpstream(ANSWER), FakeBudgets()

    # When the stream is read to its end
    frames = run(upstream, budgets)

    # Then each content chunk is one `data:` frame, in order, and the stream ends with `data: [DONE]`
    assert all(frame.startswith(b"data: ") and frame.endswith(b"\n\n") for frame in frames)
    assert [data_of(frame) for frame in frames[:-1]] == ANSWER[:3]
    assert frames[-1] == b"data: [DONE]\n\n"
    # And the upstream was closed, the cost settled once from the (stripped) usage, and the call reported once
    assert upstream.closed >= 1
    [spent] = budgets.settled()
    assert float(spent.usd) == pytest.approx((10 * 2.0 + 5 * 4.0) / 1e6)
    assert spent.tokens == 15
    [(message, figures, status)] = reported
    assert (figures.outcome, status, figures.total_tokens, figures.model) == ("success", 200, 15, MODEL)
    assert message == "chat completed"


def test_a_streams_upstream_time_counts_from_its_upstream_call_not_from_the_request(
    reported: list[tuple[str, telemetry.CallFigures, int]],
) -> None:
    # Given a request that spent 0.5 s before its upstream call (a slow budget table, a slow body)
    upstream, budgets = FakeUpstream(ANSWER), FakeBudgets()

    # When its stream is read to its end
    run(upstream, budgets, before_upstream_s=0.5)

    # Then its upstream time leaves those 0.5 s out, as a whole answer's does, and its handler time keeps them
    [(_, figures, _)] = reported
    assert figures.upstream_ms is not None
    assert figures.upstream_ms < 500 <= figures.handler_ms


def test_the_usage_chunk_is_passed_on_when_the_caller_asked_for_it() -> None:
    # Given a caller that asked for usage (`stream_options.include_usage`)
    upstream, budgets = FakeUpstream(ANSWER), FakeBudgets()

    # When the stream is read
    frames = run(upstream, budgets, include_usage=True)

    # Then every chunk, the usage chunk included, is passed on before [DONE]
    assert [data_of(frame) for frame in frames[:-1]] == ANSWER
    assert frames[-1] == OPENAI.DONE


def test_usage_on_a_content_chunk_is_removed_and_the_chunk_kept() -> None:
    # Given an upstream that sends usage on its last content chunk
    last = {**delta("!", "stop"), "usage": USAGE}
    upstream, budgets = FakeUpstream([delta("Hi"), last]), FakeBudgets()

    # When a caller that did not ask for usage reads it
    frames = run(upstream, budgets)

    # Then the chunk is passed on without its usage, and the usage was still metered
    assert [data_of(frame) for frame in frames[:-1]] == [delta("Hi"), delta("!", "stop")]
    assert budgets.settled()[0].tokens == 15


def test_a_stream_that_stops_before_a_finish_reason_ends_with_one_error_event(
    reported: list[tuple[str, telemetry.CallFigures, int]],
) -> None:
    # Given an upstream whose stream ends before its answer is complete
    upstream, budgets = FakeUpstream([delta("Hel"), delta("lo")]), FakeBudgets()

    # When the stream is read
    frames = run(upstream, budgets)

    # Then the chunks are followed by one error event, and no [DONE]
    assert [data_of(frame) for frame in frames[:2]] == [delta("Hel"), delta("lo")]
    assert len(frames) == 3
    error = data_of(frames[-1])["error"]
    assert (error["code"], error["type"]) == (UpstreamMalformed.code, "server_error")
    assert OPENAI.DONE not in frames
    # And it ended as that failure; with no usage, the estimate is settled
    assert [(figures.outcome, status) for _, figures, status in reported] == [("UpstreamMalformed", 502)]
    assert budgets.settled() == [None]


@pytest.mark.parametrize(
    ("failure", "code", "status"),
    [
        (RuntimeError("a bug, quoting the prompt"), "internal_error", 500),
        (ValueError("unreadable"), "upstream_malformed", 502),
        (UpstreamUnavailable("OpenAI failed while streaming: boom"), "upstream_unavailable", 502),
    ],
)
def test_an_exception_mid_stream_ends_it_with_one_error_frame(
    failure: Exception, code: str, status: int, reported: list[tuple[str, telemetry.CallFigures, int]]
) -> None:
    # Given an upstream that fails after its first chunk
    upstream, budgets = FakeUpstream([delta("Hel"), failure]), FakeBudgets()

    # When the stream is read
    frames = run(upstream, budgets)

    # Then the first chunk is followed by exactly one error frame, which does not quote an unexpected failure
    assert data_of(frames[0]) == delta("Hel")
    assert len(frames) == 2
    assert data_of(frames[1])["error"]["code"] == code
    assert b"prompt" not in frames[1]
    # And the stream ended as that failure, settled once, and the upstream was closed
    assert [status_ for _, _, status_ in reported] == [status]
    assert len(budgets.settled()) == 1
    assert upstream.closed >= 1


def test_a_chunk_that_is_not_an_object_ends_the_stream_as_malformed() -> None:
    # Given an upstream that sends something other than a JSON object
    upstream, budgets = FakeUpstream([delta("Hel"), ["not", "a", "chunk"]]), FakeBudgets()

    # When the stream is read
    frames = run(upstream, budgets)

    # Then it ends with one upstream_malformed error frame
    assert len(frames) == 2
    assert data_of(frames[1])["error"]["code"] == "upstream_malformed"


def test_a_stream_whose_frames_are_never_read_ends_as_a_client_disconnect(
    reported: list[tuple[str, telemetry.CallFigures, int]],
) -> None:
    # Given an opened stream
    upstream, budgets = FakeUpstream(ANSWER), FakeBudgets()

    async def left() -> None:
        async with await opened(upstream, budgets):
            pass  # When the block ends before its frames are read (the client went away)

    asyncio.run(left())

    # Then it ended as ClientDisconnected (499), the upstream was closed, and the estimate settled once
    [(message, figures, status)] = reported
    assert (figures.outcome, status) == ("ClientDisconnected", 499)
    assert message == "chat stream ended early"
    assert budgets.settled() == [None]
    assert upstream.closed >= 1


def test_closing_twice_settles_and_reports_once(reported: list[tuple[str, telemetry.CallFigures, int]]) -> None:
    # Given a stream read to its end
    upstream, budgets = FakeUpstream(ANSWER), FakeBudgets()

    async def closed_twice() -> None:
        stream = await opened(upstream, budgets)
        async with stream:
            async for _ in stream.frames():
                pass
        # When it is closed again
        await stream.close()

    asyncio.run(closed_twice())

    # Then its cost was settled once and it was reported once
    assert len(budgets.settled()) == 1
    assert [figures.outcome for _, figures, _ in reported] == ["success"]


def test_a_responses_error_event_becomes_one_error_frame(
    reported: list[tuple[str, telemetry.CallFigures, int]],
) -> None:
    # Given a Responses API stream that sends an error event quoting something like a key
    created = {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}
    failed = {"type": "error", "message": "the model broke; key sk-proj-abcdef123456"}
    upstream, budgets = FakeUpstream([created, failed]), FakeBudgets()

    # When the stream is read in the Responses face
    frames = run(upstream, budgets, face=RESPONSES, kind="responses", path="/responses")

    # Then the first event passes as it came, and the error event becomes our own error event (no [DONE] line)
    assert frames[0].startswith(b"event: response.created\n")
    assert data_of(frames[0]) == created
    assert len(frames) == 2
    assert frames[1].startswith(b"event: error\n")
    error = data_of(frames[1])
    assert (error["type"], error["code"]) == ("error", "upstream_unavailable")
    assert "the model broke" in error["message"]
    assert "sk-proj-abcdef123456" not in error["message"]
    assert [(figures.outcome, status) for _, figures, status in reported] == [("UpstreamUnavailable", 502)]


def test_a_responses_stream_is_metered_from_its_terminal_event() -> None:
    # Given a Responses API stream that completes with usage
    usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    done = {"type": "response.completed", "response": {"model": MODEL, "status": "completed", "usage": usage}}
    upstream, budgets = FakeUpstream([{"type": "response.output_text.delta", "delta": "Hi"}, done]), FakeBudgets()

    # When it is read
    frames = run(upstream, budgets, face=RESPONSES, kind="responses", path="/responses")

    # Then both events pass, and nothing after them (no `data: [DONE]` line, no empty frame), and the usage was settled
    assert [data_of(frame)["type"] for frame in frames] == ["response.output_text.delta", "response.completed"]
    assert budgets.settled()[0].tokens == 15


def test_keep_alive_comments_fill_a_silence_longer_than_the_interval() -> None:
    # Given an upstream that falls silent for much longer than the keep-alive interval
    upstream, budgets = FakeUpstream([delta("Hel"), 0.4, delta("lo", "stop")]), FakeBudgets()

    # When the stream is read with a short interval
    frames = run(upstream, budgets, keepalive=0.05)

    # Then SSE comments fill the silence between the chunks, and the chunks and [DONE] are intact around them
    assert frames[0].startswith(b"data: ")
    between = frames[1:-2]
    assert between
    assert set(between) == {OPENAI.KEEPALIVE}
    assert data_of(frames[-2]) == delta("lo", "stop")
    assert frames[-1] == OPENAI.DONE


def test_no_keep_alive_while_chunks_keep_coming() -> None:
    # Given an upstream that sends its chunks at once
    upstream, budgets = FakeUpstream(ANSWER), FakeBudgets()

    # When it is read with an interval far longer than the stream
    frames = run(upstream, budgets, keepalive=5.0)

    # Then no keep-alive was sent
    assert OPENAI.KEEPALIVE not in frames


def test_a_deadline_that_has_passed_ends_the_stream_with_a_timeout_event(
    reported: list[tuple[str, telemetry.CallFigures, int]],
) -> None:
    # Given a stream whose invocation has no time left
    upstream, budgets = FakeUpstream(ANSWER), FakeBudgets()

    # When it is read
    frames = run(upstream, budgets, deadline_ms=0)

    # Then it ends at once with one timeout event
    assert len(frames) == 1
    assert data_of(frames[0])["error"]["code"] == "timeout"
    assert [status for _, _, status in reported] == [504]


def test_the_meter_reads_figures_and_never_passes_usage_the_caller_did_not_ask_for() -> None:
    # Given a meter for a caller that did not ask for usage
    meter = StreamMeter("chat", caller_wants_usage=False)
    usage_only = {"choices": [], "usage": {**USAGE, "completion_tokens_details": {"reasoning_tokens": 3}}}

    # When chunks pass
    passed = [meter.passes_on(delta("a")), meter.passes_on(delta("", "length")), meter.passes_on(usage_only)]

    # Then the usage-only chunk is held back, and the report has the model, finish reason and usage
    assert passed == [True, True, False]
    meter.check_complete()
    report = meter.report(upstream_ms=12.5)
    assert (report.model, report.finish_reason, report.usage) == (MODEL, "length", USAGE)
    assert (report.reasoning_tokens, report.upstream_ms) == (3, 12.5)


def test_the_meter_says_a_stream_without_a_finish_reason_is_incomplete() -> None:
    # Given a meter that saw content but no finish reason
    meter = StreamMeter("chat", caller_wants_usage=True)
    meter.passes_on(delta("a"))

    # When the stream's end is checked, Then it is malformed
    with pytest.raises(UpstreamMalformed):
        meter.check_complete()


def test_a_close_cancelled_while_settling_still_settles_then_is_cancelled(
    reported: list[tuple[str, telemetry.CallFigures, int]],
) -> None:
    # Given budgets whose settle takes a while (a slow table write)
    settling = threading.Event()

    class SlowBudgets(FakeBudgets):
        def settle(self, hold: object, spent: Any) -> None:
            settling.set()
            time.sleep(0.2)
            super().settle(hold, spent)

    upstream, budgets = FakeUpstream(ANSWER), SlowBudgets()

    async def cancelled_while_closing() -> bool:
        stream = await opened(upstream, budgets)
        closing = asyncio.ensure_future(stream.close())
        while not settling.is_set():
            await asyncio.sleep(0.01)
        # When the task closing it is cancelled meanwhile (the client's going away)
        closing.cancel()
        try:
            await closing
        except asyncio.CancelledError:
            return True
        return False

    # Then the settle was still written and reported, once, and the cancellation then went on
    assert asyncio.run(cancelled_while_closing())
    assert budgets.settled() == [None]
    assert [figures.outcome for _, figures, _ in reported] == ["ClientDisconnected"]
