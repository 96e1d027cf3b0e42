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
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast

from aws_lambda_powertools import Logger

from lambda_chat import adapter, telemetry
from lambda_chat.calls import Invocation, Outcome
from lambda_chat.errors import ChatError, InvalidRequest
from lambda_chat.faces import OPENAI
from lambda_chat.service import ChatService
from lambda_chat.wiring import configured_service

if TYPE_CHECKING:
    from lambda_chat.stream import ChatStream

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
Served: TypeAlias = "Outcome | ChatStream | None"  # None: the client left before its request had arrived

logger = Logger(service=telemetry.SERVICE_NAME)


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
        wanted = name.lower().encode()
        return next((value.decode("latin-1") for key, value in self.scope["headers"] if key == wanted), None)

    def headers(self) -> dict[str, str]:
        return {key.decode("latin-1"): value.decode("latin-1") for key, value in self.scope["headers"]}

    @cached_property
    def request_context(self) -> dict[str, Any]:
        """What API Gateway said of the request (the adapter passes it on as a header): its id, the caller's key."""
        return self.header_json("x-amzn-request-context")

    @cached_property
    def caller(self) -> str:
        return adapter.caller_in(self.request_context) or TRIGGER

    @cached_property
    def request_id(self) -> str:
        return adapter.request_id_in(self.request_context) or str(uuid.uuid4())

    def header_json(self, name: str) -> dict[str, Any]:
        try:
            value = json.loads(self.header(name) or "{}")
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's own depth
            return {}
        return value if isinstance(value, dict) else {}

    async def body(self, max_bytes: int) -> bytes:
        """The body, refused as soon as it is known to be too large."""
        declared = self.header("content-length") or ""
        if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
            raise adapter.too_large(max_bytes)
        body = bytearray()
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            body += message.get("body", b"")
            if len(body) > max_bytes:
                raise adapter.too_large(max_bytes)
            if not message.get("more_body"):
                return bytes(body)

    async def answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        await self.send({"type": "http.response.start", "status": status, "headers": _encoded(headers)})
        await self.send({"type": "http.response.body", "body": body})

    async def stream(
        self,
        frames: AsyncGenerator[bytes, None],
        headers: dict[str, str],
        before_end: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Each frame is written as it comes, then (after `before_end`) the response ends; when the caller goes away,
        the frames' producer is cancelled at once."""
        await self.send({"type": "http.response.start", "status": 200, "headers": _encoded(headers)})

        async def write() -> None:
            async with contextlib.aclosing(frames):  # its clean-up runs now, also when cancelled mid-send
                async for frame in frames:
                    await self.send({"type": "http.response.body", "body": frame, "more_body": True})
            if before_end is not None:
                await before_end()
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


def _time_left(call: HttpCall, fallback_ms: int) -> _LambdaTime:
    """The invocation's deadline, as the adapter passed it; else (make serve, or unreadable) `fallback_ms` from now."""
    given = call.header_json("x-amzn-lambda-context").get("deadline")
    now_ms = time.time() * 1000
    deadline_ms = now_ms + fallback_ms
    if isinstance(given, (int, float)) and not isinstance(given, bool) and now_ms - DAY_MS < given < now_ms + DAY_MS:
        deadline_ms = float(given)  # (NaN and infinities fail the comparison)
    return _LambdaTime(deadline_ms)


def _answers_first() -> bool:
    """Whether a call's books (its settle, its log line, its metrics) may close after its answer has gone: anywhere
    but in Lambda, which freezes the environment as soon as the response has ended (aws-lambda-web-adapter issues
    #404 and #466); there, they close just before its end."""
    return "AWS_LAMBDA_FUNCTION_NAME" not in os.environ


async def _answer(call: HttpCall, outcome: Outcome, request_id: str | None) -> None:
    body, headers = json.dumps(outcome.body).encode(), adapter.headers_of(outcome, request_id)
    if outcome.after is None:
        telemetry.flush()  # the call is logged and counted before its answer leaves
        return await call.answer(outcome.status, body, headers)
    await call.answer(outcome.status, body, headers)  # the client has its whole answer; then the books close
    try:
        await outcome.after()
    finally:
        telemetry.flush()


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """The ASGI application: routes by path and method; 404 and 405 in OpenAI's error format too."""
    if scope["type"] != "http":
        return  # no lifespan events: uvicorn runs it with lifespan off, and nothing happens at startup
    call = HttpCall(scope, receive, send, {})
    try:
        route, call.path_params = adapter.find_route("app", call.method, call.path)
        route.check(call.method, call.path.rstrip("/") or "/")
    except ChatError as error:  # neither logged nor counted: a scanner's 404s are no calls of the function's
        refused = Outcome.failed(error, OPENAI)
        return await call.answer(refused.status, json.dumps(refused.body).encode(), adapter.headers_of(refused, None))
    if route.name == "health":  # the adapter's readiness check: the app is up (no secret read, no upstream call)
        return await call.answer(200, b'{"status": "ok"}', adapter.JSON_HEADERS)
    request_id = call.request_id
    telemetry.begin(logger, correlation_id=request_id, trigger=TRIGGER, caller=call.caller)
    service = configured_service("app")
    fallback_ms = service.settings.local_budget_ms if service is not None else 0
    time_left = _time_left(call, fallback_ms)
    facts = adapter.Facts(
        TRIGGER, route.face, time_left, call.caller, True, streams=True, answer_first=_answers_first()
    )
    ready = adapter.invocation_for(service, facts)
    if isinstance(ready, Outcome):
        return await _answer(call, ready, request_id)
    serving, invocation = ready
    result = await adapter.answered(serving, invocation, lambda: _served(route, call, serving, invocation))
    if isinstance(result, Outcome):
        return await _answer(call, result, request_id)
    if result is not None:
        async with result as stream:  # however the stream ends, it is settled, logged and counted, once

            async def close_books() -> None:  # before the response ends, where the runtime freezes after it
                await stream.close()
                telemetry.flush()

            headers = {**SSE_HEADERS, **stream.headers, "X-Request-Id": request_id}
            await call.stream(stream.frames(), headers, before_end=None if invocation.answer_first else close_books)
        telemetry.flush()
    return None


async def _served(route: adapter.Route, call: HttpCall, service: ChatService, invocation: Invocation) -> Served:
    if route.name == "models":
        return service.models(invocation)
    if route.name == "stored_response":
        return await _stored_response(call, service, invocation)
    limit = service.settings.max_body_bytes
    try:
        data = adapter.json_document(await call.body(limit), limit)
    except ClientGone:
        return None  # the client left before its request had arrived: nobody to answer
    key = adapter.idempotency_key_in(call.headers())
    return await service.chat(data, replace(invocation, idempotency_key=key))


async def _stored_response(call: HttpCall, service: ChatService, invocation: Invocation) -> Outcome:
    """GET or DELETE /v1/responses/{id}, its input items, POST its cancel: relayed as they are."""
    response_id, tail = call.path_params["response_id"], call.path_params.get("tail") or ""
    if not RESPONSE_ID.fullmatch(response_id):
        raise InvalidRequest("response_id: not a response id", "response_id")
    method = cast(Literal["GET", "POST", "DELETE"], call.method)  # the routes allow only these, each where OpenAI does
    path = f"/responses/{response_id}" + (f"/{tail}" if tail else "")
    return await service.relay(method, path, invocation, _relayed_query(call))


def _relayed_query(call: HttpCall) -> tuple[tuple[str, str], ...]:
    """OpenAI's own query parameters (pagination, `include`), as given."""
    from urllib.parse import parse_qsl

    raw = bytes(call.scope.get("query_string") or b"").decode("latin-1")
    pairs = parse_qsl(raw, keep_blank_values=True)
    return tuple((name, value) for name, value in pairs if name in RELAYED_QUERY)


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
adapter.service_at_init("app")

if __name__ == "__main__":
    main()
