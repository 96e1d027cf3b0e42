"""A streamed answer: the upstream's chunks as server-sent events, as they arrive, and its one ending.

    async with stream:                   # however the block ends, the stream ends once:
        async for frame in stream.frames():   # the upstream closed, its cost settled, the call reported
            ...

- Silences longer than the keep-alive interval get an SSE comment, so idle timeouts do not cut the stream.
- A failure mid-stream, or the deadline coming near, ends it with one error event (never mid-line).
- The usage chunk (always asked of the upstream) is metered, and passed on only when the caller asked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from types import TracebackType
from typing import Any, Protocol

from lambda_chat import limits
from lambda_chat.answers import Report, chunk_figures, event_figures
from lambda_chat.deadline import elapsed_ms
from lambda_chat.errors import ChatError, DeadlineExceeded, UpstreamMalformed, UpstreamUnavailable, from_openai, scrub
from lambda_chat.faces import OpenAIFace
from lambda_chat.ledger import Ledger
from lambda_chat.models import CallKind
from lambda_chat.telemetry import unexpected_failure

# What the stream's tasks put in its queue besides chunks.
_TICK = object()  # a keep-alive or the deadline may be due
_END = object()  # the upstream's stream ended
MIN_TICK_SECONDS = 0.05


class UpstreamStream(Protocol):
    """The upstream's chunks (the SDK's AsyncStream); closing it cancels the upstream request."""

    def __aiter__(self) -> AsyncIterator[object]: ...

    async def close(self) -> None: ...


class ChatStream:
    def __init__(
        self, upstream: UpstreamStream, ledger: Ledger, *, keepalive_seconds: float, upstream_started: float
    ) -> None:
        self._upstream = upstream
        self._upstream_started = upstream_started  # when the upstream call began (perf_counter): its time's start
        self._ledger = ledger
        self._keepalive = keepalive_seconds
        request = ledger.request
        self._meter = StreamMeter(request.kind, request.include_usage)
        self._ending = ("ClientDisconnected", 499)  # unless the frames get to their end
        self._closed = False
        self._last_sent = 0.0

    @property
    def headers(self) -> dict[str, str]:
        """What the function changed in the request, for the stream's response headers."""
        return limits.notes_on(self._ledger.request)

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """However it ended: close the upstream, settle what it cost, and report it; once."""
        import anyio

        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):  # a connection already broken
            await self._upstream.close()
        outcome, status = self._ending
        # Its usage's cost, or the estimate when it ended before its usage (a disconnect, a failure); written even
        # when the client's going away cancels this task meanwhile.
        report = self._meter.report(upstream_ms=elapsed_ms(self._upstream_started))
        if await _uncancelled(self._ledger.settle(report, outcome=outcome, status=status)):
            raise asyncio.CancelledError

    async def frames(self) -> AsyncGenerator[bytes, None]:
        face, deadline = self._ledger.invocation.face, self._ledger.invocation.deadline
        if not isinstance(face, OpenAIFace):
            raise TypeError("streams are answered in an OpenAI-compatible face")
        meter = self._meter
        loop = asyncio.get_running_loop()
        self._last_sent = loop.time()
        # One task reads the upstream, another wakes this loop when a keep-alive or the deadline is due: a chunk
        # costs a queue hand-off, not a task and a timer of its own.
        arrivals: asyncio.Queue[object] = asyncio.Queue(maxsize=64)
        tasks = (loop.create_task(self._read(arrivals)), loop.create_task(self._tick(arrivals)))
        try:
            while True:
                item = await arrivals.get()
                if deadline.expired():
                    raise DeadlineExceeded("the answer was cut short: the function's time limit was reached")
                if item is _TICK:
                    if loop.time() - self._last_sent >= self._keepalive:
                        self._last_sent = loop.time()
                        yield face.KEEPALIVE
                    continue
                if item is _END:
                    meter.check_complete()
                    break
                if isinstance(item, Exception):
                    raise item
                if meter.passes_on(item):
                    self._last_sent = loop.time()
                    yield face.chunk_frame(item)
            self._ending = ("success", 200)
            if face.DONE:  # (a Responses API stream ends with its own terminal event)
                yield face.DONE
        except ChatError as error:
            self._ending = (type(error).__name__, error.status)
            yield face.error_frame(error)
        except Exception as exc:
            failure = _stream_failure(exc)
            self._ending = (type(failure).__name__, failure.status)
            yield face.error_frame(failure)
        finally:
            for task in tasks:
                task.cancel()

    async def _read(self, arrivals: asyncio.Queue[object]) -> None:
        """The upstream's chunks into the queue, then the end (or what went wrong)."""
        try:
            async for chunk in self._upstream:
                await arrivals.put(chunk)  # a full queue (a slow client) holds the upstream back
        except Exception as exc:
            await arrivals.put(exc)
            return
        await arrivals.put(_END)

    async def _tick(self, arrivals: asyncio.Queue[object]) -> None:
        """Wake the stream when its silence reaches the keep-alive interval, or its deadline comes."""
        loop, deadline = asyncio.get_running_loop(), self._ledger.invocation.deadline
        while True:
            due = min(self._last_sent + self._keepalive, loop.time() + deadline.remaining())
            await asyncio.sleep(max(due - loop.time(), MIN_TICK_SECONDS))
            if not arrivals.full():  # a full queue wakes the stream anyway
                arrivals.put_nowait(_TICK)


async def _uncancelled(work: Awaitable[Any]) -> bool:
    """Await `work` to its end even if this task is cancelled meanwhile; and whether it was."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            await asyncio.shield(task)
            return cancelled
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True


class StreamMeter:
    """Reads usage, model and finish reason off the chunks as they pass; never their text."""

    def __init__(self, kind: CallKind, caller_wants_usage: bool) -> None:
        self._kind = kind
        self._caller_wants_usage = caller_wants_usage
        self._figures: dict[str, Any] = {}

    def passes_on(self, chunk: object) -> bool:
        """Meter a chunk; False for the usage chunk the caller did not ask for."""
        if not isinstance(chunk, dict):
            raise _UnreadableChunk
        if self._kind == "responses":
            if chunk.get("type") == "error":  # reported as our own error event, with our status table's code
                message = chunk.get("message")
                detail = scrub(message[:500]) if isinstance(message, str) else "an error event"
                raise UpstreamUnavailable(f"OpenAI failed while streaming: {detail}")
            self._figures.update(event_figures(chunk))
            return True
        self._figures.update(chunk_figures(chunk))
        if self._caller_wants_usage or "usage" not in chunk:
            return True
        del chunk["usage"]  # asked for by us, not by the caller
        return bool(chunk.get("choices"))

    def check_complete(self) -> None:
        """A whole answer ends with a finish reason: a stream that stopped before one was cut off."""
        if self._figures.get("finish_reason") is None:
            raise UpstreamMalformed("the stream from OpenAI ended before its answer was complete")

    def report(self, *, upstream_ms: float) -> Report:
        return Report(**self._figures, upstream_ms=upstream_ms)


class _UnreadableChunk(Exception):
    pass


def _stream_failure(exc: Exception) -> ChatError:
    """What ended a stream that had begun: the SDK's error (an error event, a broken connection) or bad data."""
    import openai

    if isinstance(exc, openai.OpenAIError):
        return from_openai(exc)
    if isinstance(exc, (_UnreadableChunk, ValueError)):
        return UpstreamMalformed("OpenAI sent a stream event that could not be read")
    return unexpected_failure(exc)
