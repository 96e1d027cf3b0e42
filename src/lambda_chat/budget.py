"""Spend limits per caller: a day's and a month's budget, in USD and optionally in tokens, kept in DynamoDB.

Before the upstream call, an estimate is reserved with one conditional UpdateItem on the caller's month item, so
two concurrent calls can never both pass a budget with room for one; after it, the actual cost is settled and
the rest released, with one more UpdateItem. Both are single-item writes, and DynamoDB applies each atomically.

The table (partition key `caller`, sort key `period`) holds, per caller:
- one item per UTC month (`period` "2026-12"): `usd` and `tokens` spent or held this month, `dNN_usd` and
  `dNN_tokens` for day NN, and one `hold:<id>` map per call in flight (its estimate, day and expiry);
- an optional `limits` item: `daily_usd`, `monthly_usd`, `daily_tokens`, `monthly_tokens`. A number overrides the
  default; NULL means no limit; an absent attribute keeps the default. Read at most once a minute per container.

A hold that outlives its call's deadline (a container that crashed mid-call) is expired: the next call of the same
caller that sees it releases it, so no budget is held for longer than one call may last.
"""

from __future__ import annotations

import calendar
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

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

LIMITS_PERIOD = "limits"
HOLD_PREFIX = "hold:"
RELEASED = "released"  # the ids of expired holds released by another call, until their own call settles
HOLD_GRACE_SECONDS = 60  # a hold expires this long after its call's deadline
BYTES_PER_TOKEN = 3  # an estimate that errs high: about 4 bytes per token for English, 3 for most other scripts
MEDIA_PART_TOKENS = 1_500  # an image part at high detail is up to about 1,100 tokens (gpt-4o, 2048 x 2048)
TOKENS_PER_MESSAGE = 4
KEEP_MONTHS_SECONDS = 400 * 86_400  # a month's item is kept (DynamoDB TTL) for a year and a bit, for reports
MAX_SWEEPS_PER_CALL = 5
MAX_CACHED_CALLERS = 10_000


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
        return cls(_usd(usd), tokens)


@dataclass(frozen=True)
class Hold:
    """An estimate reserved for one call, to be settled once."""

    caller: str
    month: str  # the item's period, "2026-12"
    day: str  # "02"
    hold_id: str
    charge: Charge
    expired: tuple[tuple[str, dict[str, Any]], ...] = ()  # other holds of the item, past their expiry, to release


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


class BudgetStore:
    """The budget table: limits, reservations and settles for one caller at a time."""

    def __init__(
        self,
        table: str,
        defaults: Limits,
        *,
        limits_max_age_seconds: float = 60,
        timeout_seconds: float = 2,
        client: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self.defaults = defaults
        self._limits_max_age = limits_max_age_seconds
        self._timeout = timeout_seconds
        self._client = client
        self._clock = clock
        self._limits: dict[str, tuple[Limits, float]] = {}  # caller -> (limits, when read, monotonic)

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            # Short timeouts, and no retries of botocore's own: a write that timed out may have been applied, and
            # only `_call`'s retry knows how to repeat it safely (every write here is conditional on its hold).
            timeout = self._timeout
            config = Config(connect_timeout=1, read_timeout=timeout, retries={"total_max_attempts": 1})
            self._client = boto3.client("dynamodb", config=config)
        return self._client

    def warm(self) -> None:
        _ = self.client

    # -- limits -------------------------------------------------------------------------------------------------

    def limits_for(self, caller: str) -> Limits:
        """The defaults, overridden by the caller's `limits` item (read at most once per `limits_max_age`)."""
        held = self._limits.get(caller)
        if held is not None and time.monotonic() - held[1] < self._limits_max_age:
            return held[0]
        item = self._call("get_item", TableName=self.table, Key=_key(caller, LIMITS_PERIOD)).get("Item")
        limits = _limits_from(item or {}, self.defaults)
        if len(self._limits) >= MAX_CACHED_CALLERS:
            self._limits.clear()
        self._limits[caller] = (limits, time.monotonic())
        return limits

    def set_limits(self, caller: str, **changes: Decimal | int | None) -> None:
        """Override some of a caller's limits (None: no limit); used by `make budget`."""
        names, values, parts = {}, {}, []
        for index, (name, value) in enumerate(changes.items()):
            names[f"#a{index}"] = name
            values[f":v{index}"] = {"NULL": True} if value is None else {"N": _number(value)}
            parts.append(f"#a{index} = :v{index}")
        if parts:
            self.client.update_item(
                TableName=self.table,
                Key=_key(caller, LIMITS_PERIOD),
                UpdateExpression="SET " + ", ".join(parts),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        self._limits.pop(caller, None)

    def clear_limits(self, caller: str, *names: str) -> None:
        """Back to the defaults: for the limits named, or all of them."""
        if names:
            self.client.update_item(
                TableName=self.table,
                Key=_key(caller, LIMITS_PERIOD),
                UpdateExpression="REMOVE " + ", ".join(f"#a{index}" for index in range(len(names))),
                ExpressionAttributeNames={f"#a{index}": name for index, name in enumerate(names)},
            )
        else:
            self.client.delete_item(TableName=self.table, Key=_key(caller, LIMITS_PERIOD))
        self._limits.pop(caller, None)

    # -- reserve and settle --------------------------------------------------------------------------------------

    def reserve(self, caller: str, charge: Charge, *, seconds: float, limits: Limits | None = None) -> Hold:
        """Hold `charge` for a call of at most `seconds`; BudgetExceeded when a limit has no room for it."""
        limits = limits if limits is not None else self.limits_for(caller)
        now = self._clock()
        month, day = periods(now)
        rules = _rules(limits, charge)
        _refuse_if_never_fits(rules)
        hold_id = uuid.uuid4().hex[:16]
        hold = HOLD_PREFIX + hold_id
        values = {
            ":hold": {
                "M": {
                    "usd": {"N": _number(charge.usd)},
                    "tokens": {"N": str(charge.tokens)},
                    "day": {"S": day},
                    "until": {"N": str(int(now + seconds + HOLD_GRACE_SECONDS))},
                }
            },
            ":exp": {"N": str(int(now + KEEP_MONTHS_SECONDS))},
        }
        conditions = ["attribute_not_exists(#hold)"]  # so that a repeat of a write that went through adds nothing
        for index, rule in enumerate(rules):
            conditions.append(f"(attribute_not_exists({rule.counter}) OR {rule.counter} <= :room{index})")
            values[f":room{index}"] = {"N": _number(rule.limit - rule.amount)}
        for attempt in (1, 2):
            try:
                item = self._add(
                    caller,
                    month,
                    day,
                    charge,
                    then=" SET #hold = :hold, #exp = if_not_exists(#exp, :exp)",
                    condition=" AND ".join(conditions),
                    names={"#hold": hold, "#exp": "expires_at"},
                    values=values,
                    returns="ALL_NEW",
                )
            except _NoRoom as full:
                if hold in full.item:  # a timed-out first try had gone through
                    return Hold(caller, month, day, hold_id, charge, _expired_holds(full.item, now))
                expired = _expired_holds(full.item, now)
                if attempt == 2 or not expired:  # room may be held by calls that crashed: release theirs once
                    raise _exceeded(rules, full.item, day, charge, now) from None
                self._release_expired(caller, month, expired)
                continue
            return Hold(caller, month, day, hold_id, charge, _expired_holds(item, now))
        raise AssertionError("unreachable")

    def settle(self, hold: Hold, actual: Charge) -> Spend | None:
        """Replace the hold by what the call cost; None (logged, counted) when the table could not be written."""
        try:
            spend = self._settle_once(hold, actual)
        except BudgetUnavailable:
            telemetry.count("BudgetSettleFailures")
            logger.error(
                "budget settle failed twice: the caller's spend misses this call until its hold expires",
                held_usd=float(hold.charge.usd),
                actual_usd=float(actual.usd),
            )
            return None
        self._release_expired(hold.caller, hold.month, hold.expired)
        return spend

    def _settle_once(self, hold: Hold, actual: Charge) -> Spend:
        """One settle, whatever happened meanwhile: each of its writes applies at most once."""
        difference = Charge(actual.usd - hold.charge.usd, actual.tokens - hold.charge.tokens)
        where = (hold.caller, hold.month, hold.day)
        try:
            item = self._add(
                *where,
                difference,
                then=" REMOVE #hold",
                condition="attribute_exists(#hold)",
                names={"#hold": HOLD_PREFIX + hold.hold_id},
            )
        except _NoRoom as gone:
            if hold.hold_id not in gone.item.get(RELEASED, {}).get("SS", []):
                return _spend_of(gone.item, hold.day)  # a timed-out first try had gone through: settled
            # The hold expired and another call released it: add the whole cost, once (the id leaves the set).
            try:
                item = self._add(
                    *where,
                    actual,
                    then=" DELETE #released :ids",
                    condition="contains(#released, :id)",
                    names={"#released": RELEASED},
                    values={":ids": {"SS": [hold.hold_id]}, ":id": {"S": hold.hold_id}},
                )
            except _NoRoom as done:
                return _spend_of(done.item, hold.day)
        return _spend_of(item, hold.day)

    def _add(
        self,
        caller: str,
        month: str,
        day: str,
        amount: Charge,
        *,
        then: str,
        condition: str,
        names: dict[str, str],
        values: dict[str, Any] | None = None,
        returns: str = "UPDATED_NEW",
    ) -> dict[str, Any]:
        """Add `amount` to the month's and the day's counters and do `then`, all only if `condition` holds (else
        _NoRoom, with the item as it was)."""
        answer = self._call(
            "update_item",
            TableName=self.table,
            Key=_key(caller, month),
            UpdateExpression="ADD #usd :usd, #tok :tok, #dusd :usd, #dtok :tok" + then,
            ConditionExpression=condition,
            ExpressionAttributeNames=_counter_names(day) | names,
            ExpressionAttributeValues={":usd": {"N": _number(amount.usd)}, ":tok": {"N": str(amount.tokens)}}
            | (values or {}),
            ReturnValues=returns,
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return dict(answer.get("Attributes", {}))

    def _call(self, operation: str, **request: Any) -> Any:
        """One DynamoDB request, tried once more after a timeout, a dropped connection or throttling (safe: every
        write here is conditional on a hold being there or not, so a repeat of one that went through is refused)."""
        for attempt in (1, 2):
            try:
                with _store_errors():
                    return getattr(self.client, operation)(**request)
            except _Transient as failure:
                if attempt == 2:
                    raise failure.unavailable from None
                logger.warning("budget table call failed; trying once more", operation=operation, reason=failure.reason)
        raise AssertionError("unreachable")

    def _release_expired(self, caller: str, month: str, expired: tuple[tuple[str, dict[str, Any]], ...]) -> None:
        """Give back what expired holds kept; each at most once, whoever else is releasing it."""
        for name, hold in expired[:MAX_SWEEPS_PER_CALL]:
            try:
                # the id is noted as released, so that a late settle of the same call adds its whole cost
                self._add(
                    caller,
                    month,
                    hold["day"]["S"],
                    Charge(-Decimal(hold["usd"]["N"]), -int(hold["tokens"]["N"])),
                    then=", #released :ids REMOVE #hold",
                    condition="attribute_exists(#hold)",
                    names={"#hold": name, "#released": RELEASED},
                    values={":ids": {"SS": [name.removeprefix(HOLD_PREFIX)]}},
                    returns="NONE",
                )
            except (_NoRoom, BudgetUnavailable):
                continue  # released by another call already, or left for the next one
            logger.info("expired budget hold released", held_usd=float(hold["usd"]["N"]))

    # -- reports (make budget) -----------------------------------------------------------------------------------

    def report(self, caller: str) -> dict[str, Any]:
        """Limits, spend and holds of a caller now: what `make budget` prints."""
        now = self._clock()
        month, day = periods(now)
        self._limits.pop(caller, None)
        limits = self.limits_for(caller)
        item = self.client.get_item(TableName=self.table, Key=_key(caller, month), ConsistentRead=True).get("Item", {})
        spend = _spend_of(item, day)
        holds = [(name, value["M"]) for name, value in item.items() if name.startswith(HOLD_PREFIX)]
        return {
            "caller": caller,
            "month": month,
            "day": f"{month}-{day}",
            "limits": {key: _plain(value) for key, value in limits.__dict__.items()},
            "spent": {
                "today_usd": _plain(spend.day_usd),
                "month_usd": _plain(spend.month_usd),
                "today_tokens": spend.day_tokens,
                "month_tokens": spend.month_tokens,
            },
            "calls_in_flight": len(holds),
            "held_usd": _plain(sum((Decimal(hold["usd"]["N"]) for _, hold in holds), Decimal(0))),
        }


class Budgets:
    """What the service asks of budgets: reserve an estimate before a call, settle its cost after."""

    def __init__(self, store: BudgetStore, prices: PriceTable, *, fail_open: bool, allow_unpriced: bool) -> None:
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
        """Settle a held call: what it cost; the estimate when that is unknown (it ended before its usage)."""
        return self.store.settle(hold, spent if spent is not None else hold.charge)

    def release(self, hold: Hold, failure: BaseException) -> Spend | None:
        """A failed call settles what the upstream may have billed: nothing when it answered with an error status
        (or was never reached); the estimate when the answer broke off or timed out, or the failure is a bug."""
        billed = isinstance(failure, (UpstreamMalformed, DeadlineExceeded)) or not isinstance(failure, ChatError)
        return self.store.settle(hold, hold.charge if billed else Charge(Decimal(0), 0))

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
        return Charge(_usd(dollars), prompt + output)


def _usd(dollars: float | None) -> Decimal:
    return Decimal(str(dollars)) if dollars is not None else Decimal(0)


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


# -- the item's shape ----------------------------------------------------------------------------------------------


class _Transient(Exception):
    """A failure another attempt may not meet (a timeout, a dropped connection, throttling)."""

    def __init__(self, reason: str, unavailable: BudgetUnavailable) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unavailable = unavailable


class _NoRoom(Exception):
    """A conditional write's condition failed; `item` is the item as it was (when DynamoDB returned it)."""

    def __init__(self, item: dict[str, Any]) -> None:
        super().__init__("condition failed")
        self.item = item


@contextmanager
def _store_errors() -> Iterator[None]:
    """botocore's failures as BudgetUnavailable (_Transient if another try may pass); a failed condition, _NoRoom."""
    from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotocoreConnectionError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code"))
        if code == "ConditionalCheckFailedException":
            raise _NoRoom(exc.response.get("Item") or {}) from None
        reason = {
            "ResourceNotFoundException": "the budget table does not exist",
            "AccessDeniedException": "the function may not use the budget table",
            "ProvisionedThroughputExceededException": "the budget table is throttled",
            "ThrottlingException": "the budget table is throttled",
            "RequestLimitExceeded": "the budget table is throttled",
            "InternalServerError": "the budget table failed",
        }.get(code, "the budget table could not be used")
        logger.warning("budget table error", error_code=code)
        unavailable = BudgetUnavailable(f"{reason}; the request was not sent, retry later")
        if code in TRANSIENT_CODES:
            raise _Transient(code, unavailable) from None
        raise unavailable from None
    except BotoCoreError as exc:
        logger.warning("budget table unreachable", error_type=type(exc).__name__)
        unavailable = BudgetUnavailable("the budget table could not be reached; the request was not sent, retry later")
        if isinstance(exc, (HTTPClientError, BotocoreConnectionError)):  # timeouts, refused or dropped connections
            raise _Transient(type(exc).__name__, unavailable) from None
        raise unavailable from None


TRANSIENT_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded", "InternalServerError"}
)


def _key(caller: str, period: str) -> dict[str, Any]:
    return {"caller": {"S": caller}, "period": {"S": period}}


def _counter_names(day: str) -> dict[str, str]:
    return {"#usd": "usd", "#tok": "tokens", "#dusd": f"d{day}_usd", "#dtok": f"d{day}_tokens"}


@dataclass(frozen=True)
class _Rule:
    """One limit that applies to a call: its period, unit, amount, this call's share, and the counter it bounds."""

    period: str  # "daily" or "monthly"
    unit: str  # "USD" or "tokens"
    limit: Decimal | int
    amount: Decimal | int
    counter: str  # the counter's name in expressions: #usd, #dusd (today's), #tok, #dtok

    def spent(self, spend: Spend) -> Decimal | int:
        """What the caller has spent (and holds) against this limit."""
        monthly = self.period == "monthly"
        if self.unit == "USD":
            return spend.month_usd if monthly else spend.day_usd
        return spend.month_tokens if monthly else spend.day_tokens


def _rules(limits: Limits, charge: Charge) -> list[_Rule]:
    """The limits set for a caller, each with this call's share of it."""
    table = (
        ("monthly", "USD", limits.monthly_usd, charge.usd, "#usd"),
        ("daily", "USD", limits.daily_usd, charge.usd, "#dusd"),
        ("monthly", "tokens", limits.monthly_tokens, charge.tokens, "#tok"),
        ("daily", "tokens", limits.daily_tokens, charge.tokens, "#dtok"),
    )
    return [
        _Rule(period, unit, limit, amount, counter)
        for period, unit, limit, amount, counter in table
        if limit is not None
    ]


def _refuse_if_never_fits(rules: list[_Rule]) -> None:
    """A call whose estimate alone is over a limit could never pass: say so, and what to change."""
    for rule in rules:
        if rule.amount > rule.limit:
            raise BudgetExceeded(
                f"this call's estimate ({_shown(rule.amount, rule.unit)}) is more than the whole {rule.period} budget "
                f"({_shown(rule.limit, rule.unit)}): lower max_tokens or the prompt, or ask for a larger budget",
                retry_after=None,
            )


def _exceeded(rules: list[_Rule], item: dict[str, Any], day: str, charge: Charge, now: float) -> BudgetExceeded:
    """Which budget has no room, and until when (the latest period end among the full ones)."""
    if not rules:  # a condition failed with no limit set: only a hold id met twice could do that
        raise BudgetUnavailable("the budget table refused a reservation it should have taken; retry")
    spend = _spend_of(item, day)
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


def _expired_holds(item: dict[str, Any], now: float) -> tuple[tuple[str, dict[str, Any]], ...]:
    expired = []
    for name, value in item.items():
        if name.startswith(HOLD_PREFIX) and "M" in value:
            hold = value["M"]
            if float(hold.get("until", {}).get("N", "0")) < now:
                expired.append((name, hold))
    return tuple(expired)


def _spend_of(item: dict[str, Any], day: str) -> Spend:
    def number(name: str) -> Decimal:
        value = item.get(name, {}).get("N")
        return Decimal(value) if value is not None else Decimal(0)

    return Spend(number(f"d{day}_usd"), number("usd"), int(number(f"d{day}_tokens")), int(number("tokens")))


def _limits_from(item: dict[str, Any], defaults: Limits) -> Limits:
    def override(name: str, default: Any, kind: type) -> Any:
        value = item.get(name)
        if value is None:
            return default
        if value.get("NULL"):
            return None
        return kind(value["N"])

    return Limits(
        daily_usd=override("daily_usd", defaults.daily_usd, Decimal),
        monthly_usd=override("monthly_usd", defaults.monthly_usd, Decimal),
        daily_tokens=override("daily_tokens", defaults.daily_tokens, int),
        monthly_tokens=override("monthly_tokens", defaults.monthly_tokens, int),
    )


def _number(value: Decimal | int | float) -> str:
    return format(Decimal(str(value)), "f")


def _plain(value: Decimal | int | None) -> float | int | None:
    return float(value) if isinstance(value, Decimal) else value


def _shown(amount: Decimal | int, unit: str) -> str:
    return f"${float(amount):.6f}".rstrip("0").rstrip(".") if unit == "USD" else f"{int(amount)} tokens"
