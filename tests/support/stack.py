"""The integration tests' stack (the function wired to moto_server and the fake OpenAI on loopback), its budget
table, and the plain helpers the tests use with them.

The fixtures that build a Stack and a Budgeted (`stack`, `budgets`) are in tests/integration/conftest.py.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from lambda_chat.budget import periods
from lambda_chat.budget_store import BudgetStore
from local.context import FakeLambdaContext
from local.moto import MotoServer
from tests.support.events import load_event
from tests.support.fake_openai import FakeOpenAI

API_KEY = "sk-test-canary-KEY-0123456789abcdef"


@dataclass
class Stack:
    """The function wired to the loopback servers, with a fresh secret of its own."""

    moto: MotoServer
    openai: FakeOpenAI
    secret_id: str
    secret_reads: list[str]

    def put_key(self, value: str) -> None:
        self.moto.secrets_client().put_secret_value(SecretId=self.secret_id, SecretString=value)

    def invoke(self, event: Any, *, timeout_ms: int = 30_000) -> Any:
        from lambda_chat.handler import lambda_handler

        return lambda_handler(event, FakeLambdaContext(timeout_ms=timeout_ms))


def wait_for(condition: Callable[[], object], seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# -- budgets (a table of each test's own in moto_server) and callers ----------------------------------------


@dataclass
class Budgeted:
    stack: Stack
    table: str
    store: BudgetStore

    def month_item(self, caller: str) -> dict[str, Any]:
        """The caller's item for this month, numbers as Decimal, holds as dicts."""
        month, _ = periods(time.time())
        found = self.stack.moto.client("dynamodb").get_item(
            TableName=self.table, Key={"caller": {"S": caller}, "period": {"S": month}}, ConsistentRead=True
        )
        return {name: _plain(value) for name, value in found.get("Item", {}).items()}

    def spent(self, caller: str) -> tuple[Decimal, int]:
        item = self.month_item(caller)
        return item.get("usd", Decimal(0)), int(item.get("tokens", 0))

    def holds(self, caller: str) -> list[dict[str, Any]]:
        return [value for name, value in self.month_item(caller).items() if name.startswith("hold:")]


def _plain(value: dict[str, Any]) -> Any:
    if "N" in value:
        return Decimal(value["N"])
    if "M" in value:
        return {key: _plain(inner) for key, inner in value["M"].items()}
    return next(iter(value.values()))


def reconfigure(monkeypatch: pytest.MonkeyPatch, **environment: str) -> None:
    """New settings for the next call: as a new container would read them."""
    from lambda_chat import wiring

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    wiring.reset()


def rest_event(body: dict[str, Any], key_id: str) -> dict[str, Any]:
    event = load_event("apigateway-rest.json")
    event["isBase64Encoded"] = False
    event["body"] = json.dumps(body)
    event["requestContext"]["identity"]["apiKeyId"] = key_id
    return event


def caller_headers(key_id: str) -> dict[str, str]:
    """What API Gateway tells the streaming app about the caller (the adapter passes it on as a header)."""
    return {"x-amzn-request-context": json.dumps({"identity": {"apiKeyId": key_id}, "requestId": uuid.uuid4().hex})}
