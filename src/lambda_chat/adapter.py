"""What both entry points share: one route table, the invocation a trigger's facts make, the catch-all, headers.

`handler.py` (Lambda events) and `asgi.py` (the streaming app) each turn their transport into facts (which
trigger, how much time remains, who pays, which face) and an outcome back into their transport; everything in
between is here, once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from lambda_chat import telemetry
from lambda_chat.calls import Invocation, Outcome
from lambda_chat.deadline import Deadline, LambdaContextLike
from lambda_chat.errors import ChatError, InternalError, InvalidRequest, MethodNotAllowed, NotFound, PayloadTooLarge
from lambda_chat.faces import EMBEDDINGS, ENVELOPE, OPENAI, RESPONSES, Face
from lambda_chat.service import ChatService
from lambda_chat.telemetry import unexpected_failure
from lambda_chat.wiring import Entry, configured_service

T = TypeVar("T")
JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}
IDEMPOTENCY_HEADER = "idempotency-key"
MAX_IDEMPOTENCY_KEY_LENGTH = 255


@dataclass(frozen=True)
class Route:
    name: str
    path: re.Pattern[str]
    methods: tuple[str, ...]
    face: Face
    entries: tuple[Entry, ...]  # the entry points that serve it

    def check(self, method: str, path: str) -> None:
        if method.upper() not in self.methods:
            raise MethodNotAllowed(f"{method[:20]} {path[:200]}: method not allowed", allow=", ".join(self.methods))


def _route(name: str, path: str, methods: str, face: Face, *entries: Entry) -> Route:
    return Route(name, re.compile(path), tuple(methods.split()), face, entries)


_RESPONSE = r"/v1/responses/(?P<response_id>[^/]+)"
# The OpenAI-compatible API under /v1; the envelope contract on POST /chat, which in the handler function is any
# path no other route has (a Function URL's root, a custom domain's base path). The first route whose path matches
# decides.
ROUTES = (
    _route("chat_completions", r"/v1/chat/completions", "POST", OPENAI, "handler", "app"),
    _route("responses", r"/v1/responses", "POST", RESPONSES, "app"),
    _route("stored_response", _RESPONSE, "GET DELETE", OPENAI, "app"),
    _route("stored_response", _RESPONSE + r"/(?P<tail>cancel)", "POST", OPENAI, "app"),
    _route("stored_response", _RESPONSE + r"/(?P<tail>input_items)", "GET", OPENAI, "app"),
    _route("embeddings", r"/v1/embeddings", "POST", EMBEDDINGS, "app"),
    _route("models", r"/v1/models", "GET", OPENAI, "handler", "app"),
    _route("health", r"/healthz", "GET", OPENAI, "app"),
    # What only the streaming app serves, asked of the handler function (an OpenAI client given its URL): told so
    _route("streaming_only", r"/v1/(?:responses|embeddings)(?:/[^/]+){0,2}", "GET POST DELETE", OPENAI, "handler"),
    _route("chat", r".*", "POST", ENVELOPE, "handler"),
)
NOT_FOUND = "no such route; the API serves /v1/chat/completions, /v1/responses, /v1/embeddings and /v1/models"


def find_route(entry: Entry, method: str, path: str, *, suffix: bool = False) -> tuple[Route, dict[str, str]]:
    """The first route whose path matches, and the path's parameters; else NotFound. (`Route.check` then says
    whether it takes the method.)

    `suffix`: API Gateway's stage and base path come before the route's path, so the path's end is matched.
    """
    path = path.rstrip("/") or "/"
    for route in ROUTES:
        match = route.path.search(path) if suffix else route.path.fullmatch(path)
        if entry not in route.entries or match is None or match.end() != len(path):
            continue
        return route, {key: value for key, value in match.groupdict().items() if value is not None}
    raise NotFound(f"{method[:20]} {path[:200]}: {NOT_FOUND}")  # (the client's own text, shortened)


@dataclass(frozen=True)
class Facts:
    """What a trigger tells about a call, whichever entry point it came through."""

    trigger: str  # its kind: "api_gateway_rest", "http_api", "direct", "eventbridge" or "streaming_api"
    face: Face
    time_left: LambdaContextLike | None  # Lambda's context, or the Web Adapter's deadline; None: no limit known
    caller: str  # who pays
    behind_api_gateway: bool  # capped by API Gateway's time limit
    streams: bool = False  # the entry point can answer with a stream
    answer_first: bool = False  # the entry point delivers the answer before the call's books close


def invocation_for(service: ChatService | None, facts: Facts) -> tuple[ChatService, Invocation] | Outcome:
    """The service and the invocation a trigger's facts make; or, when the function is misconfigured, that
    outcome (counted)."""
    if service is None:
        telemetry.record(telemetry.CallFigures(facts.trigger, None, "ConfigurationError", 0.0))
        return Outcome.failed(InternalError("the function is misconfigured; see its logs"), facts.face)
    settings = service.settings
    deadline = Deadline.for_invocation(
        facts.time_left,
        safety_margin_ms=settings.safety_margin_ms,
        fallback_ms=settings.local_budget_ms,
        cap_ms=settings.api_gateway_limit_ms if facts.behind_api_gateway else None,
    )
    return service, Invocation(
        facts.trigger,
        deadline,
        facts.face,
        lambda_context=facts.time_left,
        caller=facts.caller,
        streams=facts.streams,
        answer_first=facts.answer_first,
    )


async def answered(service: ChatService, invocation: Invocation, work: Callable[[], Awaitable[T]]) -> T | Outcome:
    """`work`'s result; every failure it raises as an outcome (the last line of defence: never a crash)."""
    try:
        return await work()
    except ChatError as error:
        return service.reject(error, invocation)
    except Exception as exc:
        return service.reject(unexpected_failure(exc), invocation)


def headers_of(outcome: Outcome, request_id: str | None) -> dict[str, str]:
    """The headers of a JSON answer over HTTP."""
    headers = {**JSON_HEADERS, **outcome.headers}
    if outcome.told_not_to_retry:  # OpenAI's SDKs should not retry it (a spent budget)
        headers["x-should-retry"] = "false"
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    if outcome.retry_after is not None:
        headers["Retry-After"] = outcome.retry_after
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    if isinstance(outcome.error, MethodNotAllowed):
        headers["Allow"] = outcome.error.allow
    return headers


def request_id_in(request_context: object) -> str | None:
    """API Gateway's id of the request, used as the correlation id in logs, when it is one."""
    value = request_context.get("requestId") if isinstance(request_context, dict) else None
    return value if isinstance(value, str) and value.isascii() and value.isprintable() else None


def caller_in(request_context: object) -> str | None:
    """API Gateway's id of the caller's key (`identity.apiKeyId`), else the authorizer's principal (a digest of
    the key): never the key itself, which API Gateway also puts there (`identity.apiKey`)."""
    if not isinstance(request_context, dict):
        return None
    identity, authorizer = request_context.get("identity"), request_context.get("authorizer")
    candidates = (
        identity.get("apiKeyId") if isinstance(identity, dict) else None,
        authorizer.get("principalId") if isinstance(authorizer, dict) else None,
    )
    for value in candidates:
        if isinstance(value, str) and 0 < len(value) <= 128 and value.isascii() and value.isprintable():
            return value
    return None


def service_at_init(entry: Entry) -> ChatService | None:
    """Build the settings, the SDK client and the store's client during init, not on the first request."""
    telemetry.quiet_chatty_libraries()
    service = configured_service(entry)
    if service is not None:
        service.warm()
    return service


def idempotency_key_in(headers: dict[Any, Any]) -> str | None:
    """The `Idempotency-Key` header's value (any case of the name), checked."""
    value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == IDEMPOTENCY_HEADER), None)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidRequest(f"Idempotency-Key: must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    return value.strip()


def json_document(raw: bytes, max_bytes: int) -> object:
    """Parse a raw body of at most `max_bytes`."""
    if not raw:
        raise InvalidRequest("body: a JSON object is required")
    if len(raw) > max_bytes:
        raise too_large(max_bytes)
    try:
        return json.loads(raw)
    except RecursionError:
        raise InvalidRequest("body: is nested too deeply to read") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # valid JSON, but past Python's 4,300 digits per integer
            raise InvalidRequest("body: holds an integer with too many digits to read") from None
        raise InvalidRequest("body: is not valid JSON") from None


def too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"body: larger than the {max_bytes} bytes accepted")
