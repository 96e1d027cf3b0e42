"""Lambda entry point: work out the trigger, call the service, answer in the trigger's shape."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambda_chat import adapter, telemetry
from lambda_chat.adapter import Route
from lambda_chat.calls import Invocation, Outcome
from lambda_chat.errors import NotFound, RetryLater
from lambda_chat.runners import drive
from lambda_chat.service import ChatService
from lambda_chat.triggers import Trigger, identify
from lambda_chat.wiring import configured_service

logger = Logger(service=telemetry.SERVICE_NAME)
_service_at_init = adapter.service_at_init("handler")


@telemetry.per_invocation  # the cold start counted once; each call's metrics flushed when it ends, however it ends
def lambda_handler(event: Any, context: LambdaContext) -> Any:
    trigger = identify(event)
    service = configured_service("handler")
    route = trigger.route()
    facts = trigger.facts(context, service.settings.event_caller_name if service else None, route.face)
    telemetry.begin(logger, context, correlation_id=trigger.request_id, trigger=trigger.kind, caller=facts.caller)
    ready = adapter.invocation_for(service, facts)
    if isinstance(ready, Outcome):
        outcome = ready
    else:
        serving, invocation = ready
        outcome = drive(adapter.answered(serving, invocation, lambda: _served(serving, trigger, route, invocation)))
    if (
        trigger.is_async
        and outcome.retry_later
        and (service is None or service.settings.raise_retryable_async_failures)
    ):
        # Let Lambda's async retries (and then the on-failure destination) have it; idempotency keeps
        # a retry from paying twice, and failures are never stored.
        raise RetryLater(f"status {outcome.status}: {outcome.body['error']}")
    return trigger.respond(outcome)


async def _served(service: ChatService, trigger: Trigger, route: Route, invocation: Invocation) -> Outcome:
    trigger.check_method(route)
    if route.name == "models":
        return service.models(invocation)
    if route.name == "streaming_only":
        raise NotFound(
            f"{trigger.path.rstrip('/')[:200]}: served by the streaming API's /v1 (README: Streaming); this endpoint "
            "serves /v1/chat/completions and /v1/models"
        )
    data = trigger.request_data(service.settings.max_body_bytes)
    outcome = await service.chat(data, replace(invocation, idempotency_key=trigger.idempotency_key()))
    if not isinstance(outcome, Outcome):  # its invocations never stream: the service refuses `stream: true`
        raise TypeError("the handler function answered with a stream")
    return outcome


if _service_at_init is not None and _service_at_init.tracing.tracer is not None:
    lambda_handler = _service_at_init.tracing.tracer.capture_lambda_handler(
        lambda_handler, capture_response=False, capture_error=False
    )
