"""The one use case: a decoded request in, an outcome (status and envelope) out."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

from aws_lambda_powertools import Logger

from lambda_chat.api_key import SecretsManagerKey
from lambda_chat.completion import ChatCompleter, Completion, build_client
from lambda_chat.deadline import Deadline
from lambda_chat.errors import ChatError
from lambda_chat.models import ChatRequest, Envelope, failure_envelope, parse_request, success_envelope
from lambda_chat.settings import Settings, get_settings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from lambda_chat.idempotency import IdempotencyGuard

logger = Logger(child=True)


class Completer(Protocol):
    def complete(self, request: ChatRequest, deadline: Deadline) -> Completion: ...


@dataclass(frozen=True)
class Outcome:
    status: int
    envelope: Envelope
    retry_after: str | None = None
    replayed: bool = False  # a stored envelope for a repeated idempotency key

    @classmethod
    def failed(cls, error: ChatError) -> Outcome:
        return cls(error.status, failure_envelope(error.message), error.retry_after)


class ChatService:
    def __init__(self, settings: Settings, completer: Completer, guard: IdempotencyGuard | None = None) -> None:
        self.settings = settings
        self._completer = completer
        self._guard = guard

    def chat(
        self,
        data: object,
        deadline: Deadline,
        *,
        idempotency_key: str | None = None,
        context: LambdaContext | None = None,
    ) -> Outcome:
        started = time.perf_counter()
        model = None
        replayed = False
        try:
            request = parse_request(data, self.settings)
            model = request.model or self.settings.default_model
            if idempotency_key is not None and self._guard is not None:
                envelope, replayed = self._guard.run(
                    idempotency_key, data, lambda: self._complete(request, deadline), context
                )
            else:
                envelope = self._complete(request, deadline)
        except ChatError as error:
            logger.info(
                "chat failed",
                outcome="error",
                status=error.status,
                error_type=type(error).__name__,
                model=model,
                latency_ms=_elapsed_ms(started),
            )
            return Outcome.failed(error)
        usage = envelope["usage"]
        logger.info(
            "chat completed",
            outcome="replayed" if replayed else "success",
            status=200,
            model=model,
            finish_reason=envelope["finish_reason"],
            prompt_tokens=usage["prompt_tokens"] if usage else None,
            completion_tokens=usage["completion_tokens"] if usage else None,
            total_tokens=usage["total_tokens"] if usage else None,
            latency_ms=_elapsed_ms(started),
        )
        return Outcome(200, envelope, replayed=replayed)

    def _complete(self, request: ChatRequest, deadline: Deadline) -> Envelope:
        completion = self._completer.complete(request, deadline)
        return success_envelope(completion.text, completion.usage, completion.finish_reason)


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


@lru_cache(maxsize=1)
def default_service() -> ChatService:
    """The container's service: settings, key store and OpenAI client, built once at init."""
    settings = get_settings()
    completer = ChatCompleter(
        build_client(settings.base_url),
        SecretsManagerKey(settings.secret_id, settings.secret_max_age_seconds),
        default_model=settings.default_model,
        token_parameter=settings.token_parameter,
        max_attempts=settings.max_attempts,
    )
    guard = None
    if settings.idempotency_table:
        from lambda_chat.idempotency import IdempotencyGuard

        guard = IdempotencyGuard(settings.idempotency_table, settings.idempotency_expiry_seconds)
    return ChatService(settings, completer, guard)
