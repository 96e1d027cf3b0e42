"""The one use case: a decoded request in, an outcome (status and envelope) out.

Every outcome, success or failure, is logged once (numbers only, never text) and
counted in the invocation's metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cached_property, lru_cache, partial
from typing import TYPE_CHECKING, Any, Literal, Protocol

from aws_lambda_powertools import Logger

from lambda_chat import limits, telemetry
from lambda_chat.api_key import SecretsManagerKey
from lambda_chat.completion import (
    ChatCompleter,
    ChatStreamer,
    Completion,
    build_async_client,
    build_client,
    chunk_figures,
    event_figures,
)
from lambda_chat.deadline import Deadline, LambdaContextLike
from lambda_chat.errors import (
    ChatError,
    DeadlineExceeded,
    InternalError,
    InvalidRequest,
    UpstreamMalformed,
    UpstreamUnavailable,
    from_openai,
    scrub,
)
from lambda_chat.faces import ENVELOPE, OPENAI, Face, OpenAIFace
from lambda_chat.models import CallKind, UpstreamRequest
from lambda_chat.pricing import PriceTable
from lambda_chat.settings import ConfigurationError, Settings, get_settings

if TYPE_CHECKING:
    from lambda_chat.budget import Budgets, Hold, Spend
    from lambda_chat.idempotency import IdempotencyGuard

logger = Logger(service=telemetry.SERVICE_NAME, child=True)


class Completer(Protocol):
    def complete(self, request: UpstreamRequest, deadline: Deadline) -> Completion: ...

    def warm(self) -> None: ...


class UpstreamStream(Protocol):
    """The upstream's chunks (the SDK's AsyncStream); closing it cancels the upstream request."""

    def __aiter__(self) -> AsyncIterator[object]: ...

    async def close(self) -> None: ...


class Streamer(Protocol):
    async def open(self, request: UpstreamRequest, deadline: Deadline) -> UpstreamStream: ...

    async def complete(self, request: UpstreamRequest, deadline: Deadline) -> Completion: ...

    def warm(self) -> None: ...


@dataclass(frozen=True)
class Invocation:
    """What the trigger tells the service about this call, besides the request itself."""

    trigger: str
    deadline: Deadline
    face: Face = ENVELOPE
    idempotency_key: str | None = None
    lambda_context: LambdaContextLike | None = None  # Lambda's context, or the Web Adapter's deadline
    caller: str | None = None  # who pays (an API key's id, a configured name); None: the trigger's kind

    @property
    def payer(self) -> str:
        return self.caller or self.trigger


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]  # the face's answer: an envelope, or OpenAI's JSON
    retry_after: str | None = None
    replayed: bool = False  # a stored answer for a repeated idempotency key
    retryable: bool = False  # another attempt later may succeed
    final: bool = False  # not worth a retry soon (clients are told `x-should-retry: false`)
    headers: dict[str, str] = field(default_factory=dict)  # more to tell the caller (a lowered token limit)

    @classmethod
    def failed(cls, error: ChatError, face: Face = ENVELOPE) -> Outcome:
        retryable = error.status in (409, 429) or error.status >= 500
        if error.retry_later is not None:
            retryable = error.retry_later
        final = error.retry_later is False
        return cls(error.status, face.failure(error), error.retry_after, retryable=retryable, final=final)


class ChatService:
    def __init__(
        self,
        settings: Settings,
        completer: Completer,
        *,
        prices: PriceTable | None = None,
        guard_factory: Callable[[], IdempotencyGuard] | None = None,
        tracing: telemetry.Tracing | None = None,
        streamer: Streamer | None = None,
        budgets: Budgets | None = None,
    ) -> None:
        self.settings = settings
        self._completer = completer
        self._streamer = streamer
        self._prices = prices or PriceTable({})
        self._guard_factory = guard_factory
        self.budgets = budgets
        self.tracing = tracing or telemetry.Tracing(enabled=False)

    @cached_property
    def _guard(self) -> IdempotencyGuard | None:
        """Built by the first request that carries a key: ~90 ms and 12 MiB a key-less container never pays."""
        return self._guard_factory() if self._guard_factory is not None else None

    @property
    def streamer(self) -> Streamer:
        if self._streamer is None:
            raise InternalError("this deployment does not stream")
        return self._streamer

    def warm(self, *, streaming: bool) -> None:
        """Build, at init, the one SDK client this entry point uses: the async one (streaming app) or the other."""
        (self.streamer if streaming else self._completer).warm()
        if self.budgets is not None:
            self.budgets.store.warm()

    def chat(self, data: object, invocation: Invocation) -> Outcome:
        """Parse with the invocation's face, complete once (idempotently), answer in that face."""
        started = time.perf_counter()
        model = None
        try:
            request = invocation.face.parse(data, self.settings)
            model = request.model
            if request.stream:
                raise InvalidRequest(
                    "stream: this endpoint answers whole responses; stream through the streaming API's /v1 "
                    "(README: Streaming), or leave `stream` out",
                    "stream",
                )
            return self._answer(request, data, invocation, started)
        except ChatError as error:
            return self.reject(error, invocation, model=model, started=started)

    async def open_stream(self, data: object, invocation: Invocation) -> Outcome | ChatStream:
        """The streaming app's chat: a stream for `stream: true`, else the whole answer (or any failure) as an outcome.

        Everything that can fail before the first byte (validation, the key, the upstream's status) fails here,
        with its usual status; what fails later ends the stream with one error event.
        """
        started = time.perf_counter()
        model = None
        try:
            request = invocation.face.parse(data, self.settings)
            model = request.model
            if not request.stream:
                return await self._answer_on_the_loop(request, data, invocation, started)
            if invocation.idempotency_key is not None:
                raise InvalidRequest(
                    "Idempotency-Key: a streamed answer is not stored, so it could not be replayed; send "
                    "stream: false to make the call idempotent, or leave the key out",
                    "stream",
                )
            async with self._held(request, invocation) as hold:
                upstream = await self.streamer.open(request, invocation.deadline)
        except ChatError as error:
            return self.reject(error, invocation, model=model, started=started)
        return ChatStream(self, upstream, request, invocation, started, hold)

    async def relay(
        self,
        method: Literal["GET", "POST", "DELETE"],
        path: str,
        invocation: Invocation,
        query: tuple[tuple[str, str], ...] = (),
    ) -> Outcome:
        """A stored response's own routes (retrieve, delete, cancel, its input items), passed through with the
        function's key, and OpenAI's own query parameters (pagination, `include`)."""
        request = UpstreamRequest(model="", kind="relay", path=path, method=method, query=query)
        return await self._answer_on_the_loop(request, None, invocation, time.perf_counter())

    def models(self, invocation: Invocation) -> Outcome:
        """The models this deployment allows (GET /v1/models)."""
        self._report("models listed", telemetry.CallFigures(invocation.trigger, None, "models", 0.0), status=200)
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
            handler_ms=_elapsed_ms(started) if started is not None else 0.0,
        )
        self._report("chat failed", figures, status=error.status)
        return Outcome.failed(error, invocation.face)

    def _answer(self, request: UpstreamRequest, data: object, invocation: Invocation, started: float) -> Outcome:
        try:
            body, completion, spend = self._complete_once(request, data, invocation)
        except ChatError as error:
            return self.reject(error, invocation, model=request.model, started=started)
        self.served(invocation, request, completion, started, spend=spend)
        return Outcome(200, body, replayed=completion is None, headers=notes_on(request))

    async def _answer_on_the_loop(
        self, request: UpstreamRequest, data: object, invocation: Invocation, started: float
    ) -> Outcome:
        """A whole answer in the streaming app: on the event loop, unless an idempotency record must be kept."""
        if invocation.idempotency_key is not None and self._guard is not None:
            import anyio.to_thread  # Powertools Idempotency (DynamoDB) blocks: a thread, with the blocking client

            outcome: Outcome = await anyio.to_thread.run_sync(self._answer, request, data, invocation, started)
            return outcome
        try:
            async with self._held(request, invocation) as hold:
                completion = await self.streamer.complete(request, invocation.deadline)
            spend = await self._settled(hold, completion, request)
        except ChatError as error:
            return self.reject(error, invocation, model=request.model, started=started)
        self.served(invocation, request, completion, started, spend=spend)
        return Outcome(200, invocation.face.success(completion), headers=notes_on(request))

    def served(
        self,
        invocation: Invocation,
        request: UpstreamRequest,
        completion: Completion | None,
        started: float,
        *,
        outcome: str = "success",
        status: int = 200,
        spend: Spend | None = None,
    ) -> None:
        """Log and count a call that reached the upstream (no completion: a replayed answer)."""
        model = request.model
        usage = completion.usage if completion is not None else None
        cost = None
        if completion is not None and usage is not None:
            cost = self._prices.call_cost(
                (model, request.service_tier),
                (completion.model, completion.service_tier),
                usage["prompt_tokens"],
                usage["completion_tokens"],
                completion.cached_tokens or 0,
            )
        figures = telemetry.CallFigures(
            trigger=invocation.trigger,
            model=model or None,
            outcome=outcome if completion is not None else "replayed",
            handler_ms=_elapsed_ms(started),
            upstream_ms=completion.upstream_ms if completion is not None else None,
            prompt_tokens=usage["prompt_tokens"] if usage else None,
            completion_tokens=usage["completion_tokens"] if usage else None,
            total_tokens=usage["total_tokens"] if usage else None,
            reasoning_tokens=completion.reasoning_tokens if completion is not None else None,
            cached_tokens=completion.cached_tokens if completion is not None else None,
            cost_usd=cost,
        )
        finish_reason = completion.finish_reason if completion is not None else None
        message = "chat completed" if outcome == "success" else "chat stream ended early"
        spent = _spend_fields(spend)
        self._report(message, figures, status=status, finish_reason=finish_reason, route=request.kind, **spent)

    def _complete_once(
        self, request: UpstreamRequest, data: object, invocation: Invocation
    ) -> tuple[dict[str, Any], Completion | None, Spend | None]:
        """The face's answer, the completion behind it (none when an earlier answer is replayed) and the spend."""
        face = invocation.face
        if invocation.idempotency_key is None or self._guard is None:
            completion, spend = self._billed(request, invocation)
            return face.success(completion), completion, spend
        done: list[tuple[Completion, Spend | None]] = []

        def work() -> dict[str, Any]:
            done.append(self._billed(request, invocation))
            return face.success(done[0][0])

        scope = (f"{invocation.trigger}:{invocation.payer}", face.name)  # one caller's key never reaches another's
        body, replayed = self._guard.run(scope, invocation.idempotency_key, data, work, invocation.lambda_context)
        return (body, None, None) if replayed else (body, *done[0])

    def _billed(self, request: UpstreamRequest, invocation: Invocation) -> tuple[Completion, Spend | None]:
        """One upstream call inside the caller's budget: an estimate held before it, its cost settled after."""
        hold = self._reserve(request, invocation)
        try:
            completion = self._completer.complete(request, invocation.deadline)
        except Exception as exc:
            self._release(hold, exc)
            raise
        return completion, self._settle(hold, completion, request)

    # Budgets (lambda_chat.budget): each step is one DynamoDB write, or nothing when budgets are off.
    def _holds(self, request: UpstreamRequest) -> bool:
        return self.budgets is not None and request.kind != "relay"  # a stored response's routes cost nothing

    def _reserve(self, request: UpstreamRequest, invocation: Invocation) -> Hold | None:
        if self.budgets is None or not self._holds(request):
            return None
        return self.budgets.reserve(invocation.payer, request, invocation.deadline.remaining())

    def _settle(self, hold: Hold | None, completion: Completion, request: UpstreamRequest) -> Spend | None:
        if self.budgets is None or hold is None:
            return None
        from lambda_chat.budget import Charge  # imported with budgets on (a cold start without them skips it)

        usage, spent = completion.usage, None  # no usage (it ended before it): the estimate is settled
        if usage is not None:
            cost = self._prices.call_cost(
                (request.model, request.service_tier),
                (completion.model, completion.service_tier),
                usage["prompt_tokens"],
                usage["completion_tokens"],
                completion.cached_tokens or 0,
            )
            spent = Charge.of(cost, usage["total_tokens"])
        return self.budgets.settle(hold, spent)

    def _release(self, hold: Hold | None, failure: Exception) -> None:
        """A failed call settles what the upstream may have billed (Budgets.release says how much)."""
        if self.budgets is not None and hold is not None:
            self.budgets.release(hold, failure)

    # From the event loop, each step runs in a thread (boto3 blocks); with nothing to hold, there is no step.
    @asynccontextmanager
    async def _held(self, request: UpstreamRequest, invocation: Invocation) -> AsyncIterator[Hold | None]:
        """An estimate held around an upstream call, released as the failure says if the call fails."""
        hold = await _in_thread(self._reserve, request, invocation) if self._holds(request) else None
        try:
            yield hold
        except Exception as exc:
            if hold is not None:
                await _in_thread(self._release, hold, exc)
            raise

    async def _settled(self, hold: Hold | None, completion: Completion, request: UpstreamRequest) -> Spend | None:
        return await _in_thread(self._settle, hold, completion, request) if hold is not None else None

    def _report(
        self,
        message: str,
        figures: telemetry.CallFigures,
        *,
        status: int,
        finish_reason: str | None = None,
        route: str | None = None,
        **spent: Any,
    ) -> None:
        telemetry.record(figures)
        self.tracing.annotate(model=figures.model or "none", outcome=figures.outcome)
        logger.info(
            message,
            outcome=figures.outcome,
            model=figures.model,
            latency_ms=figures.handler_ms,
            upstream_ms=figures.upstream_ms,
            prompt_tokens=figures.prompt_tokens,
            completion_tokens=figures.completion_tokens,
            total_tokens=figures.total_tokens,
            reasoning_tokens=figures.reasoning_tokens,
            cached_tokens=figures.cached_tokens,
            estimated_cost_usd=figures.cost_usd,
            status=status,
            finish_reason=finish_reason,
            route=route,
            **spent,
        )


class ChatStream:
    """A streamed answer: the upstream's chunks as SSE frames, as they arrive, then `data: [DONE]`.

    - Silences longer than the keep-alive interval get an SSE comment, so idle timeouts do not cut the stream.
    - A failure mid-stream, or the deadline coming near, ends it with one error event (never mid-line).
    - The usage chunk (always asked of the upstream) is metered, and passed on only when the caller asked.
    - Whatever ends it (done, failure, the client going away) closes the upstream request and is logged once.
    """

    def __init__(
        self,
        service: ChatService,
        upstream: UpstreamStream,
        request: UpstreamRequest,
        invocation: Invocation,
        started: float,
        hold: Hold | None = None,
    ) -> None:
        self._service = service
        self._hold = hold
        self._begun = False
        self._upstream = upstream
        self._request = request
        self._invocation = invocation
        self._started = started
        self._keepalive = service.settings.stream_keepalive_seconds

    @property
    def headers(self) -> dict[str, str]:
        """Headers for the stream's response: what the function changed in the request."""
        return notes_on(self._request)

    async def abandoned(self) -> bool:
        """End a stream whose frames were never asked for (the client left first), as a disconnect; False if they
        were (the stream then ended itself)."""
        if self._begun:
            return False
        self._begun = True
        await self._end(_StreamMeter(self._request.kind, False), "ClientDisconnected", 499)
        return True

    async def _end(self, meter: _StreamMeter, outcome: str, status: int) -> None:
        """However it ended: close the upstream, settle what it cost, and log and count it, once."""
        import anyio

        completion = meter.completion(upstream_ms=_elapsed_ms(self._started))
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(Exception):  # a connection that is already broken
                await self._upstream.close()
        # Its usage's cost, or the estimate when it ended before its usage (a disconnect, a failure); written
        # before the response ends, even when the client's going away cancels this generator meanwhile.
        try:
            spend, cancelled = await _uncancelled(self._service._settled(self._hold, completion, self._request))
        except Exception as exc:  # a bug: the stream still ends, and is logged
            spend, cancelled = None, False
            unexpected_failure(exc)
        self._service.served(
            self._invocation, self._request, completion, self._started, outcome=outcome, status=status, spend=spend
        )
        if cancelled:
            raise asyncio.CancelledError

    async def frames(self) -> AsyncGenerator[bytes, None]:
        self._begun = True
        face, deadline = self._invocation.face, self._invocation.deadline
        if not isinstance(face, OpenAIFace):
            raise TypeError("streams are answered in an OpenAI-compatible face")
        meter = _StreamMeter(self._request.kind, self._request.include_usage)
        outcome, status = "ClientDisconnected", 499  # unless the stream gets to its end
        loop = asyncio.get_running_loop()
        self._last_sent = loop.time()
        # One task reads the upstream, another wakes this loop when a keep-alive or the deadline is due: a chunk
        # costs a queue hand-off, not a task and a timer of its own.
        arrivals: asyncio.Queue[object] = asyncio.Queue(maxsize=64)
        tasks = (loop.create_task(self._read(arrivals)), loop.create_task(self._tick(arrivals)))
        try:
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
                outcome, status = "success", 200
                yield face.DONE
            except ChatError as error:
                outcome, status = type(error).__name__, error.status
                yield face.error_frame(error)
            except Exception as exc:
                failure = _stream_failure(exc)
                outcome, status = type(failure).__name__, failure.status
                yield face.error_frame(failure)
        finally:
            for task in tasks:
                task.cancel()
            await self._end(meter, outcome, status)

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
        loop, deadline = asyncio.get_running_loop(), self._invocation.deadline
        while True:
            due = min(self._last_sent + self._keepalive, loop.time() + deadline.remaining())
            await asyncio.sleep(max(due - loop.time(), MIN_TICK_SECONDS))
            if not arrivals.full():  # a full queue wakes the stream anyway
                arrivals.put_nowait(_TICK)


async def _in_thread(work: Callable[..., Any], *args: Any) -> Any:
    import anyio.to_thread

    return await anyio.to_thread.run_sync(work, *args)


async def _uncancelled(work: Awaitable[Any]) -> tuple[Any, bool]:
    """Await `work` to its end even if this task is cancelled meanwhile; and whether it was."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            return await asyncio.shield(task), cancelled
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True


# What the stream's tasks put in its queue besides chunks.
_TICK = object()  # a keep-alive or the deadline may be due
_END = object()  # the upstream's stream ended
MIN_TICK_SECONDS = 0.05


class _StreamMeter:
    """Reads usage, model and finish reason off the chunks as they pass; never their text."""

    def __init__(self, kind: CallKind, caller_wants_usage: bool) -> None:
        self._kind = kind
        self._caller_wants_usage = caller_wants_usage
        self._figures: dict[str, Any] = {"usage": None, "finish_reason": None, "model": None}

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
        found = chunk_figures(chunk)
        self._figures.update(found)
        if self._caller_wants_usage or "usage" not in chunk:
            return True
        del chunk["usage"]  # asked for by us, not by the caller
        return bool(chunk.get("choices"))

    def check_complete(self) -> None:
        """A whole answer ends with a finish reason: a stream that stopped before one was cut off."""
        if self._figures["finish_reason"] is None:
            raise UpstreamMalformed("the stream from OpenAI ended before its answer was complete")

    def completion(self, *, upstream_ms: float) -> Completion:
        return Completion(text="", upstream_ms=upstream_ms, **self._figures)


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


def _spend_fields(spend: Spend | None) -> dict[str, Any]:
    """The caller's totals after this call, for its log line (spend per caller is a log field, never a dimension)."""
    if spend is None:
        return {}
    return {
        "caller_spend_today_usd": float(spend.day_usd),
        "caller_spend_month_usd": float(spend.month_usd),
        "caller_tokens_today": spend.day_tokens,
        "caller_tokens_month": spend.month_tokens,
    }


def notes_on(request: UpstreamRequest) -> dict[str, str]:
    """Response headers that tell the caller what the function changed in its request."""
    if request.lowered_from is None:
        return {}
    return {limits.LOWERED_HEADER: f"from={request.lowered_from}, to={request.max_tokens}"}


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def unexpected_failure(exc: BaseException) -> InternalError:
    """A bug's way out: logged by type and frames only (messages may hold content), answered as a 500."""
    frames = [f"{frame.filename}:{frame.lineno} {frame.name}" for frame in traceback.extract_tb(exc.__traceback__)]
    logger.error("unexpected failure", error_type=type(exc).__name__, frames=frames[-5:])
    return InternalError("internal error; the request was not completed")


def configured_service() -> ChatService | None:
    """The container's service, or None (logged) when its configuration is invalid."""
    try:
        return default_service()
    except ConfigurationError as exc:
        logger.error("function is misconfigured", reason=str(exc))
        return None


@lru_cache(maxsize=1)
def default_service() -> ChatService:
    """The container's service: settings, key store and OpenAI client, built once at init."""
    settings = get_settings()
    tracing = telemetry.Tracing(enabled=settings.tracing_enabled)
    keys = SecretsManagerKey(settings.secret_id, settings.secret_max_age_seconds)
    options: dict[str, Any] = {"token_parameter": settings.token_parameter, "max_attempts": settings.max_attempts}
    completer = ChatCompleter(partial(build_client, settings.base_url), keys, span=tracing.span, **options)
    # What the endpoint taught one client holds for the other too.
    streamer = ChatStreamer(partial(build_async_client, settings.base_url), keys, quirks=completer.quirks, **options)

    return ChatService(
        settings,
        completer,
        prices=settings.prices,
        guard_factory=_guard_factory(settings),
        tracing=tracing,
        streamer=streamer,
        budgets=_budgets(settings),
    )


def _budgets(settings: Settings) -> Budgets | None:
    if not settings.budget_table:
        return None
    from lambda_chat.budget import Budgets, Limits
    from lambda_chat.budget_store import BudgetStore

    defaults = Limits(
        daily_usd=settings.default_daily_budget_usd,
        monthly_usd=settings.default_monthly_budget_usd,
        daily_tokens=settings.default_daily_budget_tokens,
        monthly_tokens=settings.default_monthly_budget_tokens,
    )
    store = BudgetStore(
        settings.budget_table,
        defaults,
        limits_max_age_seconds=settings.budget_limits_cache_seconds,
        timeout_seconds=settings.budget_table_timeout_seconds,
    )
    return Budgets(
        store,
        settings.prices,
        fail_open=settings.budget_fail_mode == "open",
        allow_unpriced=settings.allow_unpriced_models,
    )


def _guard_factory(settings: Settings) -> Callable[[], IdempotencyGuard] | None:
    table = settings.idempotency_table
    if not table:
        return None

    def build() -> IdempotencyGuard:
        from lambda_chat.idempotency import IdempotencyGuard

        return IdempotencyGuard(table, settings.idempotency_expiry_seconds)

    return build
