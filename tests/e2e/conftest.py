"""A real OpenAI-compatible server nobody on this project wrote: llama.cpp with Gemma 3 270M.

`make test` sets it up (`make model`); without it these tests fail, saying what is missing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.model import LocalModelServer
from local.moto import MotoServer
from tests.support.model_stack import MODEL_KEY, ModelStack
from tests.support.moto_secret import point_at_moto


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def model_server() -> Iterator[LocalModelServer]:
    """One server for the session. In embedding mode it serves /v1/embeddings too, and chat as before (llama.cpp
    answers a chat at temperature 0 with the same text and usage in both modes), so no second server is started."""
    server = LocalModelServer(api_key=MODEL_KEY, embedding=True).start()
    yield server
    server.stop()


@pytest.fixture
def model_stack(moto_server: MotoServer, model_server: LocalModelServer, monkeypatch: pytest.MonkeyPatch) -> ModelStack:
    secret_id = point_at_moto(moto_server, monkeypatch, MODEL_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", model_server.base_url)
    monkeypatch.setenv("DEFAULT_MODEL", model_server.alias)
    return ModelStack(moto_server, model_server, secret_id)
