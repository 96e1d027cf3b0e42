"""The fuzz tests' stack: moto_server as Secrets Manager and a fake OpenAI, set up once per module.

Hypothesis runs thousands of examples inside one test function, so the servers cannot be per-test
fixtures. `tests/conftest.py`'s autouse `fresh_container` still starts each test function cold (and
points the function at its default secret); `fuzz_container` then points it at this stack, and the
container stays warm across that test's examples, as a real Lambda container would.

The fixtures live here; the configuration the function is fuzzed under, the tally and FuzzStack are in
tests/support/fuzz_stack.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from lambda_chat.budget import periods
from local.moto import MotoServer
from tests.support.fake_openai import FakeOpenAI
from tests.support.fuzz_stack import API_KEY, BUDGET_CALLERS, BUDGET_ENV, FUNCTION_ENV, TALLY, FuzzStack, fuzz_examples


@pytest.fixture(scope="module")
def fuzz_stack(moto_server: MotoServer) -> Iterator[FuzzStack]:
    """A fake OpenAI that answers every call with a completion, and a secret in moto holding its key."""
    openai = FakeOpenAI(required_key=API_KEY).start()
    secret_id = f"lambda-chat/fuzz-{uuid.uuid4().hex[:8]}"
    moto_server.secrets_client().create_secret(Name=secret_id, SecretString=API_KEY)
    env = {
        **moto_server.env(),
        **FUNCTION_ENV,
        "OPENAI_API_KEY_SECRET_ID": secret_id,
        "OPENAI_BASE_URL": openai.base_url,
    }
    yield FuzzStack(openai, env)
    openai.stop()


@pytest.fixture(scope="module")
def budget_env(moto_server: MotoServer) -> dict[str, str]:
    """A budget table of the module's own in moto_server, and the settings that turn budgets on with it.

    Each caller starts the month and the day with $1 spent: moto stores a sum under $0.000001 as "2E-7" and then
    fails (HTTP 500) to add to it, which real DynamoDB does not; a fresh table's first cheap calls would hit that.
    """
    table = f"lambda-chat-fuzz-budgets-{uuid.uuid4().hex[:8]}"
    moto_server.create_budget_table(table)
    month, day = periods(time.time())
    for caller in BUDGET_CALLERS:
        item = {"usd": "1", "tokens": "0", f"d{day}_usd": "1", f"d{day}_tokens": "0"}
        moto_server.client("dynamodb").put_item(
            TableName=table,
            Item={"caller": {"S": caller}, "period": {"S": month}, **{name: {"N": n} for name, n in item.items()}},
        )
    return {**BUDGET_ENV, "BUDGET_TABLE": table}


@pytest.fixture(autouse=True)
def fuzz_container(fresh_container: None, fuzz_stack: FuzzStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the cold start `fresh_container` gives every test, point the function at the fuzz stack."""
    for name, value in fuzz_stack.env.items():
        monkeypatch.setenv(name, value)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line saying how many events the fuzz tests generated, when they ran."""
    if TALLY.events:
        terminalreporter.write_line(f"fuzz: {TALLY.events} events (FUZZ_EXAMPLES={fuzz_examples()})")
    if TALLY.bodies:
        terminalreporter.write_line(f"fuzz: {TALLY.bodies} bodies posted (FUZZ_EXAMPLES={fuzz_examples()})")
