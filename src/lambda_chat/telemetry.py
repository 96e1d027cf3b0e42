"""Metrics (CloudWatch EMF through Powertools Metrics) and traces (X-Ray through Powertools Tracer).

One EMF line per invocation, with three dimension sets: [service] for account-wide
totals (what the alarms watch), [service, model, trigger] and [service, model,
outcome]. Names, units and values never carry content. Tracing is off unless
TRACING_ENABLED is true: the X-Ray SDK costs about 0.3 s to import, so it is not
even imported otherwise.
"""

from __future__ import annotations

import functools
import logging
import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from lambda_chat.errors import InternalError

T = TypeVar("T")

SERVICE_NAME = os.environ.get("POWERTOOLS_SERVICE_NAME") or "lambda-chat"
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "LambdaChat", service=SERVICE_NAME)
logger = Logger(service=SERVICE_NAME, child=True)


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
    """Add this invocation's metrics; `metrics.log_metrics` on the handler flushes them."""
    model = figures.model or "none"
    metrics.add_dimensions(service=SERVICE_NAME, model=model, trigger=figures.trigger)
    metrics.add_dimensions(service=SERVICE_NAME, model=model, outcome=figures.outcome)
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    failed = figures.outcome not in NOT_ERRORS
    metrics.add_metric(name="Errors", unit=MetricUnit.Count, value=1 if failed else 0)
    metrics.add_metric(name="HandlerLatency", unit=MetricUnit.Milliseconds, value=figures.handler_ms)
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
            metrics.add_metric(name=name, unit=unit, value=value)
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
    """Print this invocation's metrics, and forget them whatever happened: Powertools neither prints nor clears them
    when POWERTOOLS_METRICS_DISABLED is true, so in a warm container they would pile up call after call."""
    try:
        metrics.flush_metrics()
    finally:
        metrics.clear_metrics()


def flushed_after(handler: Callable[..., T]) -> Callable[..., T]:
    """The handler, with this invocation's metrics forgotten when it ends (after `metrics.log_metrics` printed them,
    or did not because they are disabled)."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return handler(*args, **kwargs)
        finally:
            metrics.clear_metrics()

    return wrapper


def count(name: str) -> None:
    """One more of a rare event (a budget rejection, a failed budget write), in this invocation's metrics."""
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


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
