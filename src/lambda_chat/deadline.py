"""The time this invocation may spend, so the caller always gets an envelope in time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


def elapsed_ms(started: float) -> float:
    """Milliseconds since `started` (a `time.perf_counter()` reading), to a tenth."""
    return round((time.perf_counter() - started) * 1000, 1)


class LambdaContextLike(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class Deadline:
    """A point on the monotonic clock by which the answer must be on its way."""

    def __init__(self, budget_ms: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ends_at = self._clock() + max(budget_ms, 0) / 1000

    @classmethod
    def for_invocation(
        cls,
        context: LambdaContextLike | None,
        *,
        safety_margin_ms: int,
        fallback_ms: int,
        cap_ms: int | None = None,
    ) -> Deadline:
        """Lambda's remaining time less a margin, capped (e.g. by API Gateway's 29 s limit).

        The margin (time kept back to build and return the answer) shrinks to a quarter of
        what is left, so an invocation with little time still gets a chance to call OpenAI.
        """
        remaining = context.get_remaining_time_in_millis() if context is not None else fallback_ms
        margin = min(safety_margin_ms, remaining // 4)
        budget = remaining - margin
        if cap_ms is not None:
            budget = min(budget, cap_ms - safety_margin_ms)
        return cls(budget)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(self._ends_at - self._clock(), 0.0)

    def expired(self) -> bool:
        return self.remaining() <= 0
