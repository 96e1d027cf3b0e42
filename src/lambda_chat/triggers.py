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

from lambda_chat.adapter import (
    ROUTES,
    Facts,
    Route,
    caller_in,
    find_route,
    headers_of,
    idempotency_key_in,
    json_document,
    request_id_in,
    too_large,
)
from lambda_chat.calls import Outcome
from lambda_chat.deadline import LambdaContextLike
from lambda_chat.errors import InvalidRequest
from lambda_chat.faces import Face

ENVELOPE_ROUTE = next(route for route in ROUTES if route.name == "chat")


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
        return request_id_in(self.event.get("requestContext")) if self.is_http else None

    def route(self) -> Route:
        """The route by the path's end; events other than HTTP are the envelope contract's."""
        return (
            find_route("handler", self._method() or "POST", self.path, suffix=True)[0]
            if self.is_http
            else ENVELOPE_ROUTE
        )

    @property
    def path(self) -> str:
        path = self.event.get("path") if self.kind == "api_gateway_rest" else self.event.get("rawPath")
        return path if isinstance(path, str) else ""

    def check_method(self, route: Route) -> None:
        method = self._method() if self.is_http else None
        if method is not None:
            route.check(method, self.path)

    def facts(self, context: LambdaContextLike, event_caller: str | None, face: Face) -> Facts:
        return Facts(self.kind, face, context, self.caller(event_caller), behind_api_gateway=self.is_http)

    def caller(self, event_caller: str | None = None) -> str:
        """Who pays for this call: the API key's id on HTTP triggers, else a configured name or the trigger's kind."""
        return (caller_in(self.event.get("requestContext")) if self.is_http else event_caller) or self.kind

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

    def respond(self, outcome: Outcome) -> Any:
        """The outcome in this trigger's shape: the body itself, or API Gateway's proxy response."""
        if not self.is_http:
            return outcome.body
        headers = headers_of(outcome, self.request_id)
        return {
            "statusCode": outcome.status,
            "headers": headers,
            "body": json.dumps(outcome.body),
            "isBase64Encoded": False,
        }

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
