"""What a model costs and how much it may write, from tables that configuration can extend without a code change.

Prices are USD per million tokens: input, cached input, output (reasoning tokens are billed as output and are
already inside `completion_tokens`). The defaults are OpenAI's list prices as published when this was written, for
the standard tier and, where OpenAI offers them, the `priority` and `flex` tiers. MODEL_PRICES_JSON overrides or
extends them, e.g. `{"gpt-4o-mini": {"input": 0.15, "cached_input": 0.075, "output": 0.6, "priority": {"input":
0.25, "output": 1.0}}}`.

A model id is priced by an explicit rule, never by a shorter name that happens to begin it: its own entry, or, for a
dated snapshot (`gpt-4o-mini-2024-07-18`, `gpt-3.5-turbo-0125`), the entry of the model it is a snapshot of.
`gpt-5-pro` is not `gpt-5`, and `o3-pro` is not `o3`: each is priced by its own entry or not at all.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Price:
    input: float
    cached_input: float
    output: float


STANDARD = "default"
# What the request's `service_tier` names, as the tier it is billed at: "auto" runs at the project's default tier
# (the standard one, unless the project says otherwise; the answer then names the tier it ran at).
TIER_ALIASES = {None: STANDARD, "auto": STANDARD, "default": STANDARD}

DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.075, 0.60),
    "gpt-4o": Price(2.50, 1.25, 10.00),
    "gpt-4.1": Price(2.00, 0.50, 8.00),
    "gpt-4.1-mini": Price(0.40, 0.10, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.025, 0.40),
    "gpt-5": Price(1.25, 0.125, 10.00),
    "gpt-5-mini": Price(0.25, 0.025, 2.00),
    "gpt-5-nano": Price(0.05, 0.005, 0.40),
    "gpt-5-chat-latest": Price(1.25, 0.125, 10.00),
    "gpt-5-codex": Price(1.25, 0.125, 10.00),
    "gpt-5-pro": Price(15.00, 15.00, 120.00),
    "o1": Price(15.00, 7.50, 60.00),
    "o1-mini": Price(1.10, 0.55, 4.40),
    "o1-pro": Price(150.00, 150.00, 600.00),
    "o3": Price(2.00, 0.50, 8.00),
    "o3-mini": Price(1.10, 0.55, 4.40),
    "o3-pro": Price(20.00, 20.00, 80.00),
    "o4-mini": Price(1.10, 0.275, 4.40),
    "gpt-4-turbo": Price(10.00, 10.00, 30.00),
    "gpt-4": Price(30.00, 30.00, 60.00),
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

# The tiers OpenAI prices otherwise, for the models it offers them on; a tier a model is not listed under has no
# price (refused where a USD budget applies).
DEFAULT_TIER_PRICES: dict[str, dict[str, Price]] = {
    "priority": {
        "gpt-4o-mini": Price(0.25, 0.125, 1.00),
        "gpt-4o": Price(4.25, 2.125, 17.00),
        "gpt-4.1": Price(3.50, 0.875, 14.00),
        "gpt-4.1-mini": Price(0.70, 0.175, 2.80),
        "gpt-4.1-nano": Price(0.20, 0.05, 0.80),
        "gpt-5": Price(2.50, 0.25, 20.00),
        "gpt-5-mini": Price(0.45, 0.045, 3.60),
        "gpt-5-codex": Price(2.50, 0.25, 20.00),
        "o3": Price(3.50, 0.875, 14.00),
        "o4-mini": Price(2.00, 0.50, 8.00),
    },
    "flex": {
        "gpt-5": Price(0.625, 0.0625, 5.00),
        "gpt-5-mini": Price(0.125, 0.0125, 1.00),
        "gpt-5-nano": Price(0.025, 0.0025, 0.20),
        "o3": Price(1.00, 0.25, 4.00),
        "o4-mini": Price(0.55, 0.138, 2.20),
    },
}

# The most a model writes in one answer (its `max_completion_tokens` limit), where known: a call that does not name
# a limit is sent the lower of this and the function's ceiling, so the default never asks for more than it may. (A
# model not listed gets the ceiling; if the endpoint says the model writes less, that call is retried with less.)
MAX_OUTPUT_TOKENS: dict[str, int] = {
    "gpt-4o-mini": 16_384,
    "gpt-4o": 16_384,
    "gpt-4o-2024-05-13": 4_096,
    "gpt-4.1": 32_768,
    "gpt-4.1-mini": 32_768,
    "gpt-4.1-nano": 32_768,
    "gpt-5": 128_000,
    "gpt-5-mini": 128_000,
    "gpt-5-nano": 128_000,
    "gpt-5-chat-latest": 16_384,
    "gpt-5-codex": 128_000,
    "gpt-5-pro": 272_000,
    "o1": 100_000,
    "o1-mini": 65_536,
    "o1-pro": 100_000,
    "o3": 100_000,
    "o3-mini": 100_000,
    "o3-pro": 100_000,
    "o4-mini": 100_000,
    "chatgpt-4o-latest": 16_384,
    "gpt-4-turbo": 4_096,
    "gpt-4-turbo-preview": 4_096,
    "gpt-4-0125-preview": 4_096,
    "gpt-4-1106-preview": 4_096,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 4_096,
}

# A dated snapshot of a model: `<model>-2024-07-18`, or the older `<model>-0613`.
_SNAPSHOT = re.compile(
    r"(?P<model>.+)-(?:\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])|(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01]))"
)


def entry_for(model: str, table: dict[str, T]) -> T | None:
    """The entry of `model` itself, else of the model it is a dated snapshot of; never of a shorter name."""
    found = table.get(model)
    if found is not None:
        return found
    snapshot = _SNAPSHOT.fullmatch(model)
    return table.get(snapshot["model"]) if snapshot is not None else None


def max_output_tokens(model: str) -> int | None:
    return entry_for(model, MAX_OUTPUT_TOKENS)


def tier_of(service_tier: object) -> str | None:
    """The billing tier a `service_tier` value names; None when it is not a tier name."""
    if service_tier is None or isinstance(service_tier, str):
        return TIER_ALIASES.get(service_tier, service_tier)
    return None


class PriceTable:
    def __init__(self, prices: dict[str, Price], tiers: dict[str, dict[str, Price]] | None = None) -> None:
        self._tiers = {STANDARD: dict(prices), **{tier: dict(table) for tier, table in (tiers or {}).items()}}

    @classmethod
    def from_json(cls, text: str | None) -> PriceTable:
        """The defaults, overridden entry by entry by a JSON object; raises ValueError when malformed."""
        standard = dict(DEFAULT_PRICES)
        tiers = {tier: dict(table) for tier, table in DEFAULT_TIER_PRICES.items()}
        if text:
            document = json.loads(text)
            if not isinstance(document, dict):
                raise ValueError("must be a JSON object of model name to prices")
            for model, entry in document.items():
                standard[model] = _price(model, entry)
                for tier in ("priority", "flex"):
                    if tier in entry:
                        tiers[tier][model] = _price(f"{model}.{tier}", entry[tier])
        return cls(standard, tiers)

    def price_of(self, model: str, service_tier: object = None) -> Price | None:
        tier = tier_of(service_tier)
        table = self._tiers.get(tier) if tier is not None else None
        return entry_for(model, table) if table is not None else None

    def cost_usd(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        service_tier: object = None,
    ) -> float | None:
        price = self.price_of(model, service_tier)
        if price is None:
            return None
        cached = min(cached_tokens, prompt_tokens)
        dollars = (
            (prompt_tokens - cached) * price.input + cached * price.cached_input + completion_tokens * price.output
        ) / 1_000_000
        return round(dollars, 8)

    def call_cost(
        self,
        asked: tuple[str, object],
        answered: tuple[str | None, str | None],
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
    ) -> float | None:
        """What a call cost: priced as the model that answered (a dated snapshot may cost otherwise), else as the
        one asked for; at the tier the answer says it ran at, else the one asked for. `asked` and `answered` are
        (model, service tier) pairs."""
        (model, tier), (answered_model, answered_tier) = asked, answered
        if answered_model and self.price_of(answered_model, tier) is not None:
            model = answered_model
        if answered_tier is not None and self.price_of(model, answered_tier) is not None:
            tier = answered_tier
        return self.cost_usd(model, prompt_tokens, completion_tokens, cached_tokens, tier)


def _price(name: str, entry: object) -> Price:
    if not isinstance(entry, dict) or not {"input", "output"} <= entry.keys():
        raise ValueError(f"{name}: needs 'input' and 'output' (USD per million tokens)")
    values = [entry["input"], entry.get("cached_input", entry["input"]), entry["output"]]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1e6 for v in values):
        raise ValueError(f"{name}: prices must be non-negative numbers")
    return Price(*(float(v) for v in values))
