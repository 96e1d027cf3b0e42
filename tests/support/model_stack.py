"""The e2e tests' stack: the function wired to moto_server and a real local model server (llama.cpp).

The fixtures that start the model server and build a ModelStack (`model_server`, `model_stack`) are in
tests/e2e/conftest.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from local.context import FakeLambdaContext
from local.model import LocalModelServer
from local.moto import MotoServer

MODEL_KEY = "sk-local-model-key-e2e"


@dataclass
class ModelStack:
    moto: MotoServer
    model: LocalModelServer
    secret_id: str

    def put_key(self, value: str) -> None:
        self.moto.secrets_client().put_secret_value(SecretId=self.secret_id, SecretString=value)

    def invoke(self, event: Any) -> Any:
        from lambda_chat.handler import lambda_handler

        return lambda_handler(event, FakeLambdaContext(timeout_ms=60_000))
