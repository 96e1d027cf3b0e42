"""The one use case: a decoded request in; an outcome (status and body) or a stream out.

Parse the request in the call's face, hold an estimate on the caller's budget, call the upstream, settle what it
cost, answer. Written once, async: the streaming app runs it on its event loop, the handler function drives it
inline (lambda_chat.runners). Every call, success or failure, is logged once (numbers only, never text) and
counted in the invocation's metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, Literal, Protocol

from lambda_chat import limits, telemetry
from lambda_chat.answers import Answer
from lambda_chat.calls import Invocation, Outcome
from lambda_chat.deadline import Deadline, elapsed_ms
from lambda_chat.errors import ChatError, InvalidRequest
from lambda_chat.faces import OPENAI
from lambda_chat.ledger import Books, Ledger
from lambda_chat.models import UpstreamRequest
from lambda_chat.pricing import PriceTable
from lambda_chat.runners import INLINE, Runner
from lambda_chat.settings import Settings

if TYPE_CHECKING:
    from lambda_chat.budget import Budgets
    from lambda_chat.idempotency import IdempotencyGuard
    from lambda_chat.stream import ChatStream, UpstreamStream


class Upstream(Protocol):
    """OpenAI, as the service calls it (lambda_chat.completion.OpenAICaller)."""

    async def complete(self, request: UpstreamRequest, deadline: Deadline) -> Answer: ...

    async def open(self, request: UpstreamRequest, deadline: Deadline) -> UpstreamStream: ...

    def warm(self) -> None: ...


class ChatService:
    def __init__(
        self,
        settings: Settings,
        upstream: Upstream,
        *,
        runner: Runner = INLINE,
        prices: PriceTable | None = None,
        guard_factory: Callable[[], IdempotencyGuard] | None = None,
        tracing: telemetry.Tracing | None = None,
        budgets: Budgets | None = None,
    ) -> None:
        self.settings = settings
        self.budgets = budgets
        self.tracing = tracing or telemetry.Tracing(enabled=False)
        self._upstream = upstream
        self._runner = runner
        self._guard_factory = guard_factory
        self._books = Books(budgets, prices or PriceTable({}), runner, self.tracing)

    @cached_property
    def _guard(self) -> IdempotencyGuard | None:
        """Built by the first request that carries a key: ~90 ms and 12 MiB a key-less container never pays."""
        return self._guard_factory() if self._guard_factory is not None else None

    def warm(self) -> None:
        """Build, at init, the SDK client and the budget table's client."""
        self._upstream.warm()
        if self.budgets is not None:
            self.budgets.store.warm()

    async def chat(self, data: object, invocation: Invocation) -> Outcome | ChatStream:
        """Parse with the invocation's face; a stream for `stream: true` (where the entry point streams), else the
        whole answer, completed once per idempotency key.

        Everything that can fail before a stream's first byte (validation, the key, the upstream's status) fails
        here, as an outcome with its usual status; what fails later ends the stream with one error event.
        """
        started = time.perf_counter()
        model = None
        try:
            request = invocation.face.parse(data, self.settings)
            model = request.model
            if request.stream:
                return await self._stream(request, invocation, started)
            return await self._whole(request, data, invocation, started)
        except ChatError as error:
            return self.reject(error, invocation, model=model, started=started)

    async def relay(
        self,
        method: Literal["GET", "POST", "DELETE"],
        path: str,
        invocation: Invocation,
        query: tuple[tuple[str, str], ...] = (),
    ) -> Outcome:
        """A stored response's own routes (retrieve, delete, cancel, its input items), passed through with the
        function's key, and OpenAI's own query parameters (pagination, `include`)."""
        started = time.perf_counter()
        request = UpstreamRequest(model="", kind="relay", path=path, method=method, query=query)
        try:
            return await self._whole(request, None, invocation, started)
        except ChatError as error:
            return self.reject(error, invocation, model="", started=started)

    def models(self, invocation: Invocation) -> Outcome:
        """The models this deployment allows (GET /v1/models)."""
        figures = telemetry.CallFigures(invocation.trigger, None, "models", 0.0)
        telemetry.report("models listed", figures, self.tracing, status=200)
        return Outcome(200, OPENAI.models(self.settings))

    def reject(
        self, error: ChatError, invocation: Invocation, *, model: str | None = None, started: float | None = None
    ) -> Outcome:
        """The outcome of a failed request, logged and counted like a success.

        A caller-chosen model name becomes a metric dimension only when the allowlist vouches for it: without
        one, a stream of made-up names that OpenAI refuses would each create a new billed custom metric.
        """
        known = model is not None and (model == self.settings.default_model or model in self.settings.allowed_models)
        figures = telemetry.CallFigures(
            trigger=invocation.trigger,
            model=model if known else None,
            outcome=type(error).__name__,
            handler_ms=elapsed_ms(started) if started is not None else 0.0,
        )
        telemetry.report("chat failed", figures, self.tracing, status=error.status, finish_reason=None, route=None)
        return Outcome.failed(error, invocation.face)

    async def _whole(self, request: UpstreamRequest, data: object, invocation: Invocation, started: float) -> Outcome:
        """A whole answer; with an idempotency key, at most once per key (a repeat replays the stored answer)."""
        ledger = self._books.open(request, invocation, started)
        face, key = invocation.face, invocation.idempotency_key
        guard = self._guard if key is not None else None
        if key is None or guard is None:
            answer = await self._answer(ledger, settle=not invocation.answer_first)
            after = partial(ledger.settle, answer.report) if invocation.answer_first else None
            return Outcome(200, face.success(answer), headers=limits.notes_on(request), after=after)

        def once() -> dict[str, Any]:  # in the guard, which blocks: back into the core for the call
            return face.success(self._runner.back(self._answer, ledger))

        scope = (f"{invocation.trigger}:{invocation.payer}", face.name)  # one caller's key never reaches another's
        body, replayed = await self._runner.run(guard.run, scope, key, data, once, invocation.lambda_context)
        if replayed:
            ledger.replayed()
        return Outcome(200, body, replayed=replayed, headers=limits.notes_on(request))

    async def _answer(self, ledger: Ledger, *, settle: bool = True) -> Answer:
        """The upstream's answer, inside the caller's budget; settled now, or (`settle` False) by the entry point
        once the answer has gone (Outcome.after)."""
        async with ledger.held():
            answer = await self._upstream.complete(ledger.request, ledger.invocation.deadline)
        if settle:
            await ledger.settle(answer.report)
        return answer

    async def _stream(self, request: UpstreamRequest, invocation: Invocation, started: float) -> ChatStream:
        if not invocation.streams:
            raise InvalidRequest(
                "stream: this endpoint answers whole responses; stream through the streaming API's /v1 "
                "(README: Streaming), or leave `stream` out",
                "stream",
            )
        if invocation.idempotency_key is not None:
            raise InvalidRequest(
                "Idempotency-Key: a streamed answer is not stored, so it could not be replayed; send "
                "stream: false to make the call idempotent, or leave the key out",
                "stream",
            )
        from lambda_chat.stream import ChatStream  # the handler function never streams, nor imports the machinery

        ledger = self._books.open(request, invocation, started)
        async with ledger.held():
            upstream_started = time.perf_counter()  # its upstream time, like a whole answer's, leaves the hold out
            upstream = await self._upstream.open(request, invocation.deadline)
        keepalive = self.settings.stream_keepalive_seconds
        return ChatStream(upstream, ledger, keepalive_seconds=keepalive, upstream_started=upstream_started)
