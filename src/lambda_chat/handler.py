"""Lambda entry point: work out the trigger, call the service, answer in the trigger's shape."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambda_chat import telemetry
from lambda_chat.deadline import Deadline
from lambda_chat.errors import ChatError, InternalError, RetryLater
from lambda_chat.faces import ENVELOPE, OPENAI
from lambda_chat.service import ChatService, Invocation, Outcome, configured_service, unexpected_failure
from lambda_chat.triggers import Trigger, identify

logger = Logger(service=telemetry.SERVICE_NAME)

telemetry.quiet_chatty_libraries()
# Build the OpenAI client and read the settings during init, not on the first request.
_service_at_init = configured_service()
if _service_at_init is not None:
    _service_at_init.warm(streaming=False)


@telemetry.flushed_after  # whatever POWERTOOLS_METRICS_DISABLED says, no call's metrics outlive it
@logger.inject_lambda_context(log_event=False, clear_state=True)
@telemetry.metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    trigger = identify(event)
    logger.set_correlation_id(trigger.request_id)
    service = configured_service()
    caller = trigger.caller(service.settings.event_caller_name if service is not None else None)
    logger.append_keys(trigger=trigger.kind, caller=caller)
    outcome = _handle(service, trigger, context, caller)
    if trigger.is_async and outcome.retryable and (service is None or service.settings.raise_retryable_async_failures):
        # Let Lambda's async retries (and then the on-failure destination) have it; idempotency keeps
        # a retry from paying twice, and failures are never stored.
        raise RetryLater(f"status {outcome.status}: {outcome.body['error']}")
    return trigger.respond(
        outcome.status, outcome.body, outcome.retry_after, outcome.replayed, outcome.final, outcome.headers
    )


def _handle(service: ChatService | None, trigger: Trigger, context: LambdaContext, caller: str) -> Outcome:
    """Every path ends in an outcome: the caller always gets an answer in its face's format."""
    face = OPENAI if trigger.route.startswith("openai") else ENVELOPE
    if service is None:
        telemetry.record(telemetry.CallFigures(trigger.kind, None, "ConfigurationError", 0.0))
        return Outcome.failed(InternalError("the function is misconfigured; see its logs"), face)
    settings = service.settings
    deadline = Deadline.for_invocation(
        context,
        safety_margin_ms=settings.safety_margin_ms,
        fallback_ms=settings.local_budget_ms,
        cap_ms=settings.api_gateway_limit_ms if trigger.is_http else None,
    )
    invocation = Invocation(trigger.kind, deadline, face, lambda_context=context, caller=caller)
    try:
        trigger.check_method()
        if trigger.route == "openai_models":
            return service.models(invocation)
        data = trigger.request_data(settings.max_body_bytes)
        invocation = replace(invocation, idempotency_key=trigger.idempotency_key())
        return service.chat(data, invocation)
    except ChatError as error:
        return service.reject(error, invocation)
    except Exception as exc:  # the last line of defence
        return service.reject(unexpected_failure(exc), invocation)


if _service_at_init is not None and _service_at_init.tracing.tracer is not None:
    lambda_handler = _service_at_init.tracing.tracer.capture_lambda_handler(
        lambda_handler, capture_response=False, capture_error=False
    )
