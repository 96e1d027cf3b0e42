"""The streaming entry point: the OpenAI-compatible API as an ASGI app, run by the Lambda Web Adapter.

API Gateway's response-streaming integration hands each /v1 request to the adapter, which passes it to this app
over loopback HTTP and streams back what it answers, as it is written. `make serve` runs the very same app. Like
`handler.py`, it only turns HTTP into a call on the service, and the outcome (or stream) back into HTTP.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, Literal

from aws_lambda_powertools import Logger
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from lambda_chat import telemetry
from lambda_chat.deadline import Deadline
from lambda_chat.errors import ChatError, InternalError, InvalidRequest
from lambda_chat.faces import EMBEDDINGS, OPENAI, RESPONSES, OpenAIFace
from lambda_chat.service import ChatService, ChatStream, Invocation, Outcome, configured_service, unexpected_failure
from lambda_chat.triggers import idempotency_key_in, json_document, response_headers, too_large

TRIGGER = "streaming_api"
RESPONSE_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")  # it goes into the upstream's path
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

logger = Logger(service=telemetry.SERVICE_NAME)
telemetry.quiet_chatty_libraries()


class _LambdaTime:
    """The invocation's remaining time, from the deadline (epoch ms) the adapter passes in `x-amzn-lambda-context`."""

    def __init__(self, deadline_ms: float) -> None:
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(int(self._deadline_ms - time.time() * 1000), 0)


def _header_json(request: Request, name: str) -> dict[str, Any]:
    try:
        value = json.loads(request.headers.get(name) or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _invocation(service: ChatService, request: Request) -> Invocation:
    settings = service.settings
    deadline_ms = _header_json(request, "x-amzn-lambda-context").get("deadline")
    lambda_time = _LambdaTime(deadline_ms) if isinstance(deadline_ms, (int, float)) else None
    deadline = Deadline.for_invocation(
        lambda_time,
        safety_margin_ms=settings.safety_margin_ms,
        fallback_ms=settings.local_budget_ms,
        cap_ms=settings.api_gateway_limit_ms,
    )
    return Invocation(TRIGGER, deadline, OPENAI)


def _request_id(request: Request) -> str:
    value = _header_json(request, "x-amzn-request-context").get("requestId")
    if isinstance(value, str) and value.isascii() and value.isprintable():
        return value
    return str(uuid.uuid4())


async def _body(request: Request, max_bytes: int) -> bytes:
    """The body, refused as soon as it is known to be too large."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large(max_bytes)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > max_bytes:
            raise too_large(max_bytes)
    return bytes(body)


def _flush_metrics() -> None:
    telemetry.metrics.flush_metrics()


def _answer(outcome: Outcome, request_id: str) -> Response:
    _flush_metrics()  # the call is logged and counted before its answer leaves
    headers = response_headers(request_id, outcome.retry_after, outcome.replayed)
    return Response(json.dumps(outcome.body), outcome.status, headers=headers)


async def _streamed(stream: ChatStream) -> AsyncIterator[bytes]:
    try:
        async for frame in stream.frames():
            yield frame
    finally:
        _flush_metrics()  # however the stream ended, it was logged and counted before it closes


def _begin(request: Request) -> tuple[ChatService | None, str]:
    request_id = _request_id(request)
    logger.set_correlation_id(request_id)
    logger.append_keys(trigger=TRIGGER)
    return configured_service(), request_id


def _misconfigured(request_id: str) -> Response:
    telemetry.record(telemetry.CallFigures(TRIGGER, None, "ConfigurationError", 0.0))
    return _answer(Outcome.failed(InternalError("the function is misconfigured; see its logs"), OPENAI), request_id)


async def _call(request: Request, face: OpenAIFace) -> Response:
    """POST a body to one OpenAI route through the service: a stream for `stream: true`, else one JSON answer."""
    service, request_id = _begin(request)
    if service is None:
        return _misconfigured(request_id)
    invocation = replace(_invocation(service, request), face=face)
    try:
        data = json_document(await _body(request, service.settings.max_body_bytes), service.settings.max_body_bytes)
        invocation = replace(invocation, idempotency_key=idempotency_key_in(dict(request.headers)))
        result = await service.open_stream(data, invocation)
    except ChatError as error:
        return _answer(service.reject(error, invocation), request_id)
    except Exception as exc:  # the last line of defence
        return _answer(service.reject(unexpected_failure(exc), invocation), request_id)
    if isinstance(result, Outcome):
        return _answer(result, request_id)
    headers = {**SSE_HEADERS, "X-Request-Id": request_id}
    return StreamingResponse(_streamed(result), headers=headers)


async def chat_completions(request: Request) -> Response:
    return await _call(request, OPENAI)


async def responses(request: Request) -> Response:
    return await _call(request, RESPONSES)


async def embeddings(request: Request) -> Response:
    return await _call(request, EMBEDDINGS)


async def stored_response(request: Request) -> Response:
    """GET or DELETE /v1/responses/{id}, POST /v1/responses/{id}/cancel: relayed as they are."""
    service, request_id = _begin(request)
    if service is None:
        return _misconfigured(request_id)
    invocation = _invocation(service, request)
    response_id = request.path_params["response_id"]
    if not RESPONSE_ID.fullmatch(response_id):
        error = InvalidRequest("response_id: not a response id", "response_id")
        return _answer(service.reject(error, invocation), request_id)
    tail = request.url.path.rstrip("/").rsplit(response_id, 1)[1]  # "", "/cancel" or "/input_items"
    method: Literal["GET", "POST", "DELETE"] = (
        "POST" if tail == "/cancel" else "DELETE" if request.method == "DELETE" else "GET"
    )
    outcome = await service.relay(method, f"/responses/{response_id}{tail}", invocation)
    return _answer(outcome, request_id)


async def list_models(request: Request) -> Response:
    service, request_id = _begin(request)
    if service is None:
        return _misconfigured(request_id)
    return _answer(service.models(_invocation(service, request)), request_id)


async def health(request: Request) -> Response:
    """The adapter's readiness check: the app is up (it reads no secret and calls no upstream)."""
    return Response(b'{"status": "ok"}', media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 in OpenAI's error format, like every other answer."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    headers = exc.headers if isinstance(exc, HTTPException) else None  # 405's Allow
    error = {
        "message": f"{request.method} {request.url.path}: {_REASONS.get(status, 'failed')}",
        "type": "invalid_request_error" if status < 500 else "server_error",
        "param": None,
        "code": _CODES.get(status),
    }
    return Response(json.dumps({"error": error}), status, headers=headers, media_type="application/json")


_REASONS = {
    404: "no such route; the API serves /v1/chat/completions, /v1/responses, /v1/embeddings and /v1/models",
    405: "method not allowed",
}
_CODES = {404: "not_found", 405: "method_not_allowed"}

app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/responses/{response_id}", stored_response, methods=["GET", "DELETE"]),
        Route("/v1/responses/{response_id}/cancel", stored_response, methods=["POST"]),
        Route("/v1/responses/{response_id}/input_items", stored_response, methods=["GET"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
    ],
    exception_handlers={HTTPException: _http_error},
)

# Settings, the OpenAI clients (sync and async) and the key store are built during init, not on the first request.
_service_at_init = configured_service()
if _service_at_init is not None:
    _service_at_init.warm(streaming=True)
