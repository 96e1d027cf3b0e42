"""The budget table itself, against moto_server's DynamoDB, on a clock the tests move: periods, holds, overrides."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from lambda_chat.budget import Charge, Limits
from lambda_chat.budget_store import BudgetStore
from lambda_chat.errors import BudgetExceeded
from local.budget import clear_limits, report, set_limits
from local.moto import MotoServer

CALL = Charge(Decimal("0.001"), 100)


class Clock:
    def __init__(self, when: str) -> None:
        self.now = datetime.fromisoformat(when).replace(tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def make_store(moto_server: MotoServer) -> Callable[..., BudgetStore]:
    table = f"lambda-chat-budgets-{uuid.uuid4().hex[:8]}"
    moto_server.create_budget_table(table)

    def make(limits: Limits, clock: Clock | None = None) -> BudgetStore:
        options = {"clock": clock} if clock is not None else {}
        return BudgetStore(table, limits, limits_max_age_seconds=0, client=moto_server.client("dynamodb"), **options)

    return make


def test_a_full_day_refuses_until_midnight_utc_and_the_next_day_has_room(
    make_store: Callable[..., BudgetStore],
) -> None:
    # Given a daily budget of two calls, spent on Dec 31 just before midnight
    clock = Clock("2026-12-31T23:59:30")
    store = make_store(Limits(daily_usd=Decimal("0.002")), clock)
    for _ in range(2):
        store.settle(store.reserve("k", CALL, seconds=10), CALL)
    # Then a third call is refused until midnight, 30 s away
    with pytest.raises(BudgetExceeded) as refused:
        store.reserve("k", CALL, seconds=10)
    assert refused.value.retry_after == "31" and "the daily budget" in refused.value.message
    assert "resets at 2027-01-01T00:00:00Z" in refused.value.message
    # When the day (and the month, and the year) rolls over
    clock.advance(31)
    hold = store.reserve("k", CALL, seconds=10)
    # Then the new month's item holds the call, and December's spend is kept as it was
    assert (hold.month, hold.day) == ("2027-01", "01")
    store.settle(hold, Charge(Decimal("0.0004"), 40))
    assert report(store, "k")["spent"] == {
        "today_usd": 0.0004,
        "month_usd": 0.0004,
        "today_tokens": 40,
        "month_tokens": 40,
    }
    clock.advance(-31)
    assert report(store, "k")["spent"]["month_usd"] == 0.002


def test_a_full_month_names_the_month_and_retries_after_its_last_day(make_store: Callable[..., BudgetStore]) -> None:
    clock = Clock("2027-02-27T12:00:00")  # February 2027 has 28 days
    store = make_store(Limits(daily_usd=Decimal("1"), monthly_usd=Decimal("0.001")), clock)
    store.settle(store.reserve("k", CALL, seconds=10), CALL)
    with pytest.raises(BudgetExceeded) as refused:
        store.reserve("k", CALL, seconds=10)
    assert "the monthly budget" in refused.value.message and "resets at 2027-03-01T00:00:00Z" in refused.value.message
    assert refused.value.retry_after == str(int(1.5 * 86_400) + 1)


def test_days_are_counted_apart_within_the_month(make_store: Callable[..., BudgetStore]) -> None:
    clock = Clock("2026-12-01T10:00:00")
    store = make_store(Limits(daily_tokens=150), clock)
    store.settle(store.reserve("k", CALL, seconds=10), CALL)
    with pytest.raises(BudgetExceeded):
        store.reserve("k", CALL, seconds=10)  # 100 spent + 100 more > 150 today
    clock.advance(86_400)
    store.settle(store.reserve("k", CALL, seconds=10), Charge(Decimal("0.0005"), 60))
    shown = report(store, "k")
    assert shown["spent"]["today_tokens"] == 60 and shown["spent"]["month_tokens"] == 160


def test_a_hold_left_by_a_crashed_call_expires_and_is_released_once(make_store: Callable[..., BudgetStore]) -> None:
    # Given a budget with room for one call, held by a call whose container crashed (never settled)
    clock = Clock("2026-12-02T08:00:00")
    store = make_store(Limits(daily_usd=Decimal("0.0015")), clock)
    store.reserve("k", CALL, seconds=30)
    with pytest.raises(BudgetExceeded):
        store.reserve("k", CALL, seconds=30)
    # When the hold outlives its call's deadline and the grace after it (30 s + 60 s)
    clock.advance(91)
    hold = store.reserve("k", CALL, seconds=30)
    # Then the next call gets the room, and only its own hold is left
    assert report(store, "k")["calls_in_flight"] == 1
    store.settle(hold, Charge(Decimal("0.0002"), 20))
    assert report(store, "k")["spent"]["today_usd"] == 0.0002 and report(store, "k")["calls_in_flight"] == 0


def test_an_expired_hold_seen_by_a_later_call_is_released_after_it(make_store: Callable[..., BudgetStore]) -> None:
    clock = Clock("2026-12-02T08:00:00")
    store = make_store(Limits(), clock)  # no limit: the crashed hold is cleaned up by the next settle
    store.reserve("k", CALL, seconds=5)
    clock.advance(70)
    hold = store.reserve("k", CALL, seconds=5)
    assert len(hold.expired) == 1
    store.settle(hold, CALL)
    shown = report(store, "k")
    assert shown["calls_in_flight"] == 0 and shown["spent"]["month_usd"] == 0.001


def test_a_settle_after_its_hold_was_released_adds_the_whole_cost(make_store: Callable[..., BudgetStore]) -> None:
    # Given a slow call whose hold expired and was released by another call meanwhile
    clock = Clock("2026-12-02T08:00:00")
    store = make_store(Limits(), clock)
    slow = store.reserve("k", CALL, seconds=1)
    clock.advance(62)
    other = store.reserve("k", CALL, seconds=1)
    store.settle(other, Charge(Decimal("0.0001"), 10))
    assert report(store, "k")["spent"]["month_usd"] == 0.0001
    # When the slow call settles at last
    store.settle(slow, Charge(Decimal("0.0003"), 30))
    # Then its actual cost is added (not the difference from a hold that is gone)
    assert report(store, "k")["spent"] == {
        "today_usd": 0.0004,
        "month_usd": 0.0004,
        "today_tokens": 40,
        "month_tokens": 40,
    }


def test_concurrent_reserves_never_pass_more_than_the_room(make_store: Callable[..., BudgetStore]) -> None:
    store = make_store(Limits(monthly_usd=Decimal("0.0105")))
    passed, refused = [], []
    start = threading.Barrier(50)

    def reserve() -> None:
        start.wait()
        try:
            passed.append(store.reserve("k", CALL, seconds=30))
        except BudgetExceeded:
            refused.append(1)

    threads = [threading.Thread(target=reserve) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert (len(passed), len(refused)) == (10, 40)
    assert report(store, "k")["calls_in_flight"] == 10 and report(store, "k")["held_usd"] == 0.01


def test_overrides_set_and_cleared(make_store: Callable[..., BudgetStore]) -> None:
    store = make_store(Limits(daily_usd=Decimal("5"), monthly_tokens=1000))
    set_limits(store, "k", daily_usd=Decimal("0.5"), monthly_tokens=None, daily_tokens=300)
    assert store.limits_for("k") == Limits(daily_usd=Decimal("0.5"), monthly_tokens=None, daily_tokens=300)
    assert store.limits_for("other") == Limits(daily_usd=Decimal("5"), monthly_tokens=1000)
    clear_limits(store, "k")
    assert store.limits_for("k") == Limits(daily_usd=Decimal("5"), monthly_tokens=1000)


def test_make_budget_sets_overrides_and_shows_the_spend(
    make_store: Callable[..., BudgetStore],
    moto_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from local import budget as cli

    store = make_store(Limits())
    for name, value in moto_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DEFAULT_MONTHLY_BUDGET_USD", "100")
    store.settle(store.reserve("key-1", CALL, seconds=10), Charge(Decimal("0.25"), 2500))
    # When the operator sets a daily budget and lifts the monthly token limit for one caller
    assert cli.main(["key-1", "--table", store.table, "--daily", "5", "--monthly-tokens", "none"]) == 0
    shown = json.loads(capsys.readouterr().out)
    # Then the override is stored, and the caller's limits (default included) and spend are shown
    assert store.limits_for("key-1") == Limits(daily_usd=Decimal(5), monthly_tokens=None)
    assert shown["limits"] == {"daily_usd": 5.0, "monthly_usd": 100.0, "daily_tokens": None, "monthly_tokens": None}
    assert shown["spent"]["today_usd"] == 0.25 and shown["spent"]["month_tokens"] == 2500
    # And `default` drops an override again, leaving the others
    assert cli.main(["key-1", "--table", store.table, "--daily", "default"]) == 0
    assert json.loads(capsys.readouterr().out)["limits"]["daily_usd"] is None
    with pytest.raises(SystemExit, match="not a number"):
        cli.main(["key-1", "--table", store.table, "--daily", "five"])


class LateAnswers:
    """A DynamoDB client whose first reservation (a write after which the item holds one more hold) is applied and
    then answered too late (a read timeout)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.late = 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_item(self, **request: Any) -> Any:
        from botocore.exceptions import ReadTimeoutError

        before = self._holds(request)
        answer = self._client.update_item(**request)
        if self.late and len(self._holds(request)) > len(before):
            self.late -= 1
            raise ReadTimeoutError(endpoint_url="http://budget-table")
        return answer

    def _holds(self, request: dict[str, Any]) -> set[str]:
        """The holds of the item the write is for, as it is now."""
        found = self._client.get_item(TableName=request["TableName"], Key=request["Key"], ConsistentRead=True)
        return {name for name in found.get("Item", {}) if name.startswith("hold:")}


def test_a_reservation_whose_answer_timed_out_is_not_held_twice(moto_server: MotoServer) -> None:
    # Given a reservation that DynamoDB applied but whose answer timed out
    table = f"lambda-chat-budgets-{uuid.uuid4().hex[:8]}"
    moto_server.create_budget_table(table)
    client = LateAnswers(moto_server.client("dynamodb"))
    store = BudgetStore(table, Limits(), limits_max_age_seconds=0, client=client)  # no limit: only the hold guards
    # When it is tried again (the retry finds its own hold) and settled
    hold = store.reserve("k", CALL, seconds=10)
    assert client.late == 0 and report(store, "k")["calls_in_flight"] == 1
    store.settle(hold, Charge(Decimal("0.0004"), 40))
    # Then the call is counted once: its cost, and nothing held
    shown = report(store, "k")
    assert shown["spent"]["today_usd"] == 0.0004 and shown["spent"]["today_tokens"] == 40
    assert shown["calls_in_flight"] == 0
