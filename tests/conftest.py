"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities import parameters
from local.context import FakeLambdaContext

from lambda_chat.service import default_service
from lambda_chat.settings import get_settings

EVENTS = Path(__file__).resolve().parent.parent / "events"


def load_event(name: str) -> Any:
    return json.loads((EVENTS / name).read_text())


@pytest.fixture(autouse=True)
def fresh_container(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts as a cold container: no cached settings, service or secret."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_LOG", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY_SECRET_ID", "lambda-chat/openai-api-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    get_settings.cache_clear()
    default_service.cache_clear()
    parameters.clear_caches()
    yield
    get_settings.cache_clear()
    default_service.cache_clear()
    parameters.clear_caches()


@pytest.fixture
def context() -> FakeLambdaContext:
    return FakeLambdaContext()
