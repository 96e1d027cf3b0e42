"""The fuzz tests' configuration: the function's settings while fuzzed, how many examples to generate, and a tally.

The tests derive their expectations from these values; the fixtures that set the stack up (`fuzz_stack`,
`budget_env`, `fuzz_container`) are in tests/fuzz/conftest.py, which also prints the tally at the end of the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from tests.support.fake_openai import FakeOpenAI

API_KEY = "sk-fuzz-KEY-0123456789abcdef"

# The configuration the function runs under while fuzzed: the tests derive their expectations from
# these values (and from the request contract in README.md), never from the function's validator.
DEFAULT_MODEL = "gpt-4o-mini"
ALLOWED_MODELS = ("gpt-4o-mini", "gpt-4.1-nano")
MAX_PROMPT_CHARS = 4_000
MAX_MESSAGES = 12
MAX_TOKENS_CEILING = 512
MAX_BODY_BYTES = 65_536
FUNCTION_ENV = {
    "DEFAULT_MODEL": DEFAULT_MODEL,
    "ALLOWED_MODELS": ",".join(ALLOWED_MODELS),
    "MAX_PROMPT_CHARS": str(MAX_PROMPT_CHARS),
    "MAX_MESSAGES": str(MAX_MESSAGES),
    "MAX_TOKENS_CEILING": str(MAX_TOKENS_CEILING),
    "MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    "TOKEN_LIMIT_PARAMETER": "max_tokens",
    "IDEMPOTENCY_TABLE": "",  # off: an Idempotency-Key header is still validated, then ignored
    "TRACING_ENABLED": "false",
    # With a healthy stack no failure is retryable, so an EventBridge invoke must not raise either.
    "RAISE_RETRYABLE_ASYNC_FAILURES": "true",
}

DEFAULT_FUZZ_EXAMPLES = 10_000


def fuzz_examples() -> int:
    """FUZZ_EXAMPLES: how many examples each fuzz module generates (shared out among its own tests)."""
    raw = os.environ.get("FUZZ_EXAMPLES", "").strip() or str(DEFAULT_FUZZ_EXAMPLES)
    try:
        total = int(raw)
    except ValueError:
        raise pytest.UsageError(f"FUZZ_EXAMPLES must be a positive integer, not {raw!r}") from None
    if total < 1:
        raise pytest.UsageError(f"FUZZ_EXAMPLES must be a positive integer, not {raw!r}")
    return total


@dataclass
class Tally:
    """Events the fuzz tests handed to the handler, and bodies they posted to the local API, in this session."""

    events: int = 0
    bodies: int = 0


TALLY = Tally()


@dataclass
class FuzzStack:
    openai: FakeOpenAI
    env: dict[str, str]


# Budgets on, with limits no fuzzed call comes near: a 429 from them would be a bug (test_fuzz_bodies.py).
BUDGET_ENV = {"DEFAULT_DAILY_BUDGET_USD": "1000", "DEFAULT_MONTHLY_BUDGET_USD": "10000"}


BUDGET_CALLERS = ("streaming_api", "api_gateway_rest")  # who pays, in make serve's app: /v1, and /chat
