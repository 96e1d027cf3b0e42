"""A call as the service sees it: what the entry point tells about it, and the outcome it ends in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from lambda_chat.deadline import Deadline, LambdaContextLike
from lambda_chat.errors import ChatError
from lambda_chat.faces import ENVELOPE, Face


@dataclass(frozen=True)
class Invocation:
    """What the trigger tells the service about this call, besides the request itself."""

    trigger: str
    deadline: Deadline
    face: Face = ENVELOPE
    idempotency_key: str | None = None
    lambda_context: LambdaContextLike | None = None  # Lambda's context, or the Web Adapter's deadline
    caller: str | None = None  # who pays (an API key's id, a configured name); None: the trigger's kind
    streams: bool = False  # the entry point can answer with a stream (the streaming app)
    answer_first: bool = False  # the entry point delivers the answer before the call's books close (see Outcome.after)

    @property
    def payer(self) -> str:
        return self.caller or self.trigger


@dataclass(frozen=True)
class Outcome:
    """A whole answer (or failure): its status, its body in the call's face, and what its headers say."""

    status: int
    body: dict[str, Any]  # the face's answer: an envelope, or OpenAI's JSON
    error: ChatError | None = None  # what failed, if anything did
    replayed: bool = False  # a stored answer for a repeated idempotency key
    headers: dict[str, str] = field(default_factory=dict)  # more to tell the caller (a lowered token limit)
    # What is left once the answer has been delivered (the call's settle and its log line), for an entry point
    # whose invocation answers first (Invocation.answer_first); None: nothing, the books closed before the answer.
    after: Callable[[], Awaitable[None]] | None = None

    @classmethod
    def failed(cls, error: ChatError, face: Face = ENVELOPE) -> Outcome:
        return cls(error.status, face.failure(error), error)

    @property
    def retry_later(self) -> bool:
        """Another call later may succeed: a conflict, a rate limit or a failure on the upstream's or AWS's side,
        unless the error says otherwise (a spent budget does not refill before its period ends)."""
        if self.error is None:
            return False
        if self.error.retry_later is not None:
            return self.error.retry_later
        return self.error.status in (409, 429) or self.error.status >= 500

    @property
    def told_not_to_retry(self) -> bool:
        """Clients are told not to retry soon (`x-should-retry: false`): the error itself says so."""
        return self.error is not None and self.error.retry_later is False

    @property
    def retry_after(self) -> str | None:
        return self.error.retry_after if self.error is not None else None
