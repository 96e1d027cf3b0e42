"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities import parameters

from lambda_chat import telemetry, wiring
from local.context import FakeLambdaContext
from local.moto import MotoServer

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
    wiring.reset()
    parameters.clear_caches()
    yield
    wiring.reset()
    parameters.clear_caches()


@pytest.fixture
def context() -> FakeLambdaContext:
    return FakeLambdaContext()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto_server on loopback, serving a real Secrets Manager API for the whole session."""
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def metered(monkeypatch: pytest.MonkeyPatch) -> list[telemetry.CallFigures]:
    """What the function metered, call by call (a stream's figures are recorded when it ends)."""
    seen: list[telemetry.CallFigures] = []
    original = telemetry.record

    def record(call: telemetry.CallFigures) -> None:
        seen.append(call)
        original(call)

    monkeypatch.setattr(telemetry, "record", record)
    return seen


def the_call(metered: list[telemetry.CallFigures], timeout: float = 3.0) -> telemetry.CallFigures:
    """The one call's figures: a stream's are recorded when it ends, which may be just after the client is done."""
    deadline = time.monotonic() + timeout
    while not metered:
        assert time.monotonic() < deadline, f"no figures recorded in {timeout} s"
        time.sleep(0.02)
    assert len(metered) == 1, metered
    return metered[0]


def point_at_moto(moto: MotoServer, monkeypatch: pytest.MonkeyPatch, secret_value: str) -> str:
    """Point boto3 at moto_server and give the function a fresh secret; returns its name."""
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    secret_id = f"lambda-chat/test-{uuid.uuid4().hex[:8]}"
    moto.secrets_client().create_secret(Name=secret_id, SecretString=secret_value)
    monkeypatch.setenv("OPENAI_API_KEY_SECRET_ID", secret_id)
    return secret_id


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the fault matrix table when its tests ran."""
    matrix = sys.modules.get("tests.integration.test_fault_matrix")  # imported only if its tests were collected
    if matrix is None or not matrix.FAULT_TABLE:
        return
    FAULT_TABLE = matrix.FAULT_TABLE
    write = terminalreporter.write_line
    terminalreporter.section("fault matrix")
    write(f"{'fault':<40} {'expected':>8} {'observed':>8} {'elapsed ms':>10}  match")
    for name, expected, observed, elapsed_ms, _ in FAULT_TABLE:
        write(f"{name:<40} {expected:>8} {observed:>8} {elapsed_ms:>10.0f}  {'yes' if expected == observed else 'NO'}")
    matched = sum(1 for row in FAULT_TABLE if row[1] == row[2])
    write(f"{matched} of {len(FAULT_TABLE)} rows match")
