"""Budgets without a table: estimates, periods, and how a spent budget is answered."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from lambda_chat.budget import Budgets, Charge, Limits, period_ends, periods
from lambda_chat.budget_store import BudgetStore
from lambda_chat.calls import Outcome
from lambda_chat.errors import BudgetExceeded, InvalidRequest
from lambda_chat.faces import OPENAI
from lambda_chat.models import UpstreamRequest
from lambda_chat.pricing import PriceTable
from lambda_chat.settings import ConfigurationError, _load


def budgets(*, allow_unpriced: bool = False) -> Budgets:
    store = BudgetStore("unused", Limits(), client=object())
    return Budgets(store, PriceTable.from_json(None), fail_open=False, allow_unpriced=allow_unpriced)


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_the_estimate_is_the_prompt_bytes_over_three_plus_the_output_limit_at_the_models_price() -> None:
    # Given a chat request of 300 bytes of text and a 1000-token limit
    request = UpstreamRequest(model="gpt-4o-mini", messages=[{"role": "user", "content": "é" * 150}], max_tokens=1000)
    sent = json.dumps([request.messages, request.extra], ensure_ascii=False, separators=(",", ":")).encode()
    # Then its estimate errs high: a token per 3 bytes of what is sent, 4 per message, and the whole limit
    prompt = len(sent) // 3 + 4
    charge = budgets().estimate(request)
    assert charge.tokens == prompt + 1000
    assert charge.usd == (prompt * Decimal("0.15") + 1000 * Decimal("0.60")) / 1_000_000


def test_an_embedding_estimate_has_no_output_tokens() -> None:
    request = UpstreamRequest(model="text-embedding-3-small", extra={"input": ["a" * 300]}, kind="embeddings")
    charge = budgets().estimate(request)
    assert charge.usd == Decimal(charge.tokens) * Decimal("0.02") / 1_000_000 and charge.tokens > 100


class LimitsOnly:
    """A store stand-in: the caller's limits, and the charge it was asked to hold."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.held: list[Charge] = []

    def limits_for(self, caller: str) -> Limits:
        return self.limits

    def reserve(self, caller: str, charge: Charge, *, seconds: float, limits: Limits) -> Any:
        self.held.append(charge)
        return charge


@pytest.mark.parametrize(
    ("limits", "allowed", "refused"),
    [
        (Limits(daily_usd=Decimal(5)), False, True),
        (Limits(monthly_usd=Decimal(5)), True, False),
        (Limits(daily_tokens=1000), False, False),  # no USD budget to bypass: counted in tokens
        (Limits(), False, False),
    ],
)
def test_an_unpriced_model_is_refused_only_where_a_usd_budget_applies(
    limits: Limits, allowed: bool, refused: bool
) -> None:
    store = LimitsOnly(limits)
    keeper = Budgets(store, PriceTable.from_json(None), fail_open=False, allow_unpriced=allowed)  # type: ignore[arg-type]
    request = UpstreamRequest(model="llama-3-local", messages=[{"role": "user", "content": "hi"}], max_tokens=10)
    if refused:
        with pytest.raises(InvalidRequest) as raised:
            keeper.reserve("k", request, 30)
        assert raised.value.param == "model" and "MODEL_PRICES_JSON" in raised.value.message
        assert store.held == []
    else:
        keeper.reserve("k", request, 30)
        (charge,) = store.held
        assert charge.usd == 0 and charge.tokens > 10


def test_n_completions_and_media_parts_raise_the_estimate() -> None:
    # Given the same request as text, with n=3, and with an image part, parsed as the /v1 face parses them
    settings = _load({"OPENAI_API_KEY_SECRET_ID": "s"})
    text = [{"role": "user", "content": "describe"}]
    with_image = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "describe"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        }
    ]

    def estimate(**body: Any) -> Charge:
        return budgets().estimate(OPENAI.parse({"model": "gpt-4o-mini", "max_tokens": 100, **body}, settings))

    plain, three, image = estimate(messages=text), estimate(messages=text, n=3), estimate(messages=with_image)
    # Then n answers are n times the output, and an image part costs what its few bytes do not show
    assert 200 <= three.tokens - plain.tokens <= 203  # two more answers of up to 100 tokens (and `"n":3` itself)
    assert image.tokens - plain.tokens >= 1_500


def test_a_schema_whose_property_is_named_type_is_estimated_like_any_other_text() -> None:
    # Given a tool whose schema has a property named `type` (a dict) and a type union (a list), as SDKs send them
    settings = _load({"OPENAI_API_KEY_SECRET_ID": "s"})
    schema = {
        "type": "object",
        "properties": {"type": {"type": "string", "enum": ["a", "b"]}, "note": {"type": ["string", "null"]}},
        "required": ["type", "note"],
    }
    tool = {"type": "function", "function": {"name": "pick", "description": "Pick one", "parameters": schema}}
    request = OPENAI.parse({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "tools": [tool]},
                           settings)  # fmt: skip
    # When it is estimated, Then it is, with no media part counted
    assert request.media_parts == 0 and budgets().estimate(request).tokens > 0


@pytest.mark.parametrize(
    ("moment", "month", "day", "day_end", "month_end"),
    [
        ("2026-12-02T15:00:00", "2026-12", "02", "2026-12-03T00:00:00", "2027-01-01T00:00:00"),
        ("2028-02-29T23:59:59", "2028-02", "29", "2028-03-01T00:00:00", "2028-03-01T00:00:00"),
        ("2027-01-01T00:00:00", "2027-01", "01", "2027-01-02T00:00:00", "2027-02-01T00:00:00"),
    ],
)
def test_periods_are_utc_days_and_months(moment: str, month: str, day: str, day_end: str, month_end: str) -> None:
    assert periods(epoch(moment)) == (month, day)
    assert period_ends(epoch(moment)) == (epoch(day_end), epoch(month_end))


def test_a_spent_budget_is_a_final_429_in_openai_format() -> None:
    # Given a spent budget
    error = BudgetExceeded("the daily budget of this API key is used up", retry_after="3600")
    outcome = Outcome.failed(error, OPENAI)
    # Then OpenAI clients see a 429 with the code, told not to retry soon; Lambda's async retries skip it too
    assert outcome.status == 429 and outcome.retry_after == "3600"
    assert outcome.body["error"]["code"] == "budget_exceeded"
    assert outcome.told_not_to_retry is True and outcome.retry_later is False


@pytest.mark.parametrize(
    ("environment", "problem"),
    [
        ({"DEFAULT_DAILY_BUDGET_USD": "-1"}, "DEFAULT_DAILY_BUDGET_USD"),
        ({"DEFAULT_MONTHLY_BUDGET_TOKENS": "lots"}, "DEFAULT_MONTHLY_BUDGET_TOKENS"),
        ({"BUDGET_FAIL_MODE": "sometimes"}, "BUDGET_FAIL_MODE"),
    ],
)
def test_a_bad_budget_setting_fails_the_cold_start_naming_it(environment: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        _load({"OPENAI_API_KEY_SECRET_ID": "s", **environment})


def test_budget_settings_read_from_the_environment() -> None:
    settings = _load(
        {
            "OPENAI_API_KEY_SECRET_ID": "s",
            "BUDGET_TABLE": "t",
            "DEFAULT_DAILY_BUDGET_USD": "2.50",
            "DEFAULT_MONTHLY_BUDGET_USD": "",  # what the template passes for "no limit"
            "BUDGET_FAIL_MODE": "open",
        }
    )
    found: dict[str, Any] = {
        "table": settings.budget_table,
        "daily": settings.default_daily_budget_usd,
        "monthly": settings.default_monthly_budget_usd,
        "mode": settings.budget_fail_mode,
    }
    assert found == {"table": "t", "daily": Decimal("2.50"), "monthly": None, "mode": "open"}
