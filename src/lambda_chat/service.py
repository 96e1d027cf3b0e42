"""The one use case: a decoded request in, an outcome (status and envelope) out.

Every outcome, success or failure, is logged once (numbers only, never text) and
counted in the invocation's metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any, Protocol

from aws_lambda_powertools import Logger

from lambda_chat import telemetry
from lambda_chat.api_key import SecretsManagerKey
from lambda_chat.completion import ChatCompleter, Completion, build_client
from lambda_chat.deadline import Deadline
from lambda_chat.errors import ChatError
from lambda_chat.faces import ENVELOPE, OPENAI, Face
from lambda_chat.models import UpstreamRequest
from lambda_chat.pricing import PriceTable
from lambda_chat.settings import Settings, get_settings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from lambda_chat.idempotency import IdempotencyGuard

logger = Logger(service=telemetry.SERVICE_NAME, child=True)


class Completer(Protocol):
    def complete(self, request: UpstreamRequest, deadline: Deadline) -> Completion: ...


@dataclass(frozen=True)
class Invocation:
    """What the trigger tells the service about this call, besides the request itself."""

    trigger: str
    deadline: Deadline
    face: Face = ENVELOPE
    idempotency_key: str | None = None
    lambda_context: LambdaContext | None = None


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]  # the face's answer: an envelope, or OpenAI's JSON
    retry_after: str | None = None
    replayed: bool = False  # a stored answer for a repeated idempotency key
    retryable: bool = False  # another attempt later may succeed

    @classmethod
    def failed(cls, error: ChatError, face: Face = ENVELOPE) -> Outcome:
        retryable = error.status in (409, 429) or error.status >= 500
        return cls(error.status, face.failure(error), error.retry_after, retryable=retryable)


class ChatService:
    def __init__(
        self,
        settings: Settings,
        completer: Completer,
        *,
        prices: PriceTable | None = None,
        guard_factory: Callable[[], IdempotencyGuard] | None = None,
        tracing: telemetry.Tracing | None = None,
    ) -> None:
        self.settings = settings
        self._completer = completer
        self._prices = prices or PriceTable({})
        self._guard_factory = guard_factory
        self.tracing = tracing or telemetry.Tracing(enabled=False)

    @cached_property
    def _guard(self) -> IdempotencyGuard | None:
        """Built by the first request that carries a key: ~90 ms and 12 MiB a key-less container never pays."""
        return self._guard_factory() if self._guard_factory is not None else None

    def chat(self, data: object, invocation: Invocation) -> Outcome:
        """Parse with the invocation's face, complete once (idempotently), answer in that face."""
        started = time.perf_counter()
        model = None
        face = invocation.face
        try:
            request = face.parse(data, self.settings)
            model = request.model
            body, completion = self._complete_once(request, data, invocation)
        except ChatError as error:
            return self.reject(error, invocation, model=model, started=started)
        usage = completion.usage if completion is not None else None
        cost = None
        if completion is not None and usage is not None:
            cost = self._prices.cost_usd(
                completion.model or model,
                usage["prompt_tokens"],
                usage["completion_tokens"],
                completion.cached_tokens or 0,
            )
        figures = telemetry.CallFigures(
            trigger=invocation.trigger,
            model=model,
            outcome="success" if completion is not None else "replayed",
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
        self._report("chat completed", figures, status=200, finish_reason=finish_reason)
        return Outcome(200, body, replayed=completion is None)

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

    def _complete_once(
        self, request: UpstreamRequest, data: object, invocation: Invocation
    ) -> tuple[dict[str, Any], Completion | None]:
        """The face's answer and the completion behind it; no completion when an earlier answer is replayed."""
        face = invocation.face
        if invocation.idempotency_key is None or self._guard is None:
            completion = self._completer.complete(request, invocation.deadline)
            return face.success(completion), completion
        done: list[Completion] = []

        def work() -> dict[str, Any]:
            done.append(self._completer.complete(request, invocation.deadline))
            return face.success(done[0])

        body, replayed = self._guard.run(
            f"{face.name}:{invocation.idempotency_key}", data, work, invocation.lambda_context
        )
        return body, (None if replayed else done[0])

    def _report(
        self, message: str, figures: telemetry.CallFigures, *, status: int, finish_reason: str | None = None
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
        )


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


@lru_cache(maxsize=1)
def default_service() -> ChatService:
    """The container's service: settings, key store and OpenAI client, built once at init."""
    settings = get_settings()
    tracing = telemetry.Tracing(enabled=settings.tracing_enabled)
    completer = ChatCompleter(
        build_client(settings.base_url),
        SecretsManagerKey(settings.secret_id, settings.secret_max_age_seconds),
        token_parameter=settings.token_parameter,
        max_attempts=settings.max_attempts,
        span=tracing.span,
    )
    return ChatService(
        settings, completer, prices=settings.prices, guard_factory=_guard_factory(settings), tracing=tracing
    )


def _guard_factory(settings: Settings) -> Callable[[], IdempotencyGuard] | None:
    table = settings.idempotency_table
    if not table:
        return None

    def build() -> IdempotencyGuard:
        from lambda_chat.idempotency import IdempotencyGuard

        return IdempotencyGuard(table, settings.idempotency_expiry_seconds)

    return build
