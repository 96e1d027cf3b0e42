"""Lambda entry point: work out the trigger, call the service, answer in the trigger's shape."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambda_chat.deadline import Deadline
from lambda_chat.errors import ChatError, InternalError
from lambda_chat.service import ChatService, Outcome, default_service
from lambda_chat.settings import ConfigurationError
from lambda_chat.triggers import Trigger, identify

logger = Logger()

# Libraries that log request bodies or secret values at DEBUG stay quiet whatever LOG_LEVEL says.
for _name in ("openai", "httpx2", "httpcore2", "botocore", "boto3", "urllib3"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def _service_or_none() -> ChatService | None:
    try:
        return default_service()
    except ConfigurationError as exc:
        logger.error("function is misconfigured", reason=str(exc))
        return None


# Build the OpenAI client and read the settings during init, not on the first request.
_service_or_none()


@logger.inject_lambda_context(log_event=False, clear_state=True)
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    trigger = identify(event)
    logger.set_correlation_id(trigger.request_id)
    logger.append_keys(trigger=trigger.kind)
    outcome = _handle(trigger, context)
    return trigger.respond(outcome.status, outcome.envelope, outcome.retry_after, outcome.replayed)


def _handle(trigger: Trigger, context: LambdaContext) -> Outcome:
    """Every path ends in an outcome: the caller always gets an envelope."""
    service = _service_or_none()
    if service is None:
        return Outcome.failed(InternalError("the function is misconfigured; see its logs"))
    settings = service.settings
    deadline = Deadline.for_invocation(
        context,
        safety_margin_ms=settings.safety_margin_ms,
        fallback_ms=settings.local_budget_ms,
        cap_ms=settings.api_gateway_limit_ms if trigger.is_http else None,
    )
    try:
        data = trigger.request_data(settings.max_body_bytes)
        return service.chat(data, deadline, idempotency_key=trigger.idempotency_key(), context=context)
    except ChatError as error:
        logger.info("request rejected", outcome="error", status=error.status, error_type=type(error).__name__)
        return Outcome.failed(error)
    except Exception as exc:  # the last line of defence: type and frames only, messages may hold content
        frames = [f"{frame.filename}:{frame.lineno} {frame.name}" for frame in traceback.extract_tb(exc.__traceback__)]
        logger.error(
            "unexpected failure", outcome="error", status=500, error_type=type(exc).__name__, frames=frames[-5:]
        )
        return Outcome.failed(InternalError("internal error; the request was not completed"))
