"""One call's books: its hold on the caller's budget, what it cost, and its one log line and metrics.

The service opens a ledger per call that reaches the upstream. Before the call, the ledger reserves the estimate
(one write to the budget table, or nothing when budgets are off); after it, it settles the cost, or releases the
hold as the failure says, and reports the call. Each happens at most once, whatever ends the call and however
often the ending is signalled (a stream's end, a cancelled task, a failure while settling).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lambda_chat import telemetry
from lambda_chat.answers import Report
from lambda_chat.calls import Invocation
from lambda_chat.deadline import elapsed_ms
from lambda_chat.models import UpstreamRequest
from lambda_chat.pricing import PriceTable
from lambda_chat.runners import Runner
from lambda_chat.telemetry import unexpected_failure

if TYPE_CHECKING:
    from lambda_chat.budget import Budgets, Hold, Spend


@dataclass(frozen=True)
class Books:
    """What every call's ledger shares: the budgets (None: off), the prices, how to wait on the table, traces."""

    budgets: Budgets | None
    prices: PriceTable
    runner: Runner
    tracing: telemetry.Tracing

    def open(self, request: UpstreamRequest, invocation: Invocation, started: float) -> Ledger:
        return Ledger(self, request, invocation, started)


class Ledger:
    def __init__(self, books: Books, request: UpstreamRequest, invocation: Invocation, started: float) -> None:
        self._books = books
        self.request = request
        self.invocation = invocation
        self.started = started
        self._hold: Hold | None = None
        self._closed = False

    @property
    def _budgets(self) -> Budgets | None:
        # a stored response's own routes (retrieve, delete, cancel) cost nothing: nothing is held for them
        return self._books.budgets if self.request.kind != "relay" else None

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """The estimate held around an upstream call; released as the failure says when the call fails."""
        budgets = self._budgets
        if budgets is not None:
            seconds = self.invocation.deadline.remaining()
            self._hold = await self._books.runner.run(budgets.reserve, self.invocation.payer, self.request, seconds)
        try:
            yield
        except Exception as failure:
            await self.release(failure)
            raise

    async def release(self, failure: BaseException) -> None:
        """A failed call gives its hold back, keeping what the upstream may have billed (the budget's rule). The
        failure itself is reported by whoever answers it."""
        if self._closed:
            return
        self._closed = True
        if self._hold is not None and self._books.budgets is not None:
            await self._books.runner.run(self._books.budgets.release, self._hold, failure)

    async def settle(self, report: Report | None, *, outcome: str = "success", status: int = 200) -> None:
        """A call that got its answer (or a stream, however it ended): its cost settled, and reported."""
        if self._closed:
            return
        self._closed = True
        cost = self._cost(report)
        spend = None
        if self._hold is not None and self._books.budgets is not None:
            from lambda_chat.budget import Charge

            usage = report.usage if report is not None else None
            spent = Charge.of(cost, usage["total_tokens"]) if usage is not None else None  # None: the estimate
            try:
                spend = await self._books.runner.run(self._books.budgets.settle, self._hold, spent)
            except Exception as exc:  # a bug: the answer is still given, and the call reported
                unexpected_failure(exc)
        self._report(report, outcome, status, cost, spend)

    def replayed(self) -> None:
        """An answer replayed from the idempotency store: no upstream call, nothing held, one log line."""
        self._closed = True
        self._report(None, "replayed", 200, None, None)

    def _cost(self, report: Report | None) -> float | None:
        if report is None or report.usage is None:
            return None
        usage, request = report.usage, self.request
        return self._books.prices.call_cost(
            (request.model, request.service_tier),
            (report.model, report.service_tier),
            usage["prompt_tokens"],
            usage["completion_tokens"],
            report.cached_tokens or 0,
        )

    def _report(
        self, report: Report | None, outcome: str, status: int, cost: float | None, spend: Spend | None
    ) -> None:
        usage = report.usage if report is not None else None
        figures = telemetry.CallFigures(
            trigger=self.invocation.trigger,
            model=self.request.model or None,
            outcome=outcome,
            handler_ms=elapsed_ms(self.started),
            upstream_ms=report.upstream_ms if report is not None else None,
            prompt_tokens=usage["prompt_tokens"] if usage else None,
            completion_tokens=usage["completion_tokens"] if usage else None,
            total_tokens=usage["total_tokens"] if usage else None,
            reasoning_tokens=report.reasoning_tokens if report is not None else None,
            cached_tokens=report.cached_tokens if report is not None else None,
            cost_usd=cost,
        )
        message = "chat completed" if outcome in ("success", "replayed") else "chat stream ended early"
        finish_reason = report.finish_reason if report is not None else None
        telemetry.report(
            message,
            figures,
            self._books.tracing,
            status=status,
            finish_reason=finish_reason,
            route=self.request.kind,
            **_spend_fields(spend),
        )


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
