"""The budget table's shapes without a table: update expressions, the month and limits items, botocore's failures."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

from lambda_chat import errors
from lambda_chat.budget import Budgets, Charge, Hold, Limits, Spend
from lambda_chat.budget_store import HeldCall, LimitsItem, MonthItem, update_expression
from lambda_chat.errors import BudgetUnavailable, DeadlineExceeded, UpstreamMalformed, UpstreamRejectedRequest
from lambda_chat.pricing import PriceTable

# -- update expressions ---------------------------------------------------------------------------------------------


def test_each_action_is_rendered_once_with_its_clauses_joined() -> None:
    # Given clauses for every action, two of them with more than one
    # When the expression is built
    expression = update_expression(
        add=["#usd :usd", "#released :ids"], set=["#hold = :hold"], remove=["#a", "#b"], delete=["#s :ids"]
    )
    # Then each action appears once, in DynamoDB's order of ADD, SET, REMOVE, DELETE
    assert expression == "ADD #usd :usd, #released :ids SET #hold = :hold REMOVE #a, #b DELETE #s :ids"


def test_actions_without_clauses_are_left_out() -> None:
    # Given only ADD and REMOVE clauses, Then no empty SET or DELETE appears, and no fragment is left open
    assert update_expression(add=["#usd :usd"], remove=["#hold"]) == "ADD #usd :usd REMOVE #hold"
    assert update_expression(set=["#a0 = :v0"]) == "SET #a0 = :v0"


def test_an_update_with_no_clause_or_a_bare_string_is_refused() -> None:
    # Given nothing to do, Then no empty expression is sent
    with pytest.raises(ValueError, match="at least one clause"):
        update_expression()
    # Given one string where a list of clauses belongs, Then it is refused (not split into characters)
    with pytest.raises(TypeError):
        update_expression(remove="#hold")


# -- the month item -------------------------------------------------------------------------------------------------


def hold_map(usd: str, tokens: int, day: str, until: int) -> dict[str, Any]:
    return MonthItem.hold_value(Charge(Decimal(usd), tokens), day, until)


def test_a_month_item_reads_the_days_and_the_months_spend() -> None:
    # Given an item with the month's counters and two days' counters
    item = {
        "usd": {"N": "0.5"},
        "tokens": {"N": "900"},
        "d01_usd": {"N": "0.2"},
        "d01_tokens": {"N": "300"},
        "d02_usd": {"N": "0.3"},
        "d02_tokens": {"N": "600"},
    }
    # When it is read for day 02, Then the spend is that day's and the month's
    assert MonthItem.from_item(item, "02").spend == Spend(Decimal("0.3"), Decimal("0.5"), 600, 900)
    # And a day with nothing spent, or an item with nothing in it, counts as zero
    assert MonthItem.from_item(item, "03").spend == Spend(Decimal(0), Decimal("0.5"), 0, 900)
    assert MonthItem.from_item({}, "03") == MonthItem(Spend(Decimal(0), Decimal(0), 0, 0))


def test_a_month_item_reads_its_holds_released_ids_and_which_holds_expired() -> None:
    # Given two holds, one past its expiry, and a released id
    item = {
        "hold:aaaa": hold_map("0.001", 100, "02", until=1_000),
        "hold:bbbb": hold_map("0.002", 200, "01", until=2_000),
        "released": {"SS": ["cccc"]},
        "caller": {"S": "k"},
    }
    # When it is read
    read = MonthItem.from_item(item, "02")
    # Then each hold is typed, with its own day, and the released ids are a set
    assert set(read.holds) == {
        HeldCall("aaaa", "02", Charge(Decimal("0.001"), 100), 1_000.0),
        HeldCall("bbbb", "01", Charge(Decimal("0.002"), 200), 2_000.0),
    }
    assert read.released == frozenset({"cccc"}) and read.holds_call("aaaa") and not read.holds_call("cccc")
    # And at 1500, only the first has expired; at 1000 exactly, none has
    assert [held.hold_id for held in read.expired(1_500)] == ["aaaa"]
    assert read.expired(1_000) == ()


def test_a_hold_is_stored_as_it_is_read_back() -> None:
    # Given a hold written as the store writes it
    value = MonthItem.hold_value(Charge(Decimal("0.000123"), 45), "07", 1_234.9)
    # Then its numbers are plain decimals (no exponent), its expiry whole seconds, and it reads back the same
    assert value == {"M": {"usd": {"N": "0.000123"}, "tokens": {"N": "45"}, "day": {"S": "07"}, "until": {"N": "1234"}}}
    (held,) = MonthItem.from_item({MonthItem.hold_name("x1"): value}, "07").holds
    assert held == HeldCall("x1", "07", Charge(Decimal("0.000123"), 45), 1_234.0)


# -- the limits item ------------------------------------------------------------------------------------------------


def test_a_limits_item_overrides_the_defaults_limit_by_limit() -> None:
    # Given defaults for three limits, and an item with a number, a NULL and nothing else
    defaults = Limits(daily_usd=Decimal(5), monthly_usd=Decimal(100), monthly_tokens=1_000)
    item = {"daily_usd": LimitsItem.value(Decimal("0.5")), "monthly_tokens": LimitsItem.value(None)}
    # Then the number overrides, NULL is no limit, and absent attributes keep the defaults
    assert LimitsItem.decode(item, defaults) == Limits(
        daily_usd=Decimal("0.5"), monthly_usd=Decimal(100), daily_tokens=None, monthly_tokens=None
    )
    assert LimitsItem.decode({}, defaults) == defaults
    assert LimitsItem.decode({"daily_tokens": {"N": "300"}}, Limits()).daily_tokens == 300


# -- botocore's failures (errors.py) --------------------------------------------------------------------------------


def client_error(code: str, item: dict[str, Any] | None = None) -> ClientError:
    response: dict[str, Any] = {"Error": {"Code": code, "Message": "m"}}
    if item is not None:
        response["Item"] = item
    return ClientError(response, "UpdateItem")


@pytest.mark.parametrize(
    ("exc", "again", "reason"),
    [
        (client_error("ThrottlingException"), True, "the budget table is throttled"),
        (client_error("InternalServerError"), True, "the budget table failed"),
        (client_error("ResourceNotFoundException"), False, "the budget table does not exist"),
        (client_error("AccessDeniedException"), False, "the function may not use the budget table"),
        (client_error("SomethingNew"), False, "the budget table could not be used"),
        (ReadTimeoutError(endpoint_url="http://t"), True, "the budget table could not be reached"),
        (EndpointConnectionError(endpoint_url="http://t"), True, "the budget table could not be reached"),
        (NoCredentialsError(), False, "the budget table could not be reached"),
    ],
)
def test_budget_table_failures_are_translated_in_one_place(exc: Exception, again: bool, reason: str) -> None:
    # When a failed request is translated, Then it is a BudgetUnavailable saying why, retried within the call only
    # when another try may pass, and never a failed condition
    unavailable = errors.from_budget_table(exc)
    assert isinstance(unavailable, BudgetUnavailable) and unavailable.status == 503
    assert unavailable.message == f"{reason}; the request was not sent, retry later"
    assert errors.budget_table_retry_within_call(exc) is again
    assert errors.failed_condition(exc) is None


def test_a_failed_condition_gives_the_item_as_it_was() -> None:
    item = {"usd": {"N": "1"}}
    assert errors.failed_condition(client_error("ConditionalCheckFailedException", item)) == item
    assert errors.failed_condition(client_error("ConditionalCheckFailedException")) == {}
    assert errors.dynamodb_error_code(client_error("ThrottlingException")) == "ThrottlingException"
    assert errors.dynamodb_error_code(ReadTimeoutError(endpoint_url="http://t")) is None


# -- what a settle and a failed call count for (budget.py, with a store stand-in) ------------------------------------


class SettlesOnly:
    """A store stand-in that keeps what it was asked to settle."""

    def __init__(self) -> None:
        self.settled: list[Charge] = []

    def settle(self, hold: Hold, actual: Charge) -> Spend:
        self.settled.append(actual)
        return Spend(Decimal(0), Decimal(0), 0, 0)


ESTIMATE = Charge(Decimal("0.01"), 1_000)
HOLD = Hold("k", "2026-12", "02", "abcd", ESTIMATE)


def settled_by(step: str, argument: Any) -> Charge:
    store = SettlesOnly()
    budgets = Budgets(store, PriceTable.from_json(None), fail_open=False, allow_unpriced=False)  # type: ignore[arg-type]
    getattr(budgets, step)(HOLD, argument)
    (charge,) = store.settled
    return charge


@pytest.mark.parametrize(
    ("failure", "billed"),
    [
        (UpstreamRejectedRequest("bad model"), False),  # the upstream answered with an error status
        (BudgetUnavailable("down"), False),  # never reached
        (UpstreamMalformed("cut off"), True),  # the answer broke off
        (DeadlineExceeded("late"), True),
        (KeyError("a bug"), True),
    ],
)
def test_a_failed_call_settles_nothing_or_its_estimate_as_the_failure_says(failure: Exception, billed: bool) -> None:
    # When a call fails, Then what is settled is the estimate if the upstream may have billed it, else nothing
    assert settled_by("release", failure) == (ESTIMATE if billed else Charge(Decimal(0), 0))


def test_a_settle_is_the_cost_given_or_the_estimate_when_it_is_unknown() -> None:
    # Given the cost the caller worked out once, as the price table gave it
    cost = Charge.of(0.000123, 45)
    assert cost == Charge(Decimal("0.000123"), 45) and Charge.of(None, 7) == Charge(Decimal(0), 7)
    # Then it is what is settled; with no usage (None), the estimate is
    assert settled_by("settle", cost) == cost
    assert settled_by("settle", None) == ESTIMATE
