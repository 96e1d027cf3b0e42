"""The price table: a model's own entry, else the longest entry its name starts with."""

from __future__ import annotations

import pytest

from lambda_chat.pricing import PriceTable

TABLE = PriceTable.from_json(None)


@pytest.mark.parametrize(
    ("model", "usd_per_million"),
    [
        ("gpt-4o-mini", 0.15 + 0.60),
        ("gpt-4o-mini-2024-07-18", 0.15 + 0.60),  # a snapshot priced as its model
        ("gpt-4o-2024-08-06", 2.50 + 10.00),
        ("gpt-4o-2024-05-13", 5.00 + 15.00),  # a snapshot with prices of its own
        ("gpt-3.5-turbo-1106", 1.00 + 2.00),
        ("text-embedding-3-small", 0.02),
    ],
)
def test_a_model_is_priced_by_its_own_entry_or_its_longest_prefix(model: str, usd_per_million: float) -> None:
    assert TABLE.cost_usd(model, 1_000_000, 1_000_000) == pytest.approx(usd_per_million)


def test_an_unknown_model_has_no_price_and_an_override_wins() -> None:
    assert TABLE.cost_usd("my-fine-tune", 10, 10) is None
    custom = PriceTable.from_json('{"gpt-4o-mini": {"input": 1, "output": 2}}')
    assert custom.cost_usd("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(3.0)
