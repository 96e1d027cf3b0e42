"""The budget table in DynamoDB: limits, reservations and settles, for one caller at a time.

It stores; `lambda_chat.budget` decides (which limits apply to a call, and what a caller is told). Each reservation
and each settle is one conditional UpdateItem on the caller's month item, which DynamoDB applies atomically.

The table (partition key `caller`, sort key `period`) holds, per caller:
- one item per UTC month (`period` "2026-12", `MonthItem`): `usd` and `tokens` spent or held this month, `dNN_usd`
  and `dNN_tokens` for day NN, one `hold:<id>` map per call in flight (its estimate, day and expiry), and
  `released`, the ids of expired holds another call released, until their own call settles;
- an optional `limits` item (`LimitsItem`): `daily_usd`, `monthly_usd`, `daily_tokens`, `monthly_tokens`. A number
  overrides the default; NULL means no limit; an absent attribute keeps the default. Read at most once a minute
  per container.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aws_lambda_powertools import Logger

from lambda_chat import errors, telemetry
from lambda_chat.budget import (
    HOLD_GRACE_SECONDS,
    Charge,
    Hold,
    Limits,
    Spend,
    exceeded,
    periods,
    refuse_if_never_fits,
    rules_for,
)
from lambda_chat.errors import BudgetUnavailable

logger = Logger(service=telemetry.SERVICE_NAME, child=True)

KEEP_MONTHS_SECONDS = 400 * 86_400  # a month's item is kept (DynamoDB TTL) for a year and a bit, for reports
MAX_SWEEPS_PER_CALL = 5
MAX_CACHED_CALLERS = 10_000


def update_expression(
    *,
    add: Sequence[str] = (),
    set: Sequence[str] = (),  # DynamoDB's own word for the action (the builtin is not used here)
    remove: Sequence[str] = (),
    delete: Sequence[str] = (),
) -> str:
    """An UpdateExpression from lists of clauses, each action once with its clauses joined by commas:
    `add=["#a :a", "#b :b"], remove=["#c"]` is "ADD #a :a, #b :b REMOVE #c"."""
    actions = (("ADD", add), ("SET", set), ("REMOVE", remove), ("DELETE", delete))
    if any(isinstance(clauses, str) for _, clauses in actions):
        raise TypeError("each action takes a list of clauses, not one string")
    rendered = [f"{action} {', '.join(clauses)}" for action, clauses in actions if clauses]
    if not rendered:
        raise ValueError("an update needs at least one clause")
    return " ".join(rendered)


# -- the items' shapes ----------------------------------------------------------------------------------------------


def item_key(caller: str, period: str) -> dict[str, Any]:
    return {"caller": {"S": caller}, "period": {"S": period}}


@dataclass(frozen=True)
class HeldCall:
    """One `hold:<id>` map of a month item: a call in flight, what it holds, and until when."""

    hold_id: str
    day: str
    charge: Charge
    until: float  # an epoch time; after it, the hold has expired


@dataclass(frozen=True)
class MonthItem:
    """A caller's month item, read for one day: the spend, the calls in flight, the released ids."""

    HOLD_PREFIX = "hold:"
    RELEASED = "released"  # the ids of expired holds released by another call, until their own call settles
    EXPIRES_AT = "expires_at"  # the item's TTL

    spend: Spend
    holds: tuple[HeldCall, ...] = ()
    released: frozenset[str] = frozenset()

    @classmethod
    def from_item(cls, item: Mapping[str, Any], day: str) -> MonthItem:
        """The item as DynamoDB returns it (all of it, or some attributes); what it lacks counts as zero."""
        month_usd, month_tokens, day_usd, day_tokens = cls.counters(day)
        spend = Spend(
            _number(item, day_usd),
            _number(item, month_usd),
            int(_number(item, day_tokens)),
            int(_number(item, month_tokens)),
        )
        holds = tuple(
            _held_call(name.removeprefix(cls.HOLD_PREFIX), value["M"])
            for name, value in item.items()
            if name.startswith(cls.HOLD_PREFIX) and "M" in value
        )
        return cls(spend, holds, frozenset(item.get(cls.RELEASED, {}).get("SS", [])))

    def expired(self, now: float) -> tuple[HeldCall, ...]:
        """The holds whose expiry is past at `now`."""
        return tuple(held for held in self.holds if held.until < now)

    def holds_call(self, hold_id: str) -> bool:
        return any(held.hold_id == hold_id for held in self.holds)

    @staticmethod
    def counters(day: str) -> tuple[str, str, str, str]:
        """The names of the month's USD and tokens, and of `day`'s."""
        return "usd", "tokens", f"d{day}_usd", f"d{day}_tokens"

    @classmethod
    def hold_name(cls, hold_id: str) -> str:
        return cls.HOLD_PREFIX + hold_id

    @staticmethod
    def hold_value(charge: Charge, day: str, until: float) -> dict[str, Any]:
        """A hold's map, as stored."""
        usd, tokens = number_value(charge.usd), {"N": str(charge.tokens)}
        return {"M": {"usd": usd, "tokens": tokens, "day": {"S": day}, "until": {"N": str(int(until))}}}


def _held_call(hold_id: str, value: Mapping[str, Any]) -> HeldCall:
    charge = Charge(Decimal(value["usd"]["N"]), int(value["tokens"]["N"]))
    return HeldCall(hold_id, value["day"]["S"], charge, float(value.get("until", {}).get("N", "0")))


class LimitsItem:
    """A caller's `limits` item: per limit, a number overrides the default, NULL is no limit, absent keeps it."""

    PERIOD = "limits"
    NAMES = ("daily_usd", "monthly_usd", "daily_tokens", "monthly_tokens")

    @classmethod
    def key(cls, caller: str) -> dict[str, Any]:
        return item_key(caller, cls.PERIOD)

    @staticmethod
    def decode(item: Mapping[str, Any], defaults: Limits) -> Limits:
        """The caller's limits: `defaults`, overridden by the item (an empty one for a caller with none)."""

        def override(name: str, kind: type[Decimal] | type[int]) -> Any:
            value = item.get(name)
            if value is None:
                return getattr(defaults, name)
            if value.get("NULL"):
                return None
            return kind(value["N"])

        return Limits(**{name: override(name, Decimal if name.endswith("usd") else int) for name in LimitsItem.NAMES})

    @staticmethod
    def value(limit: Decimal | int | None) -> dict[str, Any]:
        """One override, as stored: a number, or NULL for no limit."""
        return {"NULL": True} if limit is None else number_value(limit)


def number_value(value: Decimal | int | float) -> dict[str, str]:
    return {"N": format(Decimal(str(value)), "f")}


def _number(item: Mapping[str, Any], name: str) -> Decimal:
    value = item.get(name, {}).get("N")
    return Decimal(value) if value is not None else Decimal(0)


# -- the store ------------------------------------------------------------------------------------------------------

# Each limit's counter, as the writes below name it: the month's and the day's USD and tokens.
_COUNTER = {
    ("monthly", "USD"): "#usd",
    ("daily", "USD"): "#dusd",
    ("monthly", "tokens"): "#tok",
    ("daily", "tokens"): "#dtok",
}
_ADD_COUNTERS = ("#usd :usd", "#tok :tok", "#dusd :usd", "#dtok :tok")


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
        self.clock = clock
        self._limits_max_age = limits_max_age_seconds
        self._timeout = timeout_seconds
        self._client = client
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

    def limits_for(self, caller: str) -> Limits:
        """The defaults, overridden by the caller's `limits` item (read at most once per `limits_max_age`)."""
        held = self._limits.get(caller)
        if held is not None and time.monotonic() - held[1] < self._limits_max_age:
            return held[0]
        item = self._call("get_item", TableName=self.table, Key=LimitsItem.key(caller)).get("Item")
        limits = LimitsItem.decode(item or {}, self.defaults)
        if len(self._limits) >= MAX_CACHED_CALLERS:
            self._limits.clear()
        self._limits[caller] = (limits, time.monotonic())
        return limits

    def reserve(self, caller: str, charge: Charge, *, seconds: float, limits: Limits | None = None) -> Hold:
        """Hold `charge` for a call of at most `seconds`; BudgetExceeded when a limit has no room for it."""
        limits = limits if limits is not None else self.limits_for(caller)
        now = self.clock()
        month, day = periods(now)
        rules = rules_for(limits, charge)
        refuse_if_never_fits(rules)
        hold_id = uuid.uuid4().hex[:16]
        values = {
            ":hold": MonthItem.hold_value(charge, day, now + seconds + HOLD_GRACE_SECONDS),
            ":exp": {"N": str(int(now + KEEP_MONTHS_SECONDS))},
        }
        conditions = ["attribute_not_exists(#hold)"]  # so that a repeat of a write that went through adds nothing
        for index, rule in enumerate(rules):
            counter = _COUNTER[rule.period, rule.unit]
            conditions.append(f"(attribute_not_exists({counter}) OR {counter} <= :room{index})")
            values[f":room{index}"] = number_value(rule.limit - rule.amount)
        for attempt in (1, 2):
            try:
                item = self._add(
                    caller,
                    month,
                    day,
                    charge,
                    set=["#hold = :hold", "#exp = if_not_exists(#exp, :exp)"],
                    condition=" AND ".join(conditions),
                    names={"#hold": MonthItem.hold_name(hold_id), "#exp": MonthItem.EXPIRES_AT},
                    values=values,
                    returns="ALL_NEW",
                )
            except _NoRoom as full:
                found = MonthItem.from_item(full.item, day)
                if found.holds_call(hold_id):  # a timed-out first try had gone through
                    return Hold(caller, month, day, hold_id, charge, _holds(caller, month, found.expired(now)))
                expired = _holds(caller, month, found.expired(now))
                if attempt == 2 or not expired:  # room may be held by calls that crashed: release theirs once
                    raise exceeded(rules, found.spend, now) from None
                self._release_expired(expired)
                continue
            expired = _holds(caller, month, MonthItem.from_item(item, day).expired(now))
            return Hold(caller, month, day, hold_id, charge, expired)
        raise AssertionError("unreachable")

    def settle(self, hold: Hold, actual: Charge) -> Spend:
        """Replace the hold by what the call cost, then release the expired holds its reservation saw;
        BudgetUnavailable when the table could not be written."""
        spend = self._settle_once(hold, actual)
        self._release_expired(hold.expired)
        return spend

    def _settle_once(self, hold: Hold, actual: Charge) -> Spend:
        """One settle, whatever happened meanwhile: each of its writes applies at most once."""
        difference = Charge(actual.usd - hold.charge.usd, actual.tokens - hold.charge.tokens)
        where = (hold.caller, hold.month, hold.day)
        try:
            item = self._add(
                *where,
                difference,
                remove=["#hold"],
                condition="attribute_exists(#hold)",
                names={"#hold": MonthItem.hold_name(hold.hold_id)},
            )
        except _NoRoom as gone:
            found = MonthItem.from_item(gone.item, hold.day)
            if hold.hold_id not in found.released:
                return found.spend  # a timed-out first try had gone through: settled
            # The hold expired and another call released it: add the whole cost, once (the id leaves the set).
            try:
                item = self._add(
                    *where,
                    actual,
                    delete=["#released :ids"],
                    condition="contains(#released, :id)",
                    names={"#released": MonthItem.RELEASED},
                    values={":ids": {"SS": [hold.hold_id]}, ":id": {"S": hold.hold_id}},
                )
            except _NoRoom as done:
                return MonthItem.from_item(done.item, hold.day).spend
        return MonthItem.from_item(item, hold.day).spend

    def _release_expired(self, expired: Sequence[Hold]) -> None:
        """Give back what expired holds kept; each at most once, whoever else is releasing it."""
        for hold in expired[:MAX_SWEEPS_PER_CALL]:
            try:
                # the id is noted as released, so that a late settle of the same call adds its whole cost
                self._add(
                    hold.caller,
                    hold.month,
                    hold.day,
                    Charge(-hold.charge.usd, -hold.charge.tokens),
                    add=["#released :ids"],
                    remove=["#hold"],
                    condition="attribute_exists(#hold)",
                    names={"#hold": MonthItem.hold_name(hold.hold_id), "#released": MonthItem.RELEASED},
                    values={":ids": {"SS": [hold.hold_id]}},
                    returns="NONE",
                )
            except (_NoRoom, BudgetUnavailable):
                continue  # released by another call already, or left for the next one
            logger.info("expired budget hold released", held_usd=float(hold.charge.usd))

    def _add(
        self,
        caller: str,
        month: str,
        day: str,
        amount: Charge,
        *,
        condition: str,
        names: dict[str, str],
        values: dict[str, Any] | None = None,
        returns: str = "UPDATED_NEW",
        add: Sequence[str] = (),
        set: Sequence[str] = (),
        remove: Sequence[str] = (),
        delete: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Add `amount` to the month's and the day's counters, with the other clauses given, all only if `condition`
        holds (else _NoRoom, with the item as it was)."""
        month_usd, month_tokens, day_usd, day_tokens = MonthItem.counters(day)
        counters = {"#usd": month_usd, "#tok": month_tokens, "#dusd": day_usd, "#dtok": day_tokens}
        answer = self._call(
            "update_item",
            TableName=self.table,
            Key=item_key(caller, month),
            UpdateExpression=update_expression(add=[*_ADD_COUNTERS, *add], set=set, remove=remove, delete=delete),
            ConditionExpression=condition,
            ExpressionAttributeNames=counters | names,
            ExpressionAttributeValues={":usd": number_value(amount.usd), ":tok": {"N": str(amount.tokens)}}
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


def _holds(caller: str, month: str, calls: Sequence[HeldCall]) -> tuple[Hold, ...]:
    return tuple(Hold(caller, month, call.day, call.hold_id, call.charge) for call in calls)


class _Transient(Exception):
    """A failure another attempt within this call may not meet (a timeout, a dropped connection, throttling)."""

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
    """botocore's failures, as errors.py translates them: BudgetUnavailable (_Transient when another try within this
    call may pass); a failed condition, _NoRoom."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        item = errors.failed_condition(exc)
        if item is not None:
            raise _NoRoom(item) from None
        code = errors.dynamodb_error_code(exc)
        if code is not None:
            logger.warning("budget table error", error_code=code)
        else:
            logger.warning("budget table unreachable", error_type=type(exc).__name__)
        unavailable = errors.from_budget_table(exc)
        if errors.budget_table_retry_within_call(exc):
            raise _Transient(code or type(exc).__name__, unavailable) from None
        raise unavailable from None
