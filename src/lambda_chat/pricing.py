"""Estimated cost of a call, from a price table that configuration can replace without a code change.

Prices are USD per million tokens: input, cached input, output (reasoning tokens are
billed as output and are already inside `completion_tokens`). The defaults are
OpenAI's standard-tier list prices as published when this was written; set
MODEL_PRICES_JSON to override or extend them, e.g.
`{"gpt-4o-mini": {"input": 0.15, "cached_input": 0.075, "output": 0.6}}`.
A model matches its own entry or the longest entry it starts with
(`gpt-4o-mini-2024-07-18` is priced as `gpt-4o-mini`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    input: float
    cached_input: float
    output: float


DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.075, 0.60),
    "gpt-4o": Price(2.50, 1.25, 10.00),
    "gpt-4.1": Price(2.00, 0.50, 8.00),
    "gpt-4.1-mini": Price(0.40, 0.10, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.025, 0.40),
    "gpt-5": Price(1.25, 0.125, 10.00),
    "gpt-5-mini": Price(0.25, 0.025, 2.00),
    "gpt-5-nano": Price(0.05, 0.005, 0.40),
    "o3": Price(2.00, 0.50, 8.00),
    "o3-mini": Price(1.10, 0.55, 4.40),
    "o4-mini": Price(1.10, 0.275, 4.40),
    "gpt-3.5-turbo": Price(0.50, 0.50, 1.50),
    # Snapshots priced unlike the model they are named after (checked against genai-prices 0.2.3).
    "gpt-4o-2024-05-13": Price(5.00, 5.00, 15.00),
    "gpt-3.5-turbo-1106": Price(1.00, 1.00, 2.00),
    "gpt-3.5-turbo-0613": Price(1.50, 1.50, 2.00),
    # Embeddings bill input tokens only.
    "text-embedding-3-small": Price(0.02, 0.02, 0.0),
    "text-embedding-3-large": Price(0.13, 0.13, 0.0),
    "text-embedding-ada-002": Price(0.10, 0.10, 0.0),
}


class PriceTable:
    def __init__(self, prices: dict[str, Price]) -> None:
        # longest names first, so "gpt-4o-mini-..." matches "gpt-4o-mini" before "gpt-4o"
        self._prices = dict(sorted(prices.items(), key=lambda item: -len(item[0])))

    @classmethod
    def from_json(cls, text: str | None) -> PriceTable:
        """The defaults, overridden entry by entry by a JSON object; raises ValueError when malformed."""
        prices = dict(DEFAULT_PRICES)
        if text:
            document = json.loads(text)
            if not isinstance(document, dict):
                raise ValueError("must be a JSON object of model name to prices")
            for model, entry in document.items():
                if not isinstance(entry, dict) or not {"input", "output"} <= entry.keys():
                    raise ValueError(f"{model}: needs 'input' and 'output' (USD per million tokens)")
                values = [entry["input"], entry.get("cached_input", entry["input"]), entry["output"]]
                if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in values):
                    raise ValueError(f"{model}: prices must be non-negative numbers")
                prices[model] = Price(*(float(v) for v in values))
        return cls(prices)

    def price_of(self, model: str) -> Price | None:
        for name, price in self._prices.items():
            if model == name or model.startswith(name + "-"):
                return price
        return None

    def cost_usd(self, model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float | None:
        price = self.price_of(model)
        if price is None:
            return None
        cached = min(cached_tokens, prompt_tokens)
        dollars = (
            (prompt_tokens - cached) * price.input + cached * price.cached_input + completion_tokens * price.output
        ) / 1_000_000
        return round(dollars, 8)
