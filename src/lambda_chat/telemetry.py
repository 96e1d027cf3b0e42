"""A call's log line, metrics (CloudWatch EMF) and traces (X-Ray).

One EMF line per call, with three dimension sets: [service] for account-wide totals (what the alarms watch),
[service, model, trigger] and [service, model, outcome]. Names, units and values never carry content.

A call's metrics are kept as plain figures and written as the document Powertools' EMF provider writes (a unit
test holds the two equal). Through a provider of its own, a call's line took 60 µs here (the constructor lists
every unit, each `add_metric` validates and formats a debug message); this way it takes 19, serialised. Powertools
still writes the container's one ColdStart line.

Each call's metrics and log keys live in its own context (`contextvars`): the one call of a Lambda invocation, a
request's task in the streaming app, a worker thread of `make serve`'s /chat. Calls served at the same time never
count into each other's line or log under each other's keys, and each EMF line is written with one write.

Tracing is off unless TRACING_ENABLED is true: the X-Ray SDK costs about 0.3 s to import, so it is not even
imported otherwise.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.lambda_context import build_lambda_context_model
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider import cold_start
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from lambda_chat.errors import InternalError

T = TypeVar("T")

SERVICE_NAME = os.environ.get("POWERTOOLS_SERVICE_NAME") or "lambda-chat"
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "LambdaChat"
logger = Logger(service=SERVICE_NAME, child=True)
_call_metrics: ContextVar[CallMetrics | None] = ContextVar("lambda_chat_call_metrics", default=None)
_cold = [True]  # the `cold_start` log key: true for the container's first call only


@dataclass
class CallMetrics:
    """One call's metrics: its dimension sets beyond [service], and each metric's unit and values."""

    dimension_sets: list[dict[str, str]] = field(default_factory=list)
    metrics: dict[str, tuple[str, list[float]]] = field(default_factory=dict)

    def add(self, name: str, unit: MetricUnit, value: float) -> None:
        self.metrics.setdefault(name, (unit.value, []))[1].append(float(value))

    def document(self, timestamp_ms: int) -> dict[str, Any]:
        """The EMF document, as AmazonCloudWatchEMFProvider.serialize_metric_set makes it."""
        dimensions = {"service": SERVICE_NAME}
        for dimension_set in self.dimension_sets:
            dimensions.update(dimension_set)
        definition = {
            "Namespace": NAMESPACE,
            "Dimensions": [["service"], *(list(dimension_set) for dimension_set in self.dimension_sets)],
            "Metrics": [{"Name": name, "Unit": unit} for name, (unit, _) in self.metrics.items()],
        }
        values = {name: figures for name, (_, figures) in self.metrics.items()}
        return {"_aws": {"Timestamp": timestamp_ms, "CloudWatchMetrics": [definition]}, **dimensions, **values}


def begin(log: Logger, context: object | None = None, **keys: object) -> None:
    """A call begins: metrics and log keys of its own, in its own context. `context`: Lambda's, whose fields
    (function name, request id...) and `cold_start` go on the call's log lines, as Powertools' own decorator puts them.
    """
    _call_metrics.set(CallMetrics())
    fields: dict[str, object] = {}
    if context is not None:
        fields = {"cold_start": _cold[0]}
        _cold[0] = False  # (two first calls at once in make serve's threads may both say true; neither fails)
        fields.update(build_lambda_context_model(context).__dict__)
    log.thread_safe_clear_keys()
    log.thread_safe_append_keys(**fields, **keys)


def _metrics() -> CallMetrics:
    """This call's metrics (a set of their own for figures recorded outside any call, as a script's)."""
    metrics = _call_metrics.get()
    if metrics is None:
        metrics = CallMetrics()
        _call_metrics.set(metrics)
    return metrics


def quiet_chatty_libraries() -> None:
    """Libraries that log request bodies or secret values at DEBUG stay quiet whatever LOG_LEVEL says."""
    for name in ("openai", "httpx2", "httpcore2", "botocore", "boto3", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass(frozen=True)
class CallFigures:
    """What one invocation did, in numbers only."""

    trigger: str
    model: str | None
    outcome: str  # "success", "replayed", "models" (a model list), "ClientDisconnected", or the error class name
    handler_ms: float
    upstream_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    cost_usd: float | None = None


# A caller that stops a stream (a chat UI's "stop" button) is counted on its own, not as a failure of ours.
NOT_ERRORS = frozenset({"success", "replayed", "models", "ClientDisconnected"})


def record(figures: CallFigures) -> None:
    """Add a call's figures to its metrics; `flush` writes them when the call ends."""
    model = figures.model or "none"
    metrics = _metrics()
    metrics.dimension_sets.append({"service": SERVICE_NAME, "model": model, "trigger": figures.trigger})
    metrics.dimension_sets.append({"service": SERVICE_NAME, "model": model, "outcome": figures.outcome})
    metrics.add("Requests", MetricUnit.Count, 1)
    failed = figures.outcome not in NOT_ERRORS
    metrics.add("Errors", MetricUnit.Count, 1 if failed else 0)
    metrics.add("HandlerLatency", MetricUnit.Milliseconds, figures.handler_ms)
    optional: list[tuple[str, MetricUnit, float | None]] = [
        ("UpstreamLatency", MetricUnit.Milliseconds, figures.upstream_ms),
        ("PromptTokens", MetricUnit.Count, figures.prompt_tokens),
        ("CompletionTokens", MetricUnit.Count, figures.completion_tokens),
        ("TotalTokens", MetricUnit.Count, figures.total_tokens),
        ("ReasoningTokens", MetricUnit.Count, figures.reasoning_tokens),
        ("CachedTokens", MetricUnit.Count, figures.cached_tokens),
        ("EstimatedCostUSD", MetricUnit.NoUnit, figures.cost_usd),
    ]
    for name, unit, value in optional:
        if value is not None:
            metrics.add(name, unit, value)
    if figures.outcome == "BudgetExceeded":
        count("BudgetRejections")


def report(message: str, figures: CallFigures, tracing: Tracing, *, status: int, **fields: Any) -> None:
    """A call's one log line (numbers and names, never text), its metrics and its trace annotations."""
    record(figures)
    tracing.annotate(model=figures.model or "none", outcome=figures.outcome)
    logger.info(
        message,
        outcome=figures.outcome,
        model=figures.model,
        latency_ms=figures.handler_ms,
        upstream_ms=figures.upstream_ms,
        prompt_tokens=figures.prompt_tokens,
        completion_tokens=figures.completion_tokens,
        total_tokens=figures.total_tokens,
        reasoning_tokens=figures.reasoning_tokens,
        cached_tokens=figures.cached_tokens,
        estimated_cost_usd=figures.cost_usd,
        status=status,
        **fields,
    )


def flush() -> None:
    """This call's metrics as one EMF line (written at once: the lines of concurrent calls never interleave), then
    forgotten, whatever POWERTOOLS_METRICS_DISABLED says (Powertools' own flush neither prints nor clears them
    then, so in a warm container they would pile up call after call)."""
    metrics = _call_metrics.get()
    _call_metrics.set(None)
    if metrics is None or not metrics.metrics:
        return
    # Emptied, not only let go: a task the call started (the one that ends its stream, in Lambda) holds the same
    # metrics in its copy of the context, and whichever flushes second must find nothing left to write.
    written = CallMetrics(metrics.dimension_sets, metrics.metrics)
    metrics.dimension_sets, metrics.metrics = [], {}
    if not is_metrics_disabled():
        document = written.document(timestamp_ms=int(time.time() * 1000))
        sys.stdout.write(json.dumps(document, separators=(",", ":")) + "\n")


def per_invocation(handler: Callable[[Any, Any], T]) -> Callable[[Any, Any], T]:
    """The Lambda handler, counting the container's cold start (its own EMF line, once) and flushing each call's
    metrics when it ends, however it ends."""

    @functools.wraps(handler)
    def wrapper(event: Any, context: Any) -> T:
        if cold_start.is_cold_start:
            cold_start.is_cold_start = False
            if not is_metrics_disabled():  # (Powertools' ColdStart line does not ask)
                AmazonCloudWatchEMFProvider(namespace=NAMESPACE, service=SERVICE_NAME).add_cold_start_metric(context)
        try:
            return handler(event, context)
        finally:
            flush()

    return wrapper


def count(name: str) -> None:
    """One more of a rare event (a budget rejection, a failed budget write), in this call's metrics."""
    _metrics().add(name, MetricUnit.Count, 1)


class Tracing:
    """Powertools Tracer when enabled; every method is a no-op otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.tracer: Any = None
        if enabled:
            from aws_lambda_powertools import Tracer

            self.tracer = Tracer()

    def span(self, name: str) -> AbstractContextManager[Any]:
        if self.tracer is None:
            return nullcontext()
        return self._subsegment(name)

    @contextmanager
    def _subsegment(self, name: str) -> Iterator[Any]:
        with self.tracer.provider.in_subsegment(f"## {name}") as subsegment:
            yield subsegment

    def annotate(self, **annotations: str) -> None:
        if self.tracer is not None:
            for key, value in annotations.items():
                self.tracer.put_annotation(key=key, value=value)


def unexpected_failure(exc: BaseException) -> InternalError:
    """A bug's way out: logged by type and frames only (messages may hold content), answered as a 500."""
    frames = [f"{frame.filename}:{frame.lineno} {frame.name}" for frame in traceback.extract_tb(exc.__traceback__)]
    logger.error("unexpected failure", error_type=type(exc).__name__, frames=frames[-5:])
    return InternalError("internal error; the request was not completed")
