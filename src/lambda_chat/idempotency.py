"""Idempotency through Powertools and DynamoDB: a retried request must not pay OpenAI twice.

A request that carries a key (the `Idempotency-Key` header on HTTP triggers, the
event id on EventBridge) runs once per key within the expiry: a repeat gets the
stored envelope without calling OpenAI, a repeat while the first is still running
gets 409, and the same key with a different request gets 422. Only successes are
stored: a failure raises inside the guarded call, so Powertools deletes the
in-progress record and the caller may try again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from lambda_chat.deadline import LambdaContextLike
from lambda_chat.errors import ChatError, from_idempotency

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

KEY_FIELD = "idempotency_key"
REQUEST_FIELD = "request"


class IdempotencyGuard:
    """Runs a call at most once per key, storing successful envelopes in a DynamoDB table."""

    def __init__(self, table_name: str, expires_after_seconds: int) -> None:
        from aws_lambda_powertools.utilities.idempotency import (
            DynamoDBPersistenceLayer,
            IdempotencyConfig,
            idempotent_function,
        )

        self._config = IdempotencyConfig(
            event_key_jmespath=KEY_FIELD,
            payload_validation_jmespath=REQUEST_FIELD,
            raise_on_no_idempotency_key=True,
            expires_after_seconds=expires_after_seconds,
            response_hook=_mark_replayed,
        )
        persistence = DynamoDBPersistenceLayer(table_name=table_name)

        @idempotent_function(  # type: ignore[untyped-decorator]
            data_keyword_argument="call", config=self._config, persistence_store=persistence
        )
        def run_once(call: dict[str, Any], work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
            return {"answer": work(), "replayed": False}

        self._run_once = run_once

    def run(
        self, key: str, request: object, work: Callable[[], dict[str, Any]], context: LambdaContextLike | None
    ) -> tuple[dict[str, Any], bool]:
        """The answer, and whether it was a stored one (True: OpenAI was not called)."""
        if context is not None:
            self._config.register_lambda_context(cast("LambdaContext", context))  # it reads the remaining time
        completed: list[dict[str, Any]] = []

        def work_once() -> dict[str, Any]:
            completed.append(work())
            return completed[0]

        try:
            result = self._run_once(call={KEY_FIELD: key, REQUEST_FIELD: request}, work=work_once)
        except ChatError:
            raise  # the call itself failed: nothing stored, the caller may retry
        except Exception as exc:
            if completed:  # OpenAI answered (and billed) but the record could not be saved: still deliver it
                return completed[0], False
            raise from_idempotency(exc) from None
        return result["answer"], bool(result["replayed"])


def _mark_replayed(response: Any, idempotent_data: Any) -> Any:
    return {**response, "replayed": True}
