"""Which kind of event arrived, where its request is, and how to answer it.

API Gateway (REST v1 proxy, HTTP API v2) and Lambda Function URLs carry the
request as a JSON body and get `{statusCode, headers, body}` back; a direct
invoke (or Step Functions) is the request; EventBridge carries it in `detail`.
The last two get the envelope itself.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from lambda_chat.errors import InvalidRequest, MethodNotAllowed, PayloadTooLarge

JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}
IDEMPOTENCY_HEADER = "idempotency-key"
MAX_IDEMPOTENCY_KEY_LENGTH = 255


# HTTP routes by path suffix: the envelope contract on POST /chat (and on any other path, e.g. a Function
# URL's root), the OpenAI-compatible API under /v1.
OPENAI_ROUTES = {"/v1/chat/completions": ("openai_chat", "POST"), "/v1/models": ("openai_models", "GET")}


@dataclass(frozen=True)
class Trigger:
    kind: str  # "api_gateway_rest", "http_api", "direct" or "eventbridge"
    event: Any

    @property
    def is_http(self) -> bool:
        return self.kind in ("api_gateway_rest", "http_api")

    @property
    def is_async(self) -> bool:
        """Invoked asynchronously (EventBridge): nobody waits for the answer, Lambda retries failures."""
        return self.kind == "eventbridge"

    @property
    def request_id(self) -> str | None:
        """API Gateway's request id, used as the correlation id in logs."""
        context = self.event.get("requestContext") if self.is_http else None
        value = context.get("requestId") if isinstance(context, dict) else None
        return value if isinstance(value, str) and value.isascii() and value.isprintable() else None

    @property
    def route(self) -> str:
        """ "chat" (the envelope contract), "openai_chat" or "openai_models"."""
        return self._route()[0]

    def _route(self) -> tuple[str, str]:
        if self.is_http:
            path = self.event.get("path") if self.kind == "api_gateway_rest" else self.event.get("rawPath")
            if isinstance(path, str):
                for suffix, route in OPENAI_ROUTES.items():
                    if path.rstrip("/").endswith(suffix):
                        return route
        return "chat", "POST"

    def check_method(self) -> None:
        if not self.is_http:
            return
        method = self._method()
        if method is not None and method.upper() != self._route()[1]:
            raise MethodNotAllowed(f"use {self._route()[1]} here", allow=self._route()[1])

    def caller(self, event_caller: str | None = None) -> str:
        """Who pays for this call: the API key's id on HTTP triggers, else a configured name or the trigger's kind."""
        if self.is_http:
            return caller_in(self.event.get("requestContext")) or self.kind
        return event_caller or self.kind

    def idempotency_key(self) -> str | None:
        """The `Idempotency-Key` header of an HTTP request, or an EventBridge event's id."""
        if self.kind == "eventbridge":
            value = self.event.get("id")
            return value if isinstance(value, str) and value else None
        headers = self.event.get("headers") if self.is_http else None
        return idempotency_key_in(headers) if isinstance(headers, dict) else None

    def request_data(self, max_body_bytes: int) -> object:
        """The decoded request: a JSON body for HTTP, `detail` for EventBridge, else the event."""
        if self.kind == "eventbridge":
            return self.event.get("detail")
        if not self.is_http:
            return self.event
        return json_body(self.event.get("body"), self.event.get("isBase64Encoded") is True, max_body_bytes)

    def respond(
        self,
        status: int,
        body: dict[str, Any],
        retry_after: str | None = None,
        replayed: bool = False,
        final: bool = False,
        extra: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        if not self.is_http:
            return body
        headers = response_headers(self.request_id, retry_after, replayed, final, extra)
        if status == 405:
            headers["Allow"] = self._route()[1]
        return {"statusCode": status, "headers": headers, "body": json.dumps(body), "isBase64Encoded": False}

    def _method(self) -> str | None:
        if self.kind == "api_gateway_rest":
            method = self.event.get("httpMethod")
        else:
            context = self.event.get("requestContext")
            http = context.get("http") if isinstance(context, dict) else None
            method = http.get("method") if isinstance(http, dict) else None
        return method if isinstance(method, str) else None


def identify(event: object) -> Trigger:
    """Tell the trigger apart by the fields only its events carry."""
    if not isinstance(event, dict):
        return Trigger("direct", event)
    context = event.get("requestContext")
    if isinstance(context, dict):  # by the request context, not by `body`: a GET or an empty POST has none
        if isinstance(context.get("http"), dict):  # HTTP API (payload 2.0) and Function URLs
            return Trigger("http_api", event)
        if "httpMethod" in event or "httpMethod" in context:  # REST API (payload 1.0)
            return Trigger("api_gateway_rest", event)
    if "detail-type" in event and "detail" in event and "source" in event:
        return Trigger("eventbridge", event)
    return Trigger("direct", event)


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


def response_headers(
    request_id: str | None,
    retry_after: str | None,
    replayed: bool,
    final: bool = False,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The headers of a JSON answer over HTTP; `final`: OpenAI's SDKs should not retry it (a spent budget)."""
    headers = {**JSON_HEADERS, **(extra or {})}
    if final:
        headers["x-should-retry"] = "false"
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return headers


def idempotency_key_in(headers: dict[Any, Any]) -> str | None:
    """The `Idempotency-Key` header's value (any case of the name), checked."""
    value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == IDEMPOTENCY_HEADER), None)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidRequest(f"Idempotency-Key: must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    return value.strip()


def json_body(body: object, is_base64: bool, max_bytes: int) -> object:
    """Decode an HTTP body, enforcing the size cap before any parsing."""
    if body is None or body == "":
        raise InvalidRequest("body: a JSON object is required")
    if not isinstance(body, str):
        raise InvalidRequest("body: must be a string")
    if is_base64:
        if len(body) > (max_bytes + 2) // 3 * 4:
            raise too_large(max_bytes)
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("body: isBase64Encoded is true but the body is not valid base64") from None
    else:
        if len(body) > max_bytes:
            raise too_large(max_bytes)
        try:
            raw = body.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest("body: is not valid UTF-8 text") from None
    return json_document(raw, max_bytes)


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
