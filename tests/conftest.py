"""Fixtures shared by unit and integration tests (the plain helpers they share are in tests/support)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools.utilities import parameters

from lambda_chat import telemetry, wiring
from local.context import FakeLambdaContext
from local.moto import MotoServer


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
