"""The two faces of the one code path: the envelope contract, and an OpenAI-compatible API.

A face parses what arrived into an `UpstreamRequest` and renders the outcome: the
envelope face answers with the five-key envelope, the OpenAI face with OpenAI's own
response JSON (as the upstream returned it) or OpenAI's error format, so unmodified
OpenAI clients raise their usual exception classes.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lambda_chat.completion import Completion
from lambda_chat.errors import ChatError, InvalidRequest
from lambda_chat.models import UpstreamRequest, describe_validation_error, failure_envelope, parse_request
from lambda_chat.models import success_envelope as envelope_of
from lambda_chat.settings import Settings


class Face(Protocol):
    name: str

    def parse(self, data: object, settings: Settings) -> UpstreamRequest: ...

    def success(self, completion: Completion) -> dict[str, Any]: ...

    def failure(self, error: ChatError) -> dict[str, Any]: ...


class EnvelopeFace:
    name = "envelope"

    def parse(self, data: object, settings: Settings) -> UpstreamRequest:
        return parse_request(data, settings).to_upstream(settings)

    def success(self, completion: Completion) -> dict[str, Any]:
        return dict(envelope_of(completion.text, completion.usage, completion.finish_reason))

    def failure(self, error: ChatError) -> dict[str, Any]:
        return dict(failure_envelope(error.message))


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    include_usage: bool | None = None


class OpenAIChatBody(BaseModel):
    """The fields of OpenAI's chat completion body that we check; the rest pass through as given."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = Field(None, min_length=1)
    messages: list[OpenAIMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    stream: bool | None = None
    stream_options: StreamOptions | None = None


CHECKED_FIELDS = frozenset(OpenAIChatBody.model_fields)

# OpenAI's error `type` for each status we answer with.
ERROR_TYPES = {429: "rate_limit_error", 409: "conflict_error", 503: "server_error", 504: "timeout_error"}


class OpenAIFace:
    name = "openai"

    def parse(self, data: object, settings: Settings) -> UpstreamRequest:
        if not isinstance(data, dict):
            raise InvalidRequest("the request body must be a JSON object")
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")  # what will be sent must be sendable
        except UnicodeEncodeError:
            raise InvalidRequest("the request holds text that is not valid Unicode (a lone surrogate)") from None
        try:
            body = OpenAIChatBody.model_validate(data)
        except ValidationError as exc:
            message, param = describe_validation_error(exc)
            raise InvalidRequest(message, param=param) from None
        if body.stream_options is not None and not body.stream:
            raise InvalidRequest("stream_options: only allowed when stream is true", "stream_options")
        model = body.model or settings.default_model
        if settings.allowed_models and model not in settings.allowed_models:
            raise InvalidRequest(
                f"model: '{model[:100]}' is not allowed here; allowed: {', '.join(settings.allowed_models)}", "model"
            )
        max_tokens = body.max_completion_tokens or body.max_tokens or settings.max_tokens_ceiling
        if max_tokens > settings.max_tokens_ceiling:
            param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
            raise InvalidRequest(f"{param}: must be at most {settings.max_tokens_ceiling}", param)
        if len(body.messages) > settings.max_messages:
            raise InvalidRequest(f"messages: at most {settings.max_messages} messages are accepted", "messages")
        size = sum(_text_length(message.content) for message in body.messages)
        if size > settings.max_prompt_chars:
            raise InvalidRequest(
                f"messages: the text is {size} characters; at most {settings.max_prompt_chars} are accepted", "messages"
            )
        return UpstreamRequest(
            model=model,
            messages=data["messages"],
            max_tokens=max_tokens,
            temperature=body.temperature,
            temperature_explicit=body.temperature is not None,
            extra={key: value for key, value in data.items() if key not in CHECKED_FIELDS},
            stream=bool(body.stream),
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
        )

    def success(self, completion: Completion) -> dict[str, Any]:
        return completion.document

    def failure(self, error: ChatError) -> dict[str, Any]:
        kind = ERROR_TYPES.get(error.status, "server_error" if error.status >= 500 else "invalid_request_error")
        return {"error": {"message": error.message, "type": kind, "param": error.param, "code": error.code}}

    # Server-sent events, as OpenAI streams them: one `data:` line per chunk, then `data: [DONE]`.
    DONE = b"data: [DONE]\n\n"
    KEEPALIVE = b": keep-alive\n\n"  # an SSE comment: clients ignore it, idle timeouts see traffic

    @staticmethod
    def chunk_frame(chunk: object) -> bytes:
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    def error_frame(self, error: ChatError) -> bytes:
        """A failure after the stream has begun: OpenAI's error object as one event (the SDKs raise APIError)."""
        return self.chunk_frame(self.failure(error))

    @staticmethod
    def models(settings: Settings) -> dict[str, Any]:
        """GET /v1/models: the models this deployment allows, in OpenAI's list format."""
        names = settings.allowed_models or (settings.default_model,)
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "lambda-chat"} for name in names],
        }


def _text_length(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(part["text"]) for part in content if isinstance(part.get("text"), str))
    return 0


ENVELOPE = EnvelopeFace()
OPENAI = OpenAIFace()
