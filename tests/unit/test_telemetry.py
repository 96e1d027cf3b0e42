"""What each outcome adds to the invocation's metrics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lambda_chat import telemetry


@pytest.fixture(autouse=True)
def no_metrics_left_over() -> Iterator[None]:
    telemetry.metrics.clear_metrics()
    yield
    telemetry.metrics.clear_metrics()


def recorded(outcome: str) -> dict[str, list[float]]:
    telemetry.record(telemetry.CallFigures("streaming_api", "gpt-4o-mini", outcome, 12.5))
    return {name: entry["Value"] for name, entry in telemetry.metrics.metric_set.items()}


@pytest.mark.parametrize(
    ("outcome", "errors"),
    [("success", 0), ("ClientDisconnected", 0), ("UpstreamUnavailable", 1), ("DeadlineExceeded", 1)],
)
def test_a_client_that_stops_a_stream_is_not_an_error_of_ours(outcome: str, errors: int) -> None:
    # When a call ends with this outcome
    metrics = recorded(outcome)
    # Then it is one request, and an error only when the function or the upstream failed
    assert metrics["Requests"] == [1] and metrics["Errors"] == [errors]
    assert metrics["HandlerLatency"] == [12.5]
