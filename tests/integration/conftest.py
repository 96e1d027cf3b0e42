"""Real servers on loopback: moto_server as Secrets Manager and a fake OpenAI HTTP server.

The fixtures live here; what they build (Stack, Budgeted) and the plain helpers the tests share are in
tests/support/stack.py.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from lambda_chat.budget import Limits
from lambda_chat.budget_store import BudgetStore
from local.moto import MotoServer
from local.serve import serving_in_background
from tests.support.counting_proxy import SecretReadCounter
from tests.support.fake_openai import FakeOpenAI
from tests.support.moto_secret import point_at_moto
from tests.support.stack import API_KEY, Budgeted, Stack, caller_headers


@pytest.fixture(scope="session")
def openai_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


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


# -- budgets (a table of each test's own in moto_server) and callers ----------------------------------------


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
