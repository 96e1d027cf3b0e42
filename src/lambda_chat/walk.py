"""One bounded walk over a decoded request body: every value the JSON parser accepts is either sendable or refused.

Every route's body (the envelope's, and each /v1 route's) goes through `walk` before anything else reads it:
- no recursion (a stack of its own), and no value nested more than MAX_DEPTH containers deep;
- numbers that cannot go upstream (NaN, Infinity, `1e999`, integers beyond a signed 64-bit range) are refused;
- text must be valid Unicode (JSON can carry a lone surrogate that no UTF-8 request can);
- and, on the way, it counts what the limits and the budget estimate need: the characters of every text the model
  reads (messages, instructions, tools and their schemas, tool-call arguments, tool outputs, input items...) and
  the image, file and audio parts, whose few bytes do not show what they cost.

Each refusal is an `InvalidRequest` whose `param` is the top-level field at fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lambda_chat.errors import InvalidRequest

MAX_DEPTH = 64  # containers within containers, the body itself included
MAX_INTEGER = 2**63 - 1  # OpenAI's integers (seed, dimensions, n...) are signed 64-bit at most

# Top-level fields the model does not read as text: settings, identifiers and labels (bounded by OpenAI itself).
NOT_READ = frozenset(
    {
        "model",
        "metadata",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "service_tier",
        "store",
        "stream",
        "stream_options",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "seed",
        "n",
        "temperature",
        "top_p",
        "frequency_penalty",
        "presence_penalty",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "max_tool_calls",
        "parallel_tool_calls",
        "previous_response_id",
        "conversation",
        "include",
        "truncation",
        "modalities",
        "background",
        "reasoning",
        "reasoning_effort",
        "verbosity",
        "encoding_format",
        "dimensions",
    }
)
# A part of this type costs tokens by what it shows, not by its bytes; its payload is not text the model reads.
MEDIA_TYPES = frozenset({"image_url", "input_image", "input_file", "file", "input_audio"})
MEDIA_PAYLOADS = frozenset({"url", "image_url", "file_data", "data", "file_url", "file_id", "file", "input_audio"})
# Keys whose (short) values are structure, not text: a message's role, a part's or an item's type.
LABELS = frozenset({"role", "type"})
MAX_LABEL_CHARS = 64


@dataclass(frozen=True)
class Shape:
    """What the walk found: the characters of text the model reads, and the media parts."""

    text_chars: int = 0
    media_parts: int = 0


def walk(body: dict[str, object]) -> Shape:
    """Check every value of a request body, iteratively; count its text and media parts.

    In a field the model reads, text, keys and numbers count as the characters of their JSON text (a schema's
    property names and enums are rendered into the prompt, and compatible servers' templates render tools as raw
    JSON), except media payloads (counted as parts) and short labels (`role`, `type`).
    """
    text = media = 0
    for field, value in body.items():
        _check_text(field, field)
        read = field not in NOT_READ
        stack: list[tuple[object, int, bool]] = [(value, 2, read)]  # (value, depth (the body is 1), counted)
        while stack:
            item, depth, counted = stack.pop()
            if isinstance(item, str):
                _check_text(item, field)
                text += len(item) if counted else 0
            elif isinstance(item, bool) or item is None:
                continue  # (a flag or a null is no text; a body's size bounds how many there can be)
            elif isinstance(item, int):
                if not -MAX_INTEGER - 1 <= item <= MAX_INTEGER:
                    raise InvalidRequest(
                        f"{_name(field)}: holds an integer beyond the signed 64-bit range, which cannot be sent",
                        _name(field),
                    )
                text += len(str(item)) if counted else 0
            elif isinstance(item, float):
                if not math.isfinite(item):
                    raise InvalidRequest(
                        f"{_name(field)}: holds a number that is not finite (NaN or Infinity)", _name(field)
                    )
                text += len(repr(item)) if counted else 0
            elif isinstance(item, (dict, list)):
                if depth > MAX_DEPTH:
                    raise InvalidRequest(f"{_name(field)}: is nested more than {MAX_DEPTH} levels deep", _name(field))
                if isinstance(item, list):
                    stack.extend((inner, depth + 1, counted) for inner in item)
                    continue
                kind = item.get("type")
                is_media = isinstance(kind, str) and kind in MEDIA_TYPES
                media += is_media
                for key, inner in item.items():
                    _check_text(key, field)
                    if is_media and key in MEDIA_PAYLOADS:
                        stack.append((inner, depth + 1, False))
                    elif key in LABELS and isinstance(inner, str) and len(inner) <= MAX_LABEL_CHARS:
                        _check_text(inner, field)
                    else:
                        text += len(key) if counted else 0
                        stack.append((inner, depth + 1, counted))
    return Shape(text, media)


def _name(field: str) -> str:
    """A field's name as an error names it: a caller's key may be any length, or empty."""
    return field[:100] or '""'


def _check_text(text: str, field: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(
                f"{_name(field)}: must be valid Unicode text (it holds a lone surrogate)", _name(field)
            ) from None
