"""The request limits, checked in one place for every route: which models, how many messages, how much text the model
reads, and how many tokens it may write.

The token ceiling (MAX_TOKENS_CEILING) bounds the whole call: `n` answers of up to `max_tokens` each are `n` times
that, so together they must fit the ceiling. An OpenAI-compatible request that asks for more is lowered to what
fits, and to what the model can write where that is known (and told so in a response header), or refused when
MAX_TOKENS_OVER_CEILING is `refuse`; the envelope contract always refuses, as it always has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lambda_chat.errors import InvalidRequest
from lambda_chat.pricing import max_output_tokens
from lambda_chat.settings import Settings

if TYPE_CHECKING:
    from lambda_chat.models import UpstreamRequest

LOWERED_HEADER = "X-Max-Tokens-Lowered"


@dataclass(frozen=True)
class Asked:
    """What a request asks for, as the limits see it."""

    model: str
    items: int  # messages, or input items
    items_param: str
    text_chars: int  # every text the model reads (lambda_chat.walk)
    text_param: str
    max_tokens: int | None  # the output limit asked for, per answer
    tokens_param: str
    copies: int = 1  # answers asked for (`n`)
    default_tokens: int | None = None  # sent when none is asked for; None: as much as fits
    may_lower: bool = True  # above the ceiling: lowered (else refused)


@dataclass(frozen=True)
class Granted:
    max_tokens: int  # per answer
    lowered_from: int | None = None  # what was asked, when it was lowered to fit the ceiling
    callers_own: bool = False  # `max_tokens` is the caller's own ask, sent as asked


def check(asked: Asked, settings: Settings) -> Granted:
    """The request within every limit, or an InvalidRequest naming the field at fault."""
    allowed(asked.model, settings.allowed_models)
    if asked.items > settings.max_messages:
        message = f"{asked.items_param}: at most {settings.max_messages} messages are accepted"
        raise InvalidRequest(message, asked.items_param)
    if asked.text_chars > settings.max_prompt_chars:
        raise InvalidRequest(
            f"{asked.text_param}: the text the model would read (messages, instructions, tools and their schemas, "
            f"tool calls and outputs) is {asked.text_chars} characters; at most {settings.max_prompt_chars} are "
            "accepted",
            asked.text_param,
        )
    return _output_limit(asked, settings)


def allowed(model: str, allowlist: tuple[str, ...]) -> str:
    if allowlist and model not in allowlist:
        raise InvalidRequest(f"model: '{model[:100]}' is not allowed here; allowed: {', '.join(allowlist)}", "model")
    return model


def _output_limit(asked: Asked, settings: Settings) -> Granted:
    ceiling = settings.max_tokens_ceiling
    if asked.copies > ceiling:
        raise InvalidRequest(
            f"n: {asked.copies} answers cannot fit the ceiling of {ceiling} output tokens per call", "n"
        )
    room = ceiling // asked.copies  # per answer
    cap = max_output_tokens(asked.model)  # what the model can write, where known
    if asked.max_tokens is None:
        wanted = asked.default_tokens if asked.default_tokens is not None else room
        return Granted(min(wanted, room, cap if cap is not None else room))
    lowering = asked.may_lower and settings.max_tokens_over_ceiling == "lower"
    if lowering and cap is not None and cap < room:
        room = cap  # a client's generic default (opencode asks 32,000 of every model) fits the model too
    if asked.max_tokens <= room:
        return Granted(asked.max_tokens, callers_own=True)
    if lowering:
        return Granted(room, lowered_from=asked.max_tokens)
    shared = f" (the ceiling of {ceiling} output tokens per call, shared by n={asked.copies} answers)"
    raise InvalidRequest(
        f"{asked.tokens_param}: must be at most {room}" + (shared if asked.copies > 1 else ""), asked.tokens_param
    )


def notes_on(request: UpstreamRequest) -> dict[str, str]:
    """Response headers that tell the caller what the function changed in its request (a lowered token limit)."""
    if request.lowered_from is None:
        return {}
    return {LOWERED_HEADER: f"from={request.lowered_from}, to={request.max_tokens}"}
