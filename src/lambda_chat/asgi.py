"""The streaming entry point: the OpenAI-compatible API as an ASGI app, run by the Lambda Web Adapter.

API Gateway's response-streaming integration hands each /v1 request to the adapter, which passes it to this app
over loopback HTTP and streams back what it answers, as it is written. `make serve` runs the very same app. Like
`handler.py`, it only turns HTTP into a call on the service, and the outcome (or stream) back into HTTP.

It is a plain ASGI callable, served by uvicorn (`python -m lambda_chat.asgi`, which src/run.sh runs): eight
routes, one JSON answer or one stream each, need no framework, and Starlette measured 8 to 10 ms of cold start
and a per-request cost of its own here (README: Performance).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Literal, cast

from aws_lambda_powertools import Logger

from lambda_chat import telemetry
from lambda_chat.deadline import Deadline
from lambda_chat.errors import ChatError, InternalError, InvalidRequest
from lambda_chat.faces import EMBEDDINGS, OPENAI, RESPONSES, OpenAIFace
from lambda_chat.service import ChatService, Invocation, Outcome, configured_service, unexpected_failure
from lambda_chat.triggers import (
    JSON_HEADERS,
    caller_in,
    idempotency_key_in,
    json_document,
    response_headers,
    too_large,
)

TRIGGER = "streaming_api"
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
RESPONSE_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")  # it goes into the upstream's path
DAY_MS = 86_400_000  # a deadline further than this from now is not one the adapter sent
# The query parameters of a stored response's routes that OpenAI defines, the only ones relayed (not `stream`: a
# stored response is relayed as one JSON answer).
RELAYED_QUERY = frozenset({"after", "before", "limit", "order", "include", "include[]", "starting_after"})

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

logger = Logger(service=telemetry.SERVICE_NAME)
telemetry.quiet_chatty_libraries()


class _LambdaTime:
    """The invocation's remaining time, from the deadline (epoch ms) the adapter passes in `x-amzn-lambda-context`."""

    def __init__(self, deadline_ms: float) -> None:
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(int(self._deadline_ms - time.time() * 1000), 0)


class ClientGone(Exception):
    """The caller went away before its request body arrived."""


@dataclass
class HttpCall:
    """One HTTP request as the app sees it, and the two ways to answer it: one JSON body, or a stream."""

    scope: dict[str, Any]
    receive: Receive
    send: Send
    path_params: dict[str, str]

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    @property
    def path(self) -> str:
        return str(self.scope["path"])

    def header(self, name: str) -> str | None:
        wanted = name.encode()
        return next((value.decode("latin-1") for key, value in self.scope["headers"] if key == wanted), None)

    def headers(self) -> dict[str, str]:
        return {key.decode("latin-1"): value.decode("latin-1") for key, value in self.scope["headers"]}

    @cached_property
    def request_context(self) -> dict[str, Any]:
        """What API Gateway said of the request (the adapter passes it on as a header): its id, the caller's key."""
        return self.header_json("x-amzn-request-context")

    @cached_property
    def caller(self) -> str:
        return caller_in(self.request_context) or TRIGGER

    def header_json(self, name: str) -> dict[str, Any]:
        try:
            value = json.loads(self.header(name) or "{}")
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's own depth
            return {}
        return value if isinstance(value, dict) else {}

    async def body(self, max_bytes: int) -> bytes:
        """The body, refused as soon as it is known to be too large."""
        declared = self.header("content-length") or ""
        if declared.isdigit() and int(declared) > max_bytes:
            raise too_large(max_bytes)
        body = bytearray()
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            body += message.get("body", b"")
            if len(body) > max_bytes:
                raise too_large(max_bytes)
            if not message.get("more_body"):
                return bytes(body)

    async def answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        await self.send({"type": "http.response.start", "status": status, "headers": _encoded(headers)})
        await self.send({"type": "http.response.body", "body": body})

    async def stream(self, frames: AsyncGenerator[bytes, None], headers: dict[str, str]) -> None:
        """Each frame is written as it comes; when the caller goes away, the frames' producer is cancelled at once."""
        await self.send({"type": "http.response.start", "status": 200, "headers": _encoded(headers)})

        async def write() -> None:
            async with contextlib.aclosing(frames):  # its clean-up runs now, also when cancelled mid-send
                async for frame in frames:
                    await self.send({"type": "http.response.body", "body": frame, "more_body": True})
            await self.send({"type": "http.response.body", "body": b""})

        async def watch() -> None:
            while (await self.receive())["type"] != "http.disconnect":
                pass

        writing, watching = asyncio.ensure_future(write()), asyncio.ensure_future(watch())
        try:
            await asyncio.wait((writing, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (writing, watching):
                task.cancel()
            await asyncio.gather(writing, watching, return_exceptions=True)  # the stream's own clean-up runs


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


def _invocation(service: ChatService, call: HttpCall) -> Invocation:
    settings = service.settings
    given = call.header_json("x-amzn-lambda-context").get("deadline")
    now_ms = time.time() * 1000
    deadline_ms = now_ms + settings.local_budget_ms  # not behind the adapter (make serve), or unreadable
    if isinstance(given, (int, float)) and not isinstance(given, bool) and now_ms - DAY_MS < given < now_ms + DAY_MS:
        deadline_ms = float(given)  # (NaN and infinities fail the comparison)
    lambda_time = _LambdaTime(deadline_ms)
    deadline = Deadline.for_invocation(
        lambda_time,
        safety_margin_ms=settings.safety_margin_ms,
        fallback_ms=settings.local_budget_ms,
        cap_ms=settings.api_gateway_limit_ms,
    )
    return Invocation(TRIGGER, deadline, OPENAI, lambda_context=lambda_time, caller=call.caller)


def _request_id(call: HttpCall) -> str:
    value = call.request_context.get("requestId")
    if isinstance(value, str) and value.isascii() and value.isprintable():
        return value
    return str(uuid.uuid4())


def _flush_metrics() -> None:
    telemetry.flush()


async def _answer(call: HttpCall, outcome: Outcome, request_id: str) -> None:
    _flush_metrics()  # the call is logged and counted before its answer leaves
    headers = response_headers(request_id, outcome.retry_after, outcome.replayed, outcome.final, outcome.headers)
    await call.answer(outcome.status, json.dumps(outcome.body).encode(), headers)


async def _flushed_after(frames: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    try:
        async with contextlib.aclosing(frames):
            async for frame in frames:
                yield frame
    finally:
        _flush_metrics()  # however the stream ended, it was logged and counted before it closes


def _begin(call: HttpCall) -> tuple[ChatService | None, str]:
    request_id = _request_id(call)
    logger.set_correlation_id(request_id)
    logger.append_keys(trigger=TRIGGER, caller=call.caller)
    return configured_service(), request_id


async def _misconfigured(call: HttpCall, request_id: str) -> None:
    telemetry.record(telemetry.CallFigures(TRIGGER, None, "ConfigurationError", 0.0))
    failure = Outcome.failed(InternalError("the function is misconfigured; see its logs"), OPENAI)
    await _answer(call, failure, request_id)


def _posted_to(face: OpenAIFace) -> Callable[[HttpCall], Awaitable[None]]:
    """A route that POSTs a body to one OpenAI API through the service: a stream for `stream: true`, else JSON."""

    async def route(call: HttpCall) -> None:
        service, request_id = _begin(call)
        if service is None:
            return await _misconfigured(call, request_id)
        invocation = replace(_invocation(service, call), face=face)
        limit = service.settings.max_body_bytes
        try:
            data = json_document(await call.body(limit), limit)
            invocation = replace(invocation, idempotency_key=idempotency_key_in(call.headers()))
            result = await service.open_stream(data, invocation)
        except ClientGone:
            return None
        except ChatError as error:
            return await _answer(call, service.reject(error, invocation), request_id)
        except Exception as exc:  # the last line of defence
            return await _answer(call, service.reject(unexpected_failure(exc), invocation), request_id)
        if isinstance(result, Outcome):
            return await _answer(call, result, request_id)
        try:
            headers = {**SSE_HEADERS, **result.headers, "X-Request-Id": request_id}
            await call.stream(_flushed_after(result.frames()), headers)
        finally:
            if await result.abandoned():  # a stream the client left before its first frame still ends, is settled
                _flush_metrics()  # and is logged and counted in this invocation
        return None

    return route


async def stored_response(call: HttpCall) -> None:
    """GET or DELETE /v1/responses/{id}, its input items, POST its cancel: relayed as they are."""
    service, request_id = _begin(call)
    if service is None:
        return await _misconfigured(call, request_id)
    invocation = _invocation(service, call)
    response_id, tail = call.path_params["response_id"], call.path_params.get("tail") or ""
    if not RESPONSE_ID.fullmatch(response_id):
        error = InvalidRequest("response_id: not a response id", "response_id")
        return await _answer(call, service.reject(error, invocation), request_id)
    method = cast(Literal["GET", "POST", "DELETE"], call.method)  # ROUTES allow only these, each where OpenAI does
    path = f"/responses/{response_id}" + (f"/{tail}" if tail else "")
    await _answer(call, await service.relay(method, path, invocation, _relayed_query(call)), request_id)


def _relayed_query(call: HttpCall) -> tuple[tuple[str, str], ...]:
    """OpenAI's own query parameters (pagination, `include`), as given."""
    from urllib.parse import parse_qsl

    raw = bytes(call.scope.get("query_string") or b"").decode("latin-1")
    pairs = parse_qsl(raw, keep_blank_values=True)
    return tuple((name, value) for name, value in pairs if name in RELAYED_QUERY)


async def list_models(call: HttpCall) -> None:
    service, request_id = _begin(call)
    if service is None:
        return await _misconfigured(call, request_id)
    await _answer(call, service.models(_invocation(service, call)), request_id)


async def health(call: HttpCall) -> None:
    """The adapter's readiness check: the app is up (it reads no secret and calls no upstream)."""
    await call.answer(200, b'{"status": "ok"}', JSON_HEADERS)


Route = Callable[[HttpCall], Awaitable[None]]
ROUTES: list[tuple[re.Pattern[str], dict[str, Route]]] = [
    (re.compile(r"/v1/chat/completions"), {"POST": _posted_to(OPENAI)}),
    (re.compile(r"/v1/responses"), {"POST": _posted_to(RESPONSES)}),
    (re.compile(r"/v1/responses/(?P<response_id>[^/]+)"), {"GET": stored_response, "DELETE": stored_response}),
    (re.compile(r"/v1/responses/(?P<response_id>[^/]+)/(?P<tail>cancel)"), {"POST": stored_response}),
    (re.compile(r"/v1/responses/(?P<response_id>[^/]+)/(?P<tail>input_items)"), {"GET": stored_response}),
    (re.compile(r"/v1/embeddings"), {"POST": _posted_to(EMBEDDINGS)}),
    (re.compile(r"/v1/models"), {"GET": list_models}),
    (re.compile(r"/healthz"), {"GET": health}),
]
_NOT_FOUND = "no such route; the API serves /v1/chat/completions, /v1/responses, /v1/embeddings and /v1/models"


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """The ASGI application: routes by path and method; 404 and 405 in OpenAI's error format too."""
    if scope["type"] != "http":
        return  # no lifespan events: uvicorn runs it with lifespan off, and nothing happens at startup
    call = HttpCall(scope, receive, send, {})
    path = call.path.rstrip("/") or "/"
    for pattern, methods in ROUTES:
        match = pattern.fullmatch(path)
        if match is None:
            continue
        route = methods.get(call.method)
        if route is None:
            return await _refuse(call, 405, "method not allowed", "method_not_allowed", {"Allow": ", ".join(methods)})
        call.path_params = {key: value for key, value in match.groupdict().items() if value is not None}
        return await route(call)
    await _refuse(call, 404, _NOT_FOUND, "not_found", {})


async def _refuse(call: HttpCall, status: int, reason: str, code: str, headers: dict[str, str]) -> None:
    error = {"message": f"{call.method} {call.path}: {reason}", "type": "invalid_request_error", "param": None}
    body = json.dumps({"error": {**error, "code": code}}).encode()
    await call.answer(status, body, {**JSON_HEADERS, **headers})


def main() -> None:
    """Serve the app on loopback for the Web Adapter (src/run.sh): uvicorn without its CLI, log set-up or lifespan."""
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ.get("AWS_LWA_PORT") or os.environ.get("PORT") or 8080),  # the adapter's variable first
        http="h11",  # named, so uvicorn never looks for httptools, uvloop or websockets (not shipped)
        loop="asyncio",
        ws="none",
        lifespan="off",
        access_log=False,
        log_config=None,  # the function's own logger is Powertools'; uvicorn's errors still reach stderr
        timeout_graceful_shutdown=1,
    )


# Settings, the async OpenAI client and the key store are built during init, not on the first request.
_service_at_init = configured_service()
if _service_at_init is not None:
    _service_at_init.warm(streaming=True)

if __name__ == "__main__":
    main()
