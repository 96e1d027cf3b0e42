"""The two faces of the one code path: the envelope contract, and an OpenAI-compatible API.

A face parses what arrived into an `UpstreamRequest` and renders the outcome: the
envelope face answers with the five-key envelope, the OpenAI face with OpenAI's own
response JSON (as the upstream returned it) or OpenAI's error format, so unmodified
OpenAI clients raise their usual exception classes.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lambda_chat import limits
from lambda_chat.answers import Answer
from lambda_chat.errors import ChatError, InvalidRequest
from lambda_chat.models import UpstreamRequest, describe_validation_error, failure_envelope, parse_request
from lambda_chat.models import success_envelope as envelope_of
from lambda_chat.settings import Settings
from lambda_chat.walk import Shape, walk

Body = TypeVar("Body", bound=BaseModel)


class Face(Protocol):
    name: str

    def parse(self, data: object, settings: Settings) -> UpstreamRequest: ...

    def success(self, answer: Answer) -> dict[str, Any]: ...

    def failure(self, error: ChatError) -> dict[str, Any]: ...


class EnvelopeFace:
    name = "envelope"

    def parse(self, data: object, settings: Settings) -> UpstreamRequest:
        return parse_request(data, settings).to_upstream(settings)  # text only: no media parts

    def success(self, answer: Answer) -> dict[str, Any]:
        return dict(envelope_of(answer.text, answer.report.usage, answer.report.finish_reason))

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
    n: int | None = Field(None, gt=0)
    service_tier: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None


# OpenAI's error `type` for each status we answer with.
ERROR_TYPES = {429: "rate_limit_error", 409: "conflict_error", 503: "server_error", 504: "timeout_error"}


class ResponsesBody(BaseModel):
    """The fields of a Responses API body that we check; the rest (tools, reasoning, store...) pass through."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = Field(None, min_length=1)
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, gt=0)
    service_tier: str | None = None
    stream: bool | None = None


class EmbeddingsBody(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = Field(None, min_length=1)
    input: object  # a text, texts, token ids, or lists of token ids: checked by EmbeddingsFace


# Set by the function, not passed through as given (`n` and `service_tier` are checked, and passed through).
CHAT_SET_FIELDS = frozenset({"model", "messages", "temperature", "max_tokens", "max_completion_tokens", "stream",
                             "stream_options"})  # fmt: skip
# Set by the function, not passed through as given.
RESPONSES_SET_FIELDS = frozenset({"model", "max_output_tokens", "stream"})


class OpenAIFace:
    """POST /v1/chat/completions, and what every OpenAI-compatible route shares: errors, the stream's framing."""

    name = "openai"

    def parse(self, data: object, settings: Settings) -> UpstreamRequest:
        body, fields, shape = _checked(data, OpenAIChatBody)
        if body.stream_options is not None and not body.stream:
            raise InvalidRequest("stream_options: only allowed when stream is true", "stream_options")
        model = body.model or settings.default_model
        tokens_param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        asked = limits.Asked(
            model=model,
            items=len(body.messages),
            items_param="messages",
            text_chars=shape.text_chars,
            text_param="messages",
            max_tokens=body.max_completion_tokens or body.max_tokens,
            tokens_param=tokens_param,
            copies=body.n or 1,
        )
        granted = limits.check(asked, settings)
        return UpstreamRequest(
            model=model,
            messages=fields["messages"],
            max_tokens=granted.max_tokens,
            temperature=body.temperature,
            temperature_explicit=body.temperature is not None,
            extra={key: value for key, value in fields.items() if key not in CHAT_SET_FIELDS},
            stream=bool(body.stream),
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
            copies=body.n or 1,
            media_parts=shape.media_parts,
            service_tier=body.service_tier,
            lowered_from=granted.lowered_from,
            caller_token_limit=granted.callers_own,
        )

    def success(self, answer: Answer) -> dict[str, Any]:
        return answer.document

    def failure(self, error: ChatError) -> dict[str, Any]:
        kind = ERROR_TYPES.get(error.status, "server_error" if error.status >= 500 else "invalid_request_error")
        return {"error": {"message": error.message, "type": kind, "param": error.param, "code": error.code}}

    # Server-sent events, as OpenAI streams them: one `data:` line per chunk, then `data: [DONE]`.
    DONE = b"data: [DONE]\n\n"
    KEEPALIVE = b": keep-alive\n\n"  # an SSE comment: clients ignore it, idle timeouts see traffic

    def chunk_frame(self, chunk: object) -> bytes:
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    def error_frame(self, error: ChatError) -> bytes:
        """A failure after the stream has begun: OpenAI's error object as one event (the SDKs raise APIError)."""
        return self.chunk_frame(self.failure(error))

    @staticmethod
    def models(settings: Settings) -> dict[str, Any]:
        """GET /v1/models: the models each route allows, in OpenAI's list format (`routes` says which)."""
        chat_routes = ["chat.completions", "responses"]
        listed = [(name, chat_routes) for name in settings.allowed_models or (settings.default_model,)]
        listed += [(name, ["embeddings"]) for name in settings.embedding_models]
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "lambda-chat", "routes": routes}
                for name, routes in listed
            ],
        }


class ResponsesFace(OpenAIFace):
    """POST /v1/responses: the Responses API, streamed as typed events (`event: response.output_text.delta`...)."""

    name = "openai-responses"
    DONE = b""  # the stream ends with its `response.completed` (or failed, incomplete) event

    def parse(self, data: object, settings: Settings) -> UpstreamRequest:
        body, fields, shape = _checked(data, ResponsesBody)
        model = body.model or settings.default_model
        asked = limits.Asked(
            model=model,
            items=len(body.input) if isinstance(body.input, list) else 0,
            items_param="input",
            text_chars=shape.text_chars,
            text_param="input",
            max_tokens=body.max_output_tokens,
            tokens_param="max_output_tokens",
        )
        granted = limits.check(asked, settings)
        extra = {key: value for key, value in fields.items() if key not in RESPONSES_SET_FIELDS}
        return UpstreamRequest(
            model=model,
            max_tokens=granted.max_tokens,
            extra=extra,
            stream=bool(body.stream),
            kind="responses",
            path="/responses",
            media_parts=shape.media_parts,
            service_tier=body.service_tier,
            lowered_from=granted.lowered_from,
            caller_token_limit=granted.callers_own,
        )

    def chunk_frame(self, chunk: object) -> bytes:
        kind = chunk.get("type") if isinstance(chunk, dict) else None
        event = f"event: {kind}\n".encode() if isinstance(kind, str) and kind.isprintable() else b""
        return event + super().chunk_frame(chunk)

    def error_frame(self, error: ChatError) -> bytes:
        """OpenAI's `error` event of the Responses API."""
        return self.chunk_frame({"type": "error", "code": error.code, "message": error.message, "param": error.param})


class EmbeddingsFace(OpenAIFace):
    """POST /v1/embeddings, with its own model allowlist and bounds on the inputs' count and size."""

    name = "openai-embeddings"

    def parse(self, data: object, settings: Settings) -> UpstreamRequest:
        body, fields, _ = _checked(data, EmbeddingsBody)
        model = limits.allowed(body.model or settings.embedding_models[0], settings.embedding_models)
        inputs = _embedding_inputs(body.input)
        if not inputs or len(inputs) > settings.max_embedding_inputs:
            raise InvalidRequest(f"input: give 1 to {settings.max_embedding_inputs} inputs", "input")
        longest = max(len(item) for item in inputs)
        if longest > settings.max_embedding_input_chars:
            raise InvalidRequest(
                f"input: an input is {longest} long; at most {settings.max_embedding_input_chars} characters "
                "(or token ids) are accepted per input",
                "input",
            )
        extra = {key: value for key, value in fields.items() if key != "model"}
        return UpstreamRequest(model=model, extra=extra, kind="embeddings", path="/embeddings")


def _embedding_inputs(given: object) -> list[str | list[int]]:
    """The inputs of an embeddings request: a text, texts, token ids (one input) or lists of token ids."""

    def tokens(value: object) -> bool:
        return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)

    if isinstance(given, str):
        return [given]
    if tokens(given) and given:
        return [given]  # type: ignore[list-item]  # checked by tokens()
    if isinstance(given, list) and all(isinstance(item, str) or (tokens(item) and item) for item in given):
        return given
    raise InvalidRequest("input: must be a text, a list of texts, token ids, or lists of token ids", "input")


def _checked(data: object, model: type[Body]) -> tuple[Body, dict[str, Any], Shape]:
    """The body walked (every value sendable) and validated against the fields we check, or refused naming the
    field; and what the walk counted."""
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    shape = walk(data)
    try:
        return model.model_validate(data), data, shape
    except ValidationError as exc:
        message, param = describe_validation_error(exc)
        raise InvalidRequest(message, param=param) from None


ENVELOPE = EnvelopeFace()
OPENAI = OpenAIFace()
RESPONSES = ResponsesFace()
EMBEDDINGS = EmbeddingsFace()
