"""Real servers on loopback: moto_server as Secrets Manager and a fake OpenAI HTTP server."""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import openai
import pytest

from lambda_chat.budget import Limits, periods
from lambda_chat.budget_store import BudgetStore
from local.context import FakeLambdaContext
from local.moto import MotoServer
from local.serve import serving_in_background
from tests.conftest import load_event, point_at_moto
from tests.support.counting_proxy import SecretReadCounter
from tests.support.fake_openai import FakeOpenAI

API_KEY = "sk-test-canary-KEY-0123456789abcdef"


@pytest.fixture(scope="session")
def openai_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


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


@pytest.fixture
def stack(
    moto_server: MotoServer,
    openai_server: FakeOpenAI,
    secret_reads: SecretReadCounter,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    secret_id = point_at_moto(moto_server, monkeypatch, API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    openai_server.reset()
    openai_server.required_key = API_KEY

    secret_reads.reads.clear()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", secret_reads.endpoint)
    yield Stack(moto_server, openai_server, secret_id, secret_reads.reads)
    openai_server.reset()


@pytest.fixture(scope="session")
def secret_reads(moto_server: MotoServer) -> Iterator[SecretReadCounter]:
    """Secrets Manager for the function, through a pass-through that notes each read of a secret."""
    counter = SecretReadCounter(moto_server.endpoint).start()
    yield counter
    counter.stop()


@pytest.fixture
def idempotent(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """The stack with an idempotency table of this test's own."""
    table = f"lambda-chat-idempotency-{uuid.uuid4().hex[:8]}"
    stack.moto.create_idempotency_table(table)
    monkeypatch.setenv("IDEMPOTENCY_TABLE", table)
    return stack


@pytest.fixture
def base_url(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The OpenAI-compatible base URL of `make serve`'s app (the streaming function's), in this process."""
    monkeypatch.setenv("ALLOWED_MODELS", "gpt-4o-mini,gpt-4.1-mini")
    with serving_in_background() as url:
        yield f"{url}/v1"


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


@pytest.fixture
def logged() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The function's JSON log lines from here on (its logger keeps the stdout it first saw, so not capsys)."""
    from lambda_chat.handler import logger

    lines = io.StringIO()
    capture = logging.StreamHandler(lines)
    capture.setFormatter(logger.registered_formatter)
    logger.addHandler(capture)
    yield lambda: [json.loads(line) for line in lines.getvalue().splitlines()]
    logger.removeHandler(capture)


@pytest.fixture
def budgets(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Budgeted:
    table = f"lambda-chat-budgets-{uuid.uuid4().hex[:8]}"
    stack.moto.create_budget_table(table)
    monkeypatch.setenv("BUDGET_TABLE", table)
    monkeypatch.setenv("BUDGET_LIMITS_CACHE_SECONDS", "0")  # an override applies to the next call
    return Budgeted(stack, table, BudgetStore(table, Limits(), client=stack.moto.client("dynamodb")))


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


@pytest.fixture
def client_for(base_url: str) -> Iterator[Any]:
    clients: list[openai.OpenAI] = []

    def make(key_id: str, **options: Any) -> openai.OpenAI:
        options.setdefault("max_retries", 0)
        client = openai.OpenAI(
            base_url=base_url, api_key="sk-unused", default_headers=caller_headers(key_id), **options
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
