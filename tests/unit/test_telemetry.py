"""What each call adds to its metrics, and that calls served at the same time keep their lines apart."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import threading
from collections.abc import Iterator
from contextlib import redirect_stdout
from typing import Any

import pytest
from aws_lambda_powertools import Logger

from lambda_chat import telemetry


@pytest.fixture(autouse=True)
def no_metrics_left_over() -> Iterator[None]:
    telemetry.flush()
    yield
    telemetry.flush()


def emf_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"_aws"')]


def recorded(outcome: str) -> dict[str, Any]:
    output = io.StringIO()
    with redirect_stdout(output):
        telemetry.record(telemetry.CallFigures("streaming_api", "gpt-4o-mini", outcome, 12.5))
        telemetry.flush()
    [line] = emf_lines(output.getvalue())
    return line


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
    assert metrics["outcome"] == outcome


def powertools_document(metrics: telemetry.CallMetrics, timestamp_ms: int) -> dict[str, Any]:
    """What Powertools' EMF provider writes when told the same dimension sets and metrics, in the same order."""
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

    provider = AmazonCloudWatchEMFProvider(namespace=telemetry.NAMESPACE, service=telemetry.SERVICE_NAME)
    provider.set_timestamp(timestamp_ms)
    for dimension_set in metrics.dimension_sets:
        provider.add_dimensions(**dimension_set)
    for name, (unit, values) in metrics.metrics.items():
        for value in values:
            provider.add_metric(name=name, unit=unit, value=value)
    return dict(provider.serialize_metric_set())


@pytest.mark.parametrize(
    ("figures", "rare"),
    [
        (telemetry.CallFigures("api_gateway", "gpt-4o-mini", "success", 812.4, 790.1, 24, 19, 43, 0, 8, 1.5e-05), []),
        (telemetry.CallFigures("streaming_api", None, "BudgetExceeded", 3.0), ["BudgetStoreFailures"]),
        (telemetry.CallFigures("sqs", "gpt-4o", "UpstreamUnavailable", 40.0, 39.5), ["BudgetSettleFailures"] * 2),
    ],
)
def test_a_calls_metrics_line_is_the_document_powertools_writes(
    figures: telemetry.CallFigures, rare: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a call with these figures and rare events, whose metrics are seen as they are written
    written: list[telemetry.CallMetrics] = []
    original = telemetry.CallMetrics.document

    def document(self: telemetry.CallMetrics, timestamp_ms: int) -> dict[str, Any]:
        written.append(copy.deepcopy(self))
        return original(self, timestamp_ms)

    monkeypatch.setattr(telemetry.CallMetrics, "document", document)
    output = io.StringIO()
    with redirect_stdout(output):
        # When the call records them (its rare events counted as they happen) and its metrics are flushed
        for name in rare:
            telemetry.count(name)
        telemetry.record(figures)
        telemetry.flush()
    # Then its one line is what Powertools' EMF provider serializes when told the same
    [line], [metrics] = emf_lines(output.getvalue()), written
    assert line == json.loads(json.dumps(powertools_document(metrics, timestamp_ms=line["_aws"]["Timestamp"])))
    assert {"Requests", "Errors", "HandlerLatency", *rare} <= set(line)


def test_a_calls_line_is_written_once_when_a_task_it_started_flushes_first() -> None:
    # Given a call whose figures a task it started records and flushes (the task that ends a stream, in Lambda),
    # the call's own context still holding the same metrics
    async def call() -> None:
        telemetry.begin(Logger(service="lambda-chat"), correlation_id="call-1", trigger="streaming_api")

        async def end_the_stream() -> None:
            telemetry.record(telemetry.CallFigures("streaming_api", "gpt-4o-mini", "success", 21.2))
            telemetry.flush()

        await asyncio.ensure_future(end_the_stream())
        # When the call flushes its own metrics too, once the stream has ended
        telemetry.flush()

    output = io.StringIO()
    with redirect_stdout(output):
        asyncio.run(call())
    # Then the call has one metrics line
    assert [line["HandlerLatency"] for line in emf_lines(output.getvalue())] == [[21.2]]


def test_a_flush_writes_nothing_when_metrics_are_disabled_and_forgets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given metrics disabled, as make serve runs
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    output = io.StringIO()
    with redirect_stdout(output):
        telemetry.record(telemetry.CallFigures("http_api", None, "success", 1.0))
        telemetry.flush()
        monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED")
        # When the next call flushes with metrics enabled again
        telemetry.record(telemetry.CallFigures("http_api", None, "success", 2.0))
        telemetry.flush()
    # Then only that call's line is written: the first call's figures were dropped, not kept for later
    [line] = emf_lines(output.getvalue())
    assert line["Requests"] == [1] and line["HandlerLatency"] == [2.0]


CALLS = 50


def test_calls_in_threads_at_the_same_time_each_get_one_line_with_their_own_figures_and_keys() -> None:
    # Given 50 calls served at once in threads (make serve's /chat), each logging with its own caller
    sink = io.StringIO()
    log = Logger(service="telemetry-test", stream=sink)
    lines: list[str] = []
    output = _LineSink(lines)
    start = threading.Barrier(CALLS)

    def one_call(index: int) -> None:
        telemetry.begin(log, correlation_id=f"request-{index}", caller=f"caller-{index}")
        start.wait()
        telemetry.record(telemetry.CallFigures("http_api", None, "success", float(index)))
        log.info("chat completed")
        telemetry.flush()

    with redirect_stdout(output):
        threads = [threading.Thread(target=one_call, args=(index,)) for index in range(CALLS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    # Then there are 50 EMF lines, whole, each counting one request with its own latency
    metrics = [json.loads(line) for line in lines if line.startswith('{"_aws"')]
    assert sorted(line["HandlerLatency"][0] for line in metrics) == [float(index) for index in range(CALLS)]
    assert all(line["Requests"] == [1] for line in metrics)
    # And every log line carries its own call's keys
    logged = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert len(logged) == CALLS
    assert all(entry["correlation_id"] == "request-" + entry["caller"].removeprefix("caller-") for entry in logged)


def test_tasks_on_one_event_loop_keep_their_figures_and_keys_apart() -> None:
    # Given 50 requests of the app interleaved on one event loop, each yielding between its steps
    sink = io.StringIO()
    log = Logger(service="telemetry-test-tasks", stream=sink)
    output = io.StringIO()

    async def one_request(index: int) -> None:
        telemetry.begin(log, correlation_id=f"request-{index}", caller=f"caller-{index}")
        await asyncio.sleep(0)
        telemetry.record(telemetry.CallFigures("streaming_api", None, "success", float(index)))
        await asyncio.sleep(0)
        log.info("chat completed")
        telemetry.flush()

    async def serve() -> None:
        await asyncio.gather(*(one_request(index) for index in range(CALLS)))

    with redirect_stdout(output):
        asyncio.run(serve())
    # Then each request wrote one line of its own figures, and logged under its own keys
    metrics = emf_lines(output.getvalue())
    assert sorted(line["HandlerLatency"][0] for line in metrics) == [float(index) for index in range(CALLS)]
    logged = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert sorted(entry["caller"] for entry in logged) == sorted(f"caller-{index}" for index in range(CALLS))
    assert all(entry["correlation_id"] == "request-" + entry["caller"].removeprefix("caller-") for entry in logged)


class _LineSink(io.TextIOBase):
    """stdout for threads: records each write() as it comes, so a line split over two writes would show."""

    def __init__(self, lines: list[str]) -> None:
        self._lines = lines
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            if text.endswith("\n"):
                self._lines.extend(part for part in text.split("\n") if part)
            else:
                self._lines.append("PARTIAL:" + text)  # a line written in pieces: it fails the parse above
        return len(text)
