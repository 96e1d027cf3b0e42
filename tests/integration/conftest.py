"""Real servers on loopback: moto_server as Secrets Manager and a fake OpenAI HTTP server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parameters.secrets import SecretsProvider

from local.context import FakeLambdaContext
from local.moto import MotoServer
from local.serve import serving_in_background
from tests.conftest import point_at_moto
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
def stack(moto_server: MotoServer, openai_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    secret_id = point_at_moto(moto_server, monkeypatch, API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    openai_server.reset()
    openai_server.required_key = API_KEY

    reads: list[str] = []
    original: Callable[..., Any] = SecretsProvider._get

    def counting_get(self: SecretsProvider, name: str, **options: Any) -> Any:
        reads.append(name)
        return original(self, name, **options)

    monkeypatch.setattr(SecretsProvider, "_get", counting_get)
    yield Stack(moto_server, openai_server, secret_id, reads)
    openai_server.reset()


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
