"""Spend limits per caller, the rules: a day's and a month's budget, in USD and optionally in tokens.

Before the upstream call, an estimate of its cost is held (reserved) for the caller; after it, what the call cost is
settled and the rest released. This module decides: what a call may cost, which limits apply to it, what a caller
is told when one has no room, what a failed call counts for, and what happens when the table cannot be used.
`lambda_chat.budget_store` keeps the figures in DynamoDB, where each reservation and each settle is one conditional
write on the caller's month item, so two concurrent calls can never both pass a budget with room for one.

A hold that outlives its call's deadline (a container that crashed mid-call) is expired: the next call of the same
caller that sees it releases it, so no budget is held for longer than one call may last.
"""

from __future__ import annotations

import calendar
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from aws_lambda_powertools import Logger

from lambda_chat import telemetry
from lambda_chat.errors import (
    BudgetExceeded,
    BudgetUnavailable,
    ChatError,
    DeadlineExceeded,
    InvalidRequest,
    UpstreamMalformed,
)

if TYPE_CHECKING:
    from lambda_chat.models import UpstreamRequest
    from lambda_chat.pricing import PriceTable

logger = Logger(service=telemetry.SERVICE_NAME, child=True)

HOLD_GRACE_SECONDS = 60  # a hold expires this long after its call's deadline
BYTES_PER_TOKEN = 3  # an estimate that errs high: about 4 bytes per token for English, 3 for most other scripts
MEDIA_PART_TOKENS = 1_500  # an image part at high detail is up to about 1,100 tokens (gpt-4o, 2048 x 2048)
TOKENS_PER_MESSAGE = 4


@dataclass(frozen=True)
class Limits:
    """A caller's budgets; None is no limit."""

    daily_usd: Decimal | None = None
    monthly_usd: Decimal | None = None
    daily_tokens: int | None = None
    monthly_tokens: int | None = None


@dataclass(frozen=True)
class Charge:
    usd: Decimal
    tokens: int

    @classmethod
    def of(cls, usd: float | None, tokens: int) -> Charge:
        """A call's cost as the price table gives it (None, a model with no price: $0), and its tokens."""
        return cls(Decimal(str(usd)) if usd is not None else Decimal(0), tokens)


@dataclass(frozen=True)
class Hold:
    """An estimate reserved for one call, to be settled once."""

    caller: str
    month: str  # the item's period, "2026-12"
    day: str  # "02"
    hold_id: str
    charge: Charge
    expired: tuple[Hold, ...] = ()  # other calls' holds in the same item, past their expiry, to release


@dataclass(frozen=True)
class Spend:
    """A caller's totals after a settle (spent plus held by calls still in flight)."""

    day_usd: Decimal
    month_usd: Decimal
    day_tokens: int
    month_tokens: int


def periods(now: float) -> tuple[str, str]:
    """The UTC month ("2026-12") and day of the month ("02") of an epoch time."""
    moment = datetime.fromtimestamp(now, tz=UTC)
    return moment.strftime("%Y-%m"), moment.strftime("%d")


def period_ends(now: float) -> tuple[float, float]:
    """When the UTC day and the UTC month of `now` end, as epoch times."""
    moment = datetime.fromtimestamp(now, tz=UTC)
    day_start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    day_end = day_start.timestamp() + 86_400
    days = calendar.monthrange(moment.year, moment.month)[1]
    month_end = day_start.replace(day=1).timestamp() + days * 86_400
    return day_end, month_end


class Store(Protocol):
    """Where the figures are kept (`lambda_chat.budget_store.BudgetStore`): it stores, the rules here decide."""

    def warm(self) -> None: ...

    def limits_for(self, caller: str) -> Limits: ...

    def reserve(self, caller: str, charge: Charge, *, seconds: float, limits: Limits | None = None) -> Hold: ...

    def settle(self, hold: Hold, actual: Charge) -> Spend: ...


class Budgets:
    """What the service asks of budgets: reserve an estimate before a call, settle its cost after."""

    def __init__(self, store: Store, prices: PriceTable, *, fail_open: bool, allow_unpriced: bool) -> None:
        self.store = store
        self._prices = prices
        self._fail_open = fail_open
        self._allow_unpriced = allow_unpriced

    def reserve(self, caller: str, request: UpstreamRequest, seconds: float) -> Hold | None:
        """The hold for this call; None when the table is down and budgets fail open."""
        charge = self.estimate(request)
        try:
            limits = self.store.limits_for(caller)
            if not self._allow_unpriced and self._prices.price_of(request.model, request.service_tier) is None:
                _refuse_unpriced(request, limits, self._prices)
            return self.store.reserve(caller, charge, seconds=seconds, limits=limits)
        except BudgetUnavailable as exc:
            telemetry.count("BudgetStoreFailures")
            if not self._fail_open:
                raise
            logger.warning(
                "budget table unavailable: the call runs unmetered (BUDGET_FAIL_MODE=open)", reason=exc.message
            )
            return None

    def settle(self, hold: Hold, spent: Charge | None) -> Spend | None:
        """Settle a held call: what it cost; the estimate when that is unknown (None: it ended before its usage)."""
        return self._settle(hold, hold.charge if spent is None else spent)

    def release(self, hold: Hold, failure: BaseException) -> Spend | None:
        """Settle a call that failed, at what the upstream may have billed: nothing when it answered with an error
        status (or was never reached); the estimate when the answer broke off or timed out, or the failure is a bug."""
        billed = isinstance(failure, (UpstreamMalformed, DeadlineExceeded)) or not isinstance(failure, ChatError)
        return self._settle(hold, hold.charge if billed else Charge(Decimal(0), 0))

    def _settle(self, hold: Hold, actual: Charge) -> Spend | None:
        """Replace the hold by `actual`; None (logged, counted) when the table could not be written: the call has
        been made, and its answer still goes out."""
        try:
            return self.store.settle(hold, actual)
        except BudgetUnavailable:
            telemetry.count("BudgetSettleFailures")
            logger.error(
                "budget settle failed twice: the caller's spend misses this call until its hold expires",
                held_usd=float(hold.charge.usd),
                actual_usd=float(actual.usd),
            )
            return None

    def estimate(self, request: UpstreamRequest) -> Charge:
        """What the call may cost, erring high: the prompt's size (a token per 3 bytes sent, plus a flat amount per
        image, file or audio part), plus the output limit times the answers asked for (`n`), at the model's price
        for the tier asked for (none for a model without one)."""
        sent = [request.messages, request.extra]
        size = len(json.dumps(sent, ensure_ascii=False, separators=(",", ":")).encode())
        prompt = size // BYTES_PER_TOKEN + TOKENS_PER_MESSAGE * max(len(request.messages), 1)
        prompt += MEDIA_PART_TOKENS * request.media_parts
        output = (request.max_tokens or 0) * request.copies
        dollars = self._prices.cost_usd(request.model, prompt, output, 0, request.service_tier)
        return Charge.of(dollars, prompt + output)


def _refuse_unpriced(request: UpstreamRequest, limits: Limits, prices: PriceTable) -> None:
    """A model (or tier) with no price would bypass a USD budget: refused where one applies (token limits still
    count it)."""
    if limits.daily_usd is None and limits.monthly_usd is None:
        return
    if prices.price_of(request.model) is not None:  # the model is priced, but not at the tier asked for
        raise InvalidRequest(
            f"service_tier: '{str(request.service_tier)[:40]}' has no known price for '{request.model[:100]}', and "
            "this caller's spend is limited in USD: leave service_tier out, or the operator can add the tier's price "
            "to MODEL_PRICES_JSON",
            "service_tier",
        )
    raise InvalidRequest(
        f"model: '{request.model[:100]}' has no known price, and this caller's spend is limited in USD: the "
        "operator can add its price to MODEL_PRICES_JSON (or set ALLOW_UNPRICED_MODELS=true, to count it in tokens "
        "only)",
        "model",
    )


# -- the limits that apply to a call, and what a caller is told ---------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One limit that applies to a call: its period, unit, amount, and this call's share of it."""

    period: str  # "daily" or "monthly"
    unit: str  # "USD" or "tokens"
    limit: Decimal | int
    amount: Decimal | int

    def spent(self, spend: Spend) -> Decimal | int:
        """What the caller has spent (and holds) against this limit."""
        monthly = self.period == "monthly"
        if self.unit == "USD":
            return spend.month_usd if monthly else spend.day_usd
        return spend.month_tokens if monthly else spend.day_tokens


def rules_for(limits: Limits, charge: Charge) -> list[Rule]:
    """The limits set for a caller, each with this call's share of it."""
    table = (
        ("monthly", "USD", limits.monthly_usd, charge.usd),
        ("daily", "USD", limits.daily_usd, charge.usd),
        ("monthly", "tokens", limits.monthly_tokens, charge.tokens),
        ("daily", "tokens", limits.daily_tokens, charge.tokens),
    )
    return [Rule(period, unit, limit, amount) for period, unit, limit, amount in table if limit is not None]


def refuse_if_never_fits(rules: list[Rule]) -> None:
    """A call whose estimate alone is over a limit could never pass: say so, and what to change."""
    for rule in rules:
        if rule.amount > rule.limit:
            raise BudgetExceeded(
                f"this call's estimate ({_shown(rule.amount, rule.unit)}) is more than the whole {rule.period} budget "
                f"({_shown(rule.limit, rule.unit)}): lower max_tokens or the prompt, or ask for a larger budget",
                retry_after=None,
            )


def exceeded(rules: list[Rule], spend: Spend, now: float) -> BudgetExceeded:
    """Which budget has no room, and until when (the latest period end among the full ones), given the caller's
    `spend` as the refused reservation found it."""
    if not rules:  # a condition failed with no limit set: only a hold id met twice could do that
        raise BudgetUnavailable("the budget table refused a reservation it should have taken; retry")
    day_end, month_end = period_ends(now)
    # The full ones; if none looks full (a settle freed room between the check and this read), the fullest one.
    full = [rule for rule in rules if rule.spent(spend) + rule.amount > rule.limit] or [
        max(rules, key=lambda rule: Decimal(rule.spent(spend)) / max(Decimal(rule.limit), Decimal("1e-9")))
    ]
    rule = max(full, key=lambda rule: rule.period == "monthly")
    end = month_end if rule.period == "monthly" else day_end
    resets = datetime.fromtimestamp(end, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return BudgetExceeded(
        f"the {rule.period} budget of this API key is used up ({_shown(rule.spent(spend), rule.unit)} of "
        f"{_shown(rule.limit, rule.unit)}, calls in flight included; this call needs up to "
        f"{_shown(rule.amount, rule.unit)}); it resets at {resets}",
        retry_after=str(max(int(end - now) + 1, 1)),
    )


def _shown(amount: Decimal | int, unit: str) -> str:
    return f"${float(amount):.6f}".rstrip("0").rstrip(".") if unit == "USD" else f"{int(amount)} tokens"
