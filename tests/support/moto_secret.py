"""Pointing the function at moto_server's Secrets Manager, with a secret of the test's own."""

from __future__ import annotations

import uuid

import pytest

from local.moto import MotoServer


def point_at_moto(moto: MotoServer, monkeypatch: pytest.MonkeyPatch, secret_value: str) -> str:
    """Point boto3 at moto_server and give the function a fresh secret; returns its name."""
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    secret_id = f"lambda-chat/test-{uuid.uuid4().hex[:8]}"
    moto.secrets_client().create_secret(Name=secret_id, SecretString=secret_value)
    monkeypatch.setenv("OPENAI_API_KEY_SECRET_ID", secret_id)
    return secret_id
