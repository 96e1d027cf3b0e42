"""Idempotency through Powertools and DynamoDB: a retried request must not pay OpenAI twice.

A request that carries a key (the `Idempotency-Key` header on HTTP triggers, the
event id on EventBridge) runs once per key within the expiry: a repeat gets the
stored envelope without calling OpenAI, a repeat while the first is still running
gets 409, and the same key with a different request gets 422. Only successes are
stored: a failure raises inside the guarded call, so Powertools deletes the
in-progress record and the caller may try again.

Records are kept apart per caller and route: one caller's key never reaches another's answer. An answer too large
for a record as it is (DynamoDB items hold 400 KB) is stored compressed; one too large even so is recorded as done,
and a repeat of its key is told that it cannot be replayed (410), never sent to OpenAI a second time.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from lambda_chat.deadline import LambdaContextLike
from lambda_chat.errors import ChatError, IdempotentAnswerNotStored, from_idempotency

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

KEY_FIELD = "idempotency_key"
REQUEST_FIELD = "request"
COMPRESS_FROM_BYTES = 16_384
MAX_STORED_BYTES = 300_000  # of the 400 KB a DynamoDB item holds, the record's other attributes included


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
            return {**_stored(work()), "replayed": False}

        self._run_once = run_once

    def run(
        self,
        scope: tuple[str, str],
        key: str,
        request: object,
        work: Callable[[], dict[str, Any]],
        context: LambdaContextLike | None,
    ) -> tuple[dict[str, Any], bool]:
        """The answer, and whether it was a stored one (True: OpenAI was not called). `scope` is (the trigger and
        caller, the route): the same key from another caller, or on another route, is another record."""
        if context is not None:
            self._config.register_lambda_context(cast("LambdaContext", context))  # it reads the remaining time
        completed: list[dict[str, Any]] = []

        def work_once() -> dict[str, Any]:
            completed.append(work())
            return completed[0]

        try:
            scoped = json.dumps([*scope, key], ensure_ascii=False)
            result = self._run_once(call={KEY_FIELD: scoped, REQUEST_FIELD: request}, work=work_once)
        except ChatError:
            raise  # the call itself failed: nothing stored, the caller may retry
        except Exception as exc:
            if completed:  # OpenAI answered (and billed) but the record could not be saved: still deliver it
                return completed[0], False
            raise from_idempotency(exc) from None
        if not result["replayed"]:
            return completed[0], False
        return _answer_in(result), True


def _stored(answer: dict[str, Any]) -> dict[str, Any]:
    """What the record keeps of an answer: itself, compressed, or (too large even so) only that it was given."""
    text = json.dumps(answer, separators=(",", ":"))
    if len(text) < COMPRESS_FROM_BYTES:
        return {"answer": answer}
    packed = base64.b64encode(zlib.compress(text.encode(), 6)).decode("ascii")
    return {"packed": packed} if len(packed) <= MAX_STORED_BYTES else {"not_stored": True}


def _answer_in(record: dict[str, Any]) -> dict[str, Any]:
    if "answer" in record:
        return cast("dict[str, Any]", record["answer"])
    if "packed" in record:
        return cast("dict[str, Any]", json.loads(zlib.decompress(base64.b64decode(record["packed"]))))
    raise IdempotentAnswerNotStored(
        "the answer to this idempotency key was delivered, but it was too large to be stored, so it cannot be "
        "replayed; send the request with a new key to have it answered again"
    )


def _mark_replayed(response: Any, idempotent_data: Any) -> Any:
    return {**response, "replayed": True}
