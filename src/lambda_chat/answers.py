"""What the upstream answers, read in one place: whole answers, stream chunks and Responses API events.

An `Answer` is the upstream's JSON as it came (what an OpenAI-compatible caller gets); its `Report` is what the
call says of itself (usage, model, finish reason), and never its text. A stream has no `Answer`: its meter reads a
`Report` off the chunks as they pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeGuard

from lambda_chat.errors import UpstreamMalformed
from lambda_chat.models import CallKind, Usage

# No call reads or writes this many tokens: a usage figure beyond it is a broken answer, not a bill to settle.
MAX_USAGE_TOKENS = 1_000_000_000
# Events that end a Responses API stream; each carries the whole response, with its usage.
TERMINAL_RESPONSE_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


@dataclass(frozen=True)
class Report:
    """What one call tells about itself, in numbers and names only."""

    usage: Usage | None = None
    finish_reason: str | None = None
    model: str | None = None  # the model that answered
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    service_tier: str | None = None  # the tier the answer says it ran at (billed at)
    upstream_ms: float | None = None  # how long the successful attempt (or the stream) waited for OpenAI


@dataclass(frozen=True)
class Answer:
    """A whole answer: the upstream's JSON, as it answered, and what it reports."""

    kind: CallKind
    document: dict[str, Any]
    report: Report

    @property
    def text(self) -> str:
        """A chat completion's text (checked to be text, or none, when it was read)."""
        if self.kind != "chat":
            return ""
        return _message_content(self.document) or ""


def read_answer(kind: CallKind, body: bytes, upstream_ms: float | None = None) -> Answer:
    """Read a whole answer's body (which took `upstream_ms` to come); anything unreadable is the upstream's fault
    (502)."""
    try:
        document = json.loads(body)
    except ValueError:
        raise UpstreamMalformed("OpenAI sent a response that is not JSON") from None
    if kind != "chat":
        if not isinstance(document, dict):
            raise UpstreamMalformed("OpenAI sent a response that is not a JSON object")
        return Answer(kind, document, Report(**document_figures(kind, document), upstream_ms=upstream_ms))
    choices = document.get("choices") if isinstance(document, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamMalformed("OpenAI sent a response without choices")
    _message_content(document)
    finish_reason = choices[0].get("finish_reason")
    usage = document.get("usage")
    report = Report(
        usage=_usage(usage),
        finish_reason=finish_reason if isinstance(finish_reason, str) else None,
        model=_text(document.get("model")),
        reasoning_tokens=_detail(usage, "completion_tokens_details", "reasoning_tokens"),
        cached_tokens=_detail(usage, "prompt_tokens_details", "cached_tokens"),
        service_tier=_text(document.get("service_tier")),
        upstream_ms=upstream_ms,
    )
    return Answer(kind, document, report)


def _message_content(document: dict[str, Any]) -> str | None:
    """The first choice's message content: text, or none; anything else is a malformed answer."""
    choice = document["choices"][0]
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if content is not None and not isinstance(content, str):
        raise UpstreamMalformed("OpenAI sent a response whose message content is not text")
    return content


def document_figures(kind: CallKind, document: dict[str, Any]) -> dict[str, Any]:
    """Model, status and usage of a whole answer (a response, embeddings) or of a response's terminal event."""
    found: dict[str, Any] = {}
    model, status, usage = document.get("model"), document.get("status"), document.get("usage")
    if isinstance(model, str):
        found["model"] = model
    if isinstance(document.get("service_tier"), str):
        found["service_tier"] = document["service_tier"]
    if isinstance(status, str):
        found["finish_reason"] = status
    if not isinstance(usage, dict):
        return found
    if kind == "responses":
        found["usage"] = _usage(usage, "input_tokens", "output_tokens")
        found["reasoning_tokens"] = _detail(usage, "output_tokens_details", "reasoning_tokens")
        found["cached_tokens"] = _detail(usage, "input_tokens_details", "cached_tokens")
    elif kind == "embeddings":
        found["usage"] = _usage({**usage, "completion_tokens": 0})
    return found


def event_figures(event: dict[str, Any]) -> dict[str, Any]:
    """What one Responses API stream event tells: nothing, except the terminal one (model, status, usage)."""
    response = event.get("response")
    if event.get("type") in TERMINAL_RESPONSE_EVENTS and isinstance(response, dict):
        return document_figures("responses", response)
    return {}


def chunk_figures(chunk: dict[str, Any]) -> dict[str, Any]:
    """What one streamed chunk tells about the call: its model, finish reason and (the last chunk) usage."""
    found: dict[str, Any] = {}
    model = chunk.get("model")
    if isinstance(model, str):
        found["model"] = model
    if isinstance(chunk.get("service_tier"), str):
        found["service_tier"] = chunk["service_tier"]
    choices = chunk.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
        if isinstance(reason, str):
            found["finish_reason"] = reason
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        found["usage"] = _usage(usage)
        found["reasoning_tokens"] = _detail(usage, "completion_tokens_details", "reasoning_tokens")
        found["cached_tokens"] = _detail(usage, "prompt_tokens_details", "cached_tokens")
    return found


def _usage(
    value: object, prompt_name: str = "prompt_tokens", completion_name: str = "completion_tokens"
) -> Usage | None:
    """Usage in Chat Completions' names, from a body that may use the Responses API's (input/output tokens)."""
    if not isinstance(value, dict):
        return None
    prompt, completion, total = (value.get(name) for name in (prompt_name, completion_name, "total_tokens"))
    if not (_is_count(prompt) and _is_count(completion) and _is_count(total)):
        return None
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def _detail(usage: object, group: str, name: str) -> int | None:
    """A count from usage's details (reasoning, cached tokens), when the upstream reported it."""
    details = usage.get(group) if isinstance(usage, dict) else None
    value = details.get(name) if isinstance(details, dict) else None
    return value if _is_count(value) else None


def _is_count(value: object) -> TypeGuard[int]:
    """A token count; an integer that no call could have used makes the whole answer malformed."""
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    if not 0 <= value <= MAX_USAGE_TOKENS:
        raise UpstreamMalformed("OpenAI sent usage figures that cannot be right")
    return True


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
