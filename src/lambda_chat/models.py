"""The request every trigger is parsed into, and the envelope every trigger answers with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lambda_chat import limits
from lambda_chat.errors import InvalidRequest
from lambda_chat.settings import Settings
from lambda_chat.walk import walk


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


class ChatRequest(BaseModel):
    """A chat request: either `prompt` (with an optional `system_message`) or `messages`."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    prompt: str | None = None
    messages: list[Message] | None = Field(None, min_length=1)
    system_message: str | None = None
    model: str | None = Field(None, min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _prompt_xor_messages(self) -> ChatRequest:
        if self.prompt is None and self.messages is None:
            raise ValueError("prompt: a non-empty prompt is required (or give 'messages' instead)")
        if self.prompt is not None and self.messages is not None:
            raise ValueError("give exactly one of 'prompt' or 'messages', not both")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("prompt: must not be empty")
        if self.messages is not None and self.system_message is not None:
            raise ValueError("'system_message' goes with 'prompt'; put a system message in 'messages' instead")
        return self

    def chat_messages(self) -> list[dict[str, str]]:
        """The messages to send upstream, in OpenAI's format."""
        if self.messages is not None:
            return [{"role": m.role, "content": m.content} for m in self.messages]
        messages = []
        if self.system_message:
            messages.append({"role": "system", "content": self.system_message})
        messages.append({"role": "user", "content": self.prompt or ""})
        return messages

    def to_upstream(self, settings: Settings) -> UpstreamRequest:
        """The call to make, with the envelope contract's defaults (temperature 0.7, 1000 tokens)."""
        return UpstreamRequest(
            model=self.model or settings.default_model,
            messages=self.chat_messages(),
            max_tokens=self.max_tokens or min(DEFAULT_MAX_TOKENS, settings.max_tokens_ceiling),
            temperature=DEFAULT_TEMPERATURE if self.temperature is None else self.temperature,
            temperature_explicit=self.temperature is not None,
            caller_token_limit=self.max_tokens is not None,
        )


DEFAULT_TEMPERATURE = 0.7
DEFAULT_MAX_TOKENS = 1000


# What an upstream call is: a chat completion, a response (the Responses API), embeddings, or a relay of a
# stored response's own routes (GET, DELETE, cancel). Each has its path, token limit field and usage names.
CallKind = Literal["chat", "responses", "embeddings", "relay"]


@dataclass(frozen=True)
class UpstreamRequest:
    """What goes to OpenAI, whichever face (envelope or OpenAI-compatible) the request came through."""

    model: str
    messages: list[dict[str, Any]] = field(default_factory=list)  # chat only
    max_tokens: int | None = None  # sent under the parameter the endpoint understands (none for embeddings)
    temperature: float | None = None  # None: the model's own default
    temperature_explicit: bool = False  # chosen by the caller: never dropped, its rejection is the caller's 400
    extra: dict[str, Any] = field(default_factory=dict)  # other OpenAI parameters, passed through as given
    stream: bool = False  # answer as server-sent events (OpenAI face, streaming app only)
    include_usage: bool = False  # the caller asked for the usage chunk (`stream_options.include_usage`)
    kind: CallKind = "chat"
    path: str = "/chat/completions"
    method: Literal["GET", "POST", "DELETE"] = "POST"
    query: tuple[tuple[str, str], ...] = ()  # a relay's query string (OpenAI's own parameters only)
    copies: int = 1  # answers asked for (`n`): the estimate's output is `copies` times `max_tokens`
    media_parts: int = 0  # image, file and audio parts, which cost tokens their bytes do not show
    service_tier: str | None = None  # as asked: the tier the call is billed at
    lowered_from: int | None = None  # the output limit asked for, when it was lowered to fit the ceiling
    caller_token_limit: bool = False  # the output limit is the caller's own (else the function chose or lowered it)


def parse_request(data: object, settings: Settings) -> ChatRequest:
    """Validate a decoded request against the model and the configured limits."""
    if not isinstance(data, dict):
        raise InvalidRequest("the request must be a JSON object")
    shape = walk(data)
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as exc:
        message, param = describe_validation_error(exc)
        raise InvalidRequest(message, param) from None
    field = "messages" if request.messages is not None else "prompt"
    asked = limits.Asked(
        model=request.model or settings.default_model,
        items=len(request.messages or ()),
        items_param="messages",
        text_chars=shape.text_chars,
        text_param=field,
        max_tokens=request.max_tokens,
        tokens_param="max_tokens",
        default_tokens=DEFAULT_MAX_TOKENS,
        may_lower=False,  # the envelope contract refuses what it cannot do, as it always has
    )
    limits.check(asked, settings)
    return request


def describe_validation_error(exc: ValidationError) -> tuple[str, str | None]:
    """Field-named messages without echoing the input (it may be the prompt), and the first field at fault."""
    problems = []
    fields = []
    for error in exc.errors(include_input=False, include_url=False):
        location = ".".join(str(part) if part != "" else '""' for part in error["loc"])  # a key may be ""
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{location}: {message}" if location else message)
        if location:
            fields.append(location)
    return "invalid request: " + "; ".join(problems[:5]), (fields[0] if fields else None)


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Envelope(TypedDict):
    success: bool
    completion: str | None
    usage: Usage | None
    finish_reason: str | None
    error: str | None


def success_envelope(completion: str, usage: Usage | None, finish_reason: str | None) -> Envelope:
    return {
        "success": True,
        "completion": completion,
        "usage": usage,
        "finish_reason": finish_reason,
        "error": None,
    }


def failure_envelope(message: str) -> Envelope:
    return {"success": False, "completion": None, "usage": None, "finish_reason": None, "error": message}
