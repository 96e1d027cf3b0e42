"""Property-based fuzzing of the bodies every POST route takes, through `make serve`'s app, with budgets on.

Each example is one body posted to POST /v1/chat/completions, /v1/responses, /v1/embeddings or /chat, built
from a valid request of that route (known fields with valid values, real-looking tool schemas, pass-through
fields) and, most of the time, given defects: arbitrary JSON in any known or pass-through field, every number
form Python's JSON parser accepts (NaN, Infinity, 1e999, -0.0, 400-digit integers, huge floats, sent as
literal text too), unhashable values where text is expected (a `type` key holding a dict or a list, a `model`
that is a list), lone surrogates, and nesting on both sides of the depth limit. Whatever arrives:

- nothing is a 5xx, and the app logs no traceback and no "unexpected failure";
- the answer is JSON (or, for a stream, server-sent events whose data is JSON);
- a body over MAX_BODY_BYTES is a 413, and only such a body;
- a 400 names the field at fault (`error.param` on /v1; the envelope's `error` on /chat), and the
  upstream was not called;
- anything else is a 200, after one upstream call that got the pass-through fields exactly as sent;
- a valid request is a 200; a body holding a non-finite number, an integer beyond int64 or nesting
  deeper than MAX_DEPTH is a 400.

The app runs in-process: `local.serve.local_app` is called with hand-built ASGI scopes on one event loop
(no socket between test and app), while the fake OpenAI and moto_server (Secrets Manager and the budget
table) are real loopback servers. FUZZ_EXAMPLES (default 10000) is how many bodies this module posts,
shared out among its tests by SHARES: `FUZZ_EXAMPLES=200000 .venv/bin/python -m pytest tests/fuzz`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import pydantic_function_tool
from openai.lib._parsing._completions import type_to_response_format_param
from pydantic import BaseModel

from lambda_chat.asgi import logger as function_logger
from lambda_chat.walk import MAX_DEPTH
from local.serve import local_app
from tests.support.fuzz_stack import (
    ALLOWED_MODELS,
    DEFAULT_MODEL,
    MAX_BODY_BYTES,
    MAX_TOKENS_CEILING,
    TALLY,
    FuzzStack,
    fuzz_examples,
)

Json = Any  # a JSON-like value, possibly holding Raw and Deep pieces

INT64 = (-(2**63), 2**63 - 1)
EMBEDDING_MODEL = "text-embedding-3-small"  # the function's default EMBEDDING_MODELS
ENVELOPE_KEYS = {"success", "completion", "usage", "finish_reason", "error"}
ENVELOPE_FIELDS = ("prompt", "messages", "system_message", "model", "temperature", "max_tokens")
ROUTES = {
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
    "embeddings": "/v1/embeddings",
    "envelope": "/chat",
}
# The fields each /v1 route sets itself rather than passing on as given.
SET_BY_THE_FUNCTION = {
    "chat": {"model", "max_tokens", "max_completion_tokens", "temperature", "stream", "stream_options"},
    "responses": {"model", "max_output_tokens", "stream"},
    "embeddings": {"model"},
}
KNOWN_FIELDS = {
    "chat": ("model", "messages", "temperature", "max_tokens", "max_completion_tokens", "stream", "stream_options"),
    "responses": ("model", "input", "instructions", "max_output_tokens", "stream"),
    "embeddings": ("model", "input"),
    "envelope": ENVELOPE_FIELDS,
}

# How the FUZZ_EXAMPLES bodies are shared out among the tests below (the shares add up to 1).
SHARES = {"chat": 0.3, "responses": 0.25, "embeddings": 0.15, "envelope": 0.2, "raw": 0.1}


def fuzz_settings(share: str) -> settings:
    return settings(
        max_examples=max(1, round(fuzz_examples() * SHARES[share])),
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.function_scoped_fixture,  # `api`: one warm container for all of a test's examples, on purpose
        ],
        print_blob=True,
    )


# ---------------------------------------------------------------------------------------------------
# JSON pieces that json.dumps cannot write as wanted: number literals as written, and deep nesting
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A JSON number literal sent exactly as written (1e999 parses to inf, 400 digits to an int)."""

    text: str


@dataclass(frozen=True)
class Deep:
    """A value nested `depth` containers deep, written as text (json.dumps would recurse past its limit)."""

    depth: int
    shape: Literal["list", "object", "typed"] = "list"
    leaf: str = "1"

    def text(self) -> str:
        if self.shape == "list":
            return "[" * self.depth + self.leaf + "]" * self.depth
        if self.shape == "object":
            return '{"a":' * self.depth + self.leaf + "}" * self.depth
        return '{"type":' * self.depth + self.leaf + "}" * self.depth  # a `type` that is a dict, all the way down


DIGITS_400 = "1" + "0" * 399
RAW_NUMBERS = (
    "1e999",
    "-1e999",
    "1E400",
    "1e-999",
    "-0",
    "-0.0",
    "0e0",
    "2.5e-324",
    "1.7976931348623157e308",
    "1.7976931348623159e308",  # rounds to inf
    DIGITS_400,
    "-" + "9" * 400,
    DIGITS_400 + ".5",  # a float literal with 400 digits: inf
    "0." + "0" * 398 + "1",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "NaN",
    "Infinity",
    "-Infinity",
)
_MARK = "\x00\ufdd0R{}\ufdd0\x00"


def render(body: Json, *, ensure_ascii: bool = True) -> str:
    """The body as JSON text (NaN and Infinity allowed), with Raw and Deep pieces written as they are."""
    pieces: list[str] = []

    def swap(value: Json) -> Json:
        if isinstance(value, Raw | Deep):
            pieces.append(value.text if isinstance(value, Raw) else value.text())
            return _MARK.format(len(pieces) - 1)
        if isinstance(value, dict):
            return {name: swap(inner) for name, inner in value.items()}
        if isinstance(value, list):
            return [swap(inner) for inner in value]
        return value

    text = json.dumps(swap(body), allow_nan=True, ensure_ascii=ensure_ascii)
    for index, piece in enumerate(pieces):
        text = text.replace(json.dumps(_MARK.format(index), ensure_ascii=ensure_ascii), piece, 1)
    return text


# ---------------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------------

SPICY = ("\x00", "\x1b", "\u2028", "\u202e", "\ufeff", "\uffff", "\U0010ffff", "\U0001f600", "e\u0301", '"', "\\")
lone_surrogates = st.characters(categories=("Cs",))


def texts(max_size: int = 10) -> st.SearchStrategy[str]:
    """Well-formed text, sometimes with a piece that likes to break things in it."""
    return st.builds(
        lambda text, spice: text[: len(text) // 2] + spice + text[len(text) // 2 :],
        st.text(st.characters(codec="utf-8"), max_size=max_size),
        st.sampled_from(("", "", *SPICY)),
    )


# Words from a small vocabulary (a draw per word, not per character: generation is most of an example's cost).
VOCABULARY = (
    "hi",
    "Paris",
    "weather",
    "café",
    "naïve",
    "日本語",
    "Привет",
    "مرحبا",
    "😀",
    "1e100",
    "null",
    "type",
    "0",
)
words = st.sampled_from(VOCABULARY)
sentences = st.lists(words, min_size=1, max_size=6).map(" ".join)

huge_ints = st.one_of(
    st.integers(min_value=10**399, max_value=10**400 - 1),
    st.integers(min_value=-(10**400) + 1, max_value=-(10**399)),
)
integers = st.one_of(
    st.integers(min_value=-1000, max_value=1000),
    st.sampled_from([INT64[0], INT64[1], INT64[0] - 1, INT64[1] + 1, 2**64, -(2**64)]),
    st.integers(),
    huge_ints,
)
floats = st.one_of(
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, -1.7976931348623157e308, 5e-324]),
)
numbers = st.one_of(integers, floats, st.sampled_from(RAW_NUMBERS).map(Raw))
junk_texts = st.one_of(texts(), lone_surrogates, st.builds(lambda t, s: t + s, texts(), lone_surrogates))
scalars = st.one_of(st.none(), st.booleans(), numbers, junk_texts)
junk_keys = st.one_of(st.sampled_from(["type", "text", "content", "role", "name", "properties", "n", ""]), texts(6))
depths = st.one_of(
    st.integers(min_value=1, max_value=MAX_DEPTH - 3),
    st.sampled_from([MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 2, 600, 998, 1000, 3000]),
    st.integers(min_value=MAX_DEPTH + 2, max_value=1200),
)
deep_values = st.builds(Deep, depths, st.sampled_from(["list", "object", "typed"]), st.sampled_from(["1", '"x"', "[]"]))
junk: st.SearchStrategy[Json] = st.recursive(
    st.one_of(scalars, deep_values),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(junk_keys, inner, max_size=3),
        st.fixed_dictionaries({"type": st.one_of(st.lists(inner, max_size=2), st.dictionaries(junk_keys, inner))}),
    ),
    max_leaves=6,
)


# ---------------------------------------------------------------------------------------------------
# Real-looking tools and formats
# ---------------------------------------------------------------------------------------------------


class Shape(BaseModel):
    """A field named `type` makes the schema's `properties` hold a dict under the key "type"."""

    type: Literal["circle", "square"]
    size: float | None
    tags: list[str]


class Lookup(BaseModel):
    type: str
    id: int
    shape: Shape | None = None


UNION_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["a", "b"]},
        "note": {"type": ["string", "null"]},
        "items": {"type": "array", "items": {"type": ["integer", "null"]}},
        "where": {"anyOf": [{"type": "string"}, {"type": "object", "properties": {"type": {"type": "string"}}}]},
    },
    "required": ["type", "note", "items", "where"],
    "additionalProperties": False,
}


def plain(value: Json) -> Json:
    """The SDK's helpers answer with dict subclasses: plain JSON, as a client sends it."""
    return json.loads(json.dumps(value))


CHAT_TOOLS = [
    plain(pydantic_function_tool(Shape)),
    plain(pydantic_function_tool(Lookup, name="lookup", description="Find a thing by its type and id")),
    {"type": "function", "function": {"name": "union", "parameters": UNION_SCHEMA, "strict": True}},
    {"type": "function", "function": {"name": "no_arguments"}},
]
RESPONSES_TOOLS = [
    {"type": "function", **{k: v for k, v in tool["function"].items() if k != "description"}}  # type: ignore[index]
    for tool in CHAT_TOOLS
] + [{"type": "web_search_preview"}]
SCHEMAS = [Shape.model_json_schema(), UNION_SCHEMA]
RESPONSE_FORMATS = [
    {"type": "text"},
    {"type": "json_object"},
    plain(type_to_response_format_param(Shape)),
    plain(type_to_response_format_param(Lookup)),
    {"type": "json_schema", "json_schema": {"name": "union", "schema": UNION_SCHEMA, "strict": True}},
]
TEXT_FORMATS = [
    {"format": {"type": "text"}},
    {"format": {"type": "json_object"}},
    {"format": {"type": "json_schema", "name": "shape", "schema": SCHEMAS[0], "strict": True}},
    {"format": {"type": "json_schema", "name": "union", "schema": UNION_SCHEMA, "strict": True}},
    {"verbosity": "low"},
]
IMAGE = (  # a 1x1 PNG
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True one time in n (Hypothesis favours a range's ends, so the ends are not the rare case)."""
    return st.integers(0, n - 1).map(lambda drawn: drawn == n // 2)


def some(values: list[Json]) -> st.SearchStrategy[list[Json]]:
    return st.lists(st.sampled_from(values), min_size=1, max_size=3)


# Pass-through fields with values a caller might really send; shallow nesting in metadata is valid too.
shallow_metadata = st.builds(lambda depth: {"trace": Deep(depth, "object", '"x"')}, st.integers(1, MAX_DEPTH - 3))
metadata = st.one_of(st.dictionaries(words, sentences, max_size=3), shallow_metadata)
probabilities = st.floats(min_value=0, max_value=1)
penalties = st.floats(min_value=-2, max_value=2)
temperatures = st.one_of(st.floats(min_value=0, max_value=2), st.just(-0.0), st.integers(0, 2))
token_limits = st.integers(min_value=1, max_value=3 * MAX_TOKENS_CEILING)  # over the ceiling: lowered on /v1
COMMON_OPTIONAL = {
    "temperature": temperatures,
    "top_p": probabilities,
    "metadata": metadata,
    "user": words,
    "service_tier": st.sampled_from(["auto", "default"]),  # flex, priority: unpriced tiers may be refused
    "parallel_tool_calls": st.booleans(),
    "store": st.booleans(),
}
CHAT_OPTIONAL = {
    **COMMON_OPTIONAL,
    "model": st.sampled_from(ALLOWED_MODELS),
    "max_tokens": token_limits,
    "max_completion_tokens": token_limits,
    "n": st.integers(1, 4),
    "stop": st.one_of(words, st.lists(words, max_size=4)),
    "seed": st.integers(*INT64),
    "frequency_penalty": penalties,
    "presence_penalty": penalties,
    "logit_bias": st.dictionaries(st.integers(0, 200_000).map(str), st.integers(-100, 100), max_size=3),
    "logprobs": st.booleans(),
    "top_logprobs": st.integers(0, 20),
    "response_format": st.sampled_from(RESPONSE_FORMATS),
    "tools": some(CHAT_TOOLS),
    "tool_choice": st.sampled_from(["auto", "none", "required", {"type": "function", "function": {"name": "Shape"}}]),
}
RESPONSES_OPTIONAL = {
    **COMMON_OPTIONAL,
    "model": st.sampled_from(ALLOWED_MODELS),
    "instructions": sentences,
    "max_output_tokens": token_limits,
    "tools": some(RESPONSES_TOOLS),
    "tool_choice": st.sampled_from(["auto", "none", "required", {"type": "function", "name": "lookup"}]),
    "text": st.sampled_from(TEXT_FORMATS),
    "reasoning": st.sampled_from([{"effort": "low"}, {"effort": "minimal", "summary": "auto"}]),
    "truncation": st.sampled_from(["auto", "disabled"]),
    "include": st.just(["message.output_text.logprobs"]),
    "previous_response_id": st.just("resp_previous"),
}
EMBEDDINGS_OPTIONAL = {
    "model": st.just(EMBEDDING_MODEL),
    "encoding_format": st.sampled_from(["float", "base64"]),
    "dimensions": st.integers(1, 1536),
    "user": words,
}
ENVELOPE_OPTIONAL = {
    "model": st.sampled_from(ALLOWED_MODELS),
    "temperature": temperatures,
    "max_tokens": st.integers(1, MAX_TOKENS_CEILING),
}

text_parts = st.builds(lambda text: {"type": "text", "text": text}, sentences)
image_parts = st.just({"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}})
chat_contents = st.one_of(sentences, st.lists(st.one_of(text_parts, image_parts), min_size=1, max_size=2))
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"type":"a","id":1}'}}
chat_turns = st.one_of(
    st.builds(
        lambda role, content: [{"role": role, "content": content}], st.sampled_from(["user", "user"]), chat_contents
    ),
    st.builds(
        lambda role, text: [{"role": role, "content": text}], st.sampled_from(["system", "developer"]), sentences
    ),
    st.builds(lambda text: [{"role": "assistant", "content": text}], sentences),
    st.just(
        [
            {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]
    ),
)
chat_messages = st.lists(chat_turns, min_size=1, max_size=3).map(lambda turns: [m for turn in turns for m in turn])

input_parts = st.one_of(
    st.builds(lambda text: {"type": "input_text", "text": text}, sentences),
    st.just({"type": "input_image", "image_url": IMAGE, "detail": "low"}),
)
input_items = st.one_of(
    st.builds(lambda text: {"role": "user", "content": text}, sentences),
    st.builds(lambda parts: {"role": "user", "content": parts}, st.lists(input_parts, min_size=1, max_size=2)),
    st.builds(
        lambda text: {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]},
        sentences,
    ),
    st.just({"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": '{"type":"a","id":1}'}),
    st.just({"type": "function_call_output", "call_id": "call_1", "output": "42"}),
)
responses_inputs = st.one_of(sentences, st.lists(input_items, min_size=1, max_size=4))
token_ids = st.lists(st.integers(0, 100_000), min_size=1, max_size=8)
embedding_inputs = st.one_of(
    sentences, st.lists(sentences, min_size=1, max_size=4), token_ids, st.lists(token_ids, min_size=1, max_size=3)
)
envelope_messages = st.lists(
    st.builds(
        lambda role, text: {"role": role, "content": text}, st.sampled_from(["system", "user", "assistant"]), sentences
    ),
    min_size=1,
    max_size=4,
)


# ---------------------------------------------------------------------------------------------------
# Bodies: a valid request of the route, then (most of the time) defects
# ---------------------------------------------------------------------------------------------------


@dataclass
class Case:
    route: str
    body: Json  # what was built (with Raw and Deep pieces)
    defects: list[str] = field(default_factory=list)  # empty: a valid request, which must succeed
    ensure_ascii: bool = True
    text: str = ""  # the body as sent

    @property
    def path(self) -> str:
        return ROUTES[self.route]


def optional_fields(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Json]]) -> dict[str, Json]:
    names = draw(st.lists(st.sampled_from(sorted(fields)), max_size=5, unique=True))
    return {name: draw(fields[name]) for name in names}


def valid_body(draw: st.DrawFn, route: str) -> dict[str, Json]:
    if route == "chat":
        body = {"messages": draw(chat_messages), **optional_fields(draw, CHAT_OPTIONAL)}
        if draw(one_in(20), label="stream"):  # a stream now and then: dearer than a whole answer
            body["stream"] = True
            if draw(st.booleans()):
                body["stream_options"] = {"include_usage": draw(st.booleans())}
        return body
    if route == "responses":
        body = {"input": draw(responses_inputs), **optional_fields(draw, RESPONSES_OPTIONAL)}
        if draw(one_in(20), label="stream"):
            body["stream"] = True
        return body
    if route == "embeddings":
        return {"input": draw(embedding_inputs), **optional_fields(draw, EMBEDDINGS_OPTIONAL)}
    if draw(st.booleans()):
        body = {"prompt": draw(sentences)}
        if draw(st.booleans()):
            body["system_message"] = draw(sentences)
    else:
        body = {"messages": draw(envelope_messages)}
    return {**body, **optional_fields(draw, ENVELOPE_OPTIONAL)}


def pass_through_names(route: str) -> list[str]:
    optional = {"chat": CHAT_OPTIONAL, "responses": RESPONSES_OPTIONAL, "embeddings": EMBEDDINGS_OPTIONAL}
    return sorted({*KNOWN_FIELDS[route], *optional.get(route, ENVELOPE_OPTIONAL)})


def containers_in(value: Json) -> list[dict[str, Json] | list[Json]]:
    """Every dict and list inside `value` (itself included), breadth first."""
    found, queue = [], [value]
    while queue:
        item = queue.pop(0)
        if isinstance(item, dict):
            found.append(item)
            queue.extend(item.values())
        elif isinstance(item, list):
            found.append(item)
            queue.extend(item)
    return found


def set_a_checked_field(draw: st.DrawFn, body: dict[str, Json], route: str) -> str:
    """Junk in a field the route reads itself (model, messages, input, token limits...): mostly refused, cheaply."""
    name = draw(st.sampled_from(KNOWN_FIELDS[route]), label="checked field")
    body[name] = draw(junk, label="value")
    return f"{name!r} set to junk"


def set_a_field(draw: st.DrawFn, body: dict[str, Json], route: str) -> str:
    name = draw(st.one_of(st.sampled_from(pass_through_names(route)), junk_keys), label="field")
    body[name] = draw(junk, label="value")
    return f"{name!r} set to junk"


def set_something_inside(draw: st.DrawFn, body: dict[str, Json], route: str) -> str:
    """Junk somewhere inside the body: a message's role or content, a tool's schema, an input item's type..."""
    inner = containers_in(body)[1:]
    if not inner:
        return set_a_field(draw, body, route)
    target = draw(st.sampled_from(inner), label="container")
    value = draw(junk, label="value")
    if isinstance(target, dict):
        name = draw(st.one_of(st.sampled_from(sorted(target) or ["type"]), junk_keys), label="key")
        target[name] = value
        return f"{name!r} inside set to junk"
    if target:
        target[draw(st.integers(0, len(target) - 1), label="index")] = value
    else:
        target.append(value)
    return "a list item set to junk"


def a_special_value(draw: st.DrawFn, body: dict[str, Json], route: str) -> str:
    """One of the values that broke things before, in a field that carries it on."""
    name = draw(st.sampled_from(sorted(set(pass_through_names(route)) | {"top_p", "n", "metadata", "dimensions"})))
    body[name] = draw(
        st.one_of(
            st.sampled_from(RAW_NUMBERS).map(Raw),
            st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 10**400, ["a"], {"a": 1}]),
            st.builds(lambda depth: {"1": Deep(depth, "object")}, depths),
            st.builds(
                lambda kind: {"type": kind}, st.one_of(st.lists(words, max_size=2), st.dictionaries(words, words))
            ),
        ),
        label="special value",
    )
    return f"{name!r} set to a special value"


def oversized(draw: st.DrawFn, body: dict[str, Json], route: str) -> str:
    body[draw(st.sampled_from(["metadata", "user", "x"]))] = "x" * draw(st.integers(MAX_BODY_BYTES, 2 * MAX_BODY_BYTES))
    return "over MAX_BODY_BYTES"


# Most bodies get a defect in a field the route checks, or a value that must be refused: a refusal costs about
# a millisecond, a call passed on about 25 (the fake upstream, and two budget writes to moto_server).
DEFECTS: list[Callable[[st.DrawFn, dict[str, Json], str], str]] = [
    set_a_checked_field,
    set_a_checked_field,
    set_a_field,
    set_something_inside,
    set_something_inside,
    a_special_value,
    a_special_value,
]


@st.composite
def cases(draw: st.DrawFn, route: str) -> Case:
    body = copy.deepcopy(valid_body(draw, route))  # defects change it in place: never the shared tools
    defects = []
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 2, 2, 3, 3, 3]), label="defects")):  # one in 10 valid
        defects.append(draw(st.sampled_from(DEFECTS))(draw, body, route))
    if draw(one_in(200), label="oversized"):
        defects.append(oversized(draw, body, route))
    case = Case(route, body, defects, ensure_ascii=draw(st.booleans()))
    try:
        case.text = render(body, ensure_ascii=case.ensure_ascii)
        case.text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: sent as a \u escape, which is valid JSON
        case.ensure_ascii = True
        case.text = render(body)
    return case


# ---------------------------------------------------------------------------------------------------
# What the app may answer for a body, from how it was built and what it holds
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    parsed: Json  # the body as Python's parser reads it (None: beyond its recursion limit)
    must_refuse: str | None  # why a 200 would be wrong


def unparseable() -> Verdict:
    return Verdict(None, "nested beyond what Python's JSON parser reads")


def verdict_of(text: str) -> Verdict:
    try:
        parsed = json.loads(text)
    except RecursionError:
        return unparseable()
    depth, stack = 0, [(parsed, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict | list):
            depth = max(depth, level)
            stack.extend((inner, level + 1) for inner in (value.values() if isinstance(value, dict) else value))
        elif isinstance(value, float) and not math.isfinite(value):
            return Verdict(parsed, f"holds the non-finite number {value}")
        elif isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]:
            return Verdict(parsed, f"holds an integer beyond int64 ({str(value)[:20]}..., {len(str(value))} chars)")
    if depth >= MAX_DEPTH + 2:
        return Verdict(parsed, f"is nested {depth} deep (MAX_DEPTH {MAX_DEPTH})")
    return Verdict(parsed, None)


def over_any_budget(body: Json) -> bool:
    """A call asking for millions of copies (`n`) may be estimated over the generous budgets: 429 is then right."""
    copies = body.get("n") if isinstance(body, dict) else None
    return (
        isinstance(copies, int) and not isinstance(copies, bool) and INT64[0] <= copies <= INT64[1] and copies > 10**6
    )


def same(sent: Json, received: Json) -> bool:
    """Equal as JSON, type for type (1 is not 1.0, True is not 1; NaN is NaN), without recursion."""
    stack = [(sent, received)]
    while stack:
        a, b = stack.pop()
        if type(a) is not type(b):
            return False
        if isinstance(a, dict):
            if list(a) != list(b):
                return False
            stack.extend((a[name], b[name]) for name in a)
        elif isinstance(a, list):
            if len(a) != len(b):
                return False
            stack.extend(zip(a, b, strict=True))
        elif a != b and not (isinstance(a, float) and math.isnan(a) and math.isnan(b)):
            return False
    return True


# ---------------------------------------------------------------------------------------------------
# The app, in-process
# ---------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Watch:
    """What the app logged (any logger) and what went wrong on the loop, while one request was served."""

    records: list[logging.LogRecord] = field(default_factory=list)
    loop_errors: list[dict[str, Any]] = field(default_factory=list)

    def problems(self) -> list[str]:
        found = [f"loop: {error.get('message')} {error.get('exception')!r}" for error in self.loop_errors]
        for record in self.records:
            text = record.getMessage()
            extra = {key: value for key, value in record.__dict__.items() if key in ("error_type", "frames")}
            if (
                record.exc_info
                or "Traceback" in text
                or text == "unexpected failure"
                or record.levelno >= logging.ERROR
            ):
                found.append(f"{record.name} {record.levelname}: {text} {extra}")
        return found


class _Collect(logging.Handler):
    def __init__(self, watch: Watch) -> None:
        super().__init__(logging.DEBUG)
        self.watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        if not any(record is seen for seen in self.watch.records):  # it may reach both loggers
            self.watch.records.append(record)


@dataclass
class LocalApi:
    """`make serve`'s app called directly with ASGI scopes, on one event loop kept for the whole module."""

    loop: asyncio.AbstractEventLoop
    stack: FuzzStack
    watch: Watch

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> Answer:
        self.watch.records.clear()
        self.watch.loop_errors.clear()
        with self.stack.openai._lock:
            self.stack.openai.received.clear()
            self.stack.openai.stored.clear()
        sent_headers = {"content-type": "application/json", "content-length": str(len(body)), "host": "127.0.0.1:3000"}
        return self.loop.run_until_complete(self._call(path, body, {**sent_headers, **(headers or {})}))

    async def _call(self, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 3000),
        }
        delivered, finished = False, asyncio.Event()
        messages: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()  # the client stays until the answer is whole
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        try:
            await local_app(scope, receive, send)
        finally:
            finished.set()
        start = next(message for message in messages if message["type"] == "http.response.start")
        headers_out = {name.decode("latin-1"): value.decode("latin-1") for name, value in start["headers"]}
        content = b"".join(message.get("body", b"") for message in messages if message["type"] == "http.response.body")
        return Answer(start["status"], headers_out, content)


@pytest.fixture(scope="module")
def event_loop_for_app() -> Iterator[tuple[asyncio.AbstractEventLoop, Watch]]:
    watch = Watch()
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _, context: watch.loop_errors.append(context))
    handler = _Collect(watch)
    # The function's logger (as tests/integration/test_budgets.py reads it), and the root for anything else.
    loggers = [logging.getLogger(), function_logger._logger]
    for logger in loggers:
        logger.addHandler(handler)
    yield loop, watch
    for logger in loggers:
        logger.removeHandler(handler)
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@pytest.fixture
def api(
    fuzz_stack: FuzzStack,
    budget_env: dict[str, str],
    event_loop_for_app: tuple[asyncio.AbstractEventLoop, Watch],
    monkeypatch: pytest.MonkeyPatch,
) -> LocalApi:
    """The local API with budgets on (after `fuzz_container` pointed the function at the fuzz stack)."""
    for name, value in budget_env.items():
        monkeypatch.setenv(name, value)
    loop, watch = event_loop_for_app
    return LocalApi(loop, fuzz_stack, watch)


# ---------------------------------------------------------------------------------------------------
# Checking an answer
# ---------------------------------------------------------------------------------------------------


def strict_json(data: bytes) -> Json:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(data, parse_constant=refuse)


def names_a_field(param: str, case: Case, verdict: Verdict) -> bool:
    """`param` names a top-level field of the body (or one the route knows): "messages.0.content" names messages."""
    keys = {key or '""' for key in verdict.parsed} if isinstance(verdict.parsed, dict) else set()  # "" named '""'
    fields = keys | set(KNOWN_FIELDS[case.route])
    return param in fields or param.split(".")[0].split("[")[0] in fields


def unreadable(message: str) -> bool:
    """The function's word for a body Python's parser cannot read at all, so that no field can be named."""
    return message in ("body: is nested too deeply to read", "body: holds an integer with too many digits to read")


def error_names_a_field(error: str, case: Case, verdict: Verdict) -> bool:
    keys = {key or '""' for key in (verdict.parsed if isinstance(verdict.parsed, dict) else {})}
    return any(name in error for name in keys | set(ENVELOPE_FIELDS))


def describe(case: Case, answer: Answer, api: LocalApi) -> str:
    text = (
        case.text if len(case.text) <= 600 else case.text[:300] + f"...({len(case.text)} chars)..." + case.text[-100:]
    )
    return (
        f"\nPOST {case.path} -> {answer.status}\nbody: {text}\ndefects: {case.defects}\n"
        f"answer: {answer.body[:600]!r}\nlogged: {api.watch.problems()}"
    )


def check_answer(api: LocalApi, case: Case, answer: Answer) -> None:
    """The properties every answer has (see the module's docstring)."""
    TALLY.bodies += 1
    context = describe(case, answer, api)
    verdict = verdict_of(case.text)
    assert answer.status < 500, "a 5xx for a body" + context
    assert not api.watch.problems(), "the app logged a failure" + context
    upstream = list(api.stack.openai.received)
    streamed = answer.headers.get("content-type", "").startswith("text/event-stream")
    document = None if streamed else strict_json(answer.body)
    size = len(case.text.encode("utf-8"))
    if size > MAX_BODY_BYTES:
        assert answer.status == 413, "a body over MAX_BODY_BYTES must be a 413" + context
        return
    assert answer.status != 413, "a 413 for a body within MAX_BODY_BYTES" + context
    if answer.status == 400:
        assert not upstream, "a 400 after calling the upstream" + context
        if case.route == "envelope":
            assert set(document) == ENVELOPE_KEYS and document["success"] is False, "not a failure envelope" + context
            assert isinstance(document["error"], str), context
            named = error_names_a_field(document["error"], case, verdict) or unreadable(document["error"])
            assert named, "the error names no field" + context
        elif unreadable(document["error"]["message"]) and document["error"]["param"] is None:
            pass  # a body the parser itself cannot read (nested past its own depth) has no field to name: it says so
        else:
            param = document["error"]["param"]
            assert isinstance(param, str) and param, "a 400 without error.param" + context
            assert names_a_field(param, case, verdict), f"error.param {param!r} names no field of the body" + context
        assert case.defects, "a valid request was refused" + context
        return
    if answer.status == 429 and over_any_budget(verdict.parsed):
        assert document["error"]["code"] == "budget_exceeded" and not upstream, context
        return
    assert verdict.must_refuse is None, f"passed on a body that {verdict.must_refuse}" + context
    assert answer.status == 200, "neither 200, 400 nor 413" + context
    assert len(upstream) == 1, f"{len(upstream)} upstream calls for one 200" + context
    check_passed_on(case, verdict.parsed, upstream[0], context)
    if streamed:
        check_stream(case, answer.body, context)
    elif case.route == "envelope":
        assert set(document) == ENVELOPE_KEYS and document["success"] is True, context
    else:
        expected = {"chat": "chat.completion", "responses": "response", "embeddings": "list"}[case.route]
        assert document["object"] == expected, context


def check_passed_on(case: Case, sent: dict[str, Json], received: Any, context: str) -> None:
    """The upstream got the body's pass-through fields exactly as sent, and a token limit within the ceiling."""
    got = received.json
    assert isinstance(got, dict), "the upstream got no JSON object" + context
    assert received.path == ("/v1/chat/completions" if case.route == "envelope" else case.path), context
    if case.route == "envelope":
        if sent.get("messages") is not None:  # null is the same as left out
            expected = sent["messages"]
        else:
            system = [{"role": "system", "content": sent["system_message"]}] if sent.get("system_message") else []
            expected = [*system, {"role": "user", "content": sent["prompt"]}]
        assert same(expected, got["messages"]), "the upstream got other messages" + context
        assert got["model"] == (sent.get("model") or DEFAULT_MODEL), context
        assert got["max_tokens"] <= MAX_TOKENS_CEILING, context
        return
    for name, value in sent.items():
        if name not in SET_BY_THE_FUNCTION[case.route]:
            assert name in got and same(value, got[name]), f"{name!r} was not passed on as sent" + context
    default = EMBEDDING_MODEL if case.route == "embeddings" else DEFAULT_MODEL
    assert got["model"] == (sent.get("model") or default), context
    limit = {"chat": "max_tokens", "responses": "max_output_tokens"}.get(case.route)
    if limit is not None:
        assert isinstance(got[limit], int) and 1 <= got[limit] <= MAX_TOKENS_CEILING, "token limit" + context
    if case.route == "chat" and sent.get("temperature") is not None:  # null: the model's default
        assert got.get("temperature") == sent["temperature"], "temperature" + context


def check_stream(case: Case, body: bytes, context: str) -> None:
    """Every event's data is JSON, no event is an error, and the stream ends as its API ends one."""
    data = []
    for frame in body.decode().split("\n\n"):
        for line in frame.splitlines():
            if line.startswith("data: "):
                data.append(line.removeprefix("data: "))
    assert data, "an empty stream" + context
    if case.route == "chat":
        assert data[-1] == "[DONE]", "the stream did not end with [DONE]" + context
        data = data[:-1]
    events = [strict_json(item.encode()) for item in data]
    assert not [event for event in events if "error" in event or event.get("type") == "error"], context
    if case.route == "responses":
        assert events[-1]["type"] in ("response.completed", "response.incomplete"), context


def post_case(api: LocalApi, case: Case) -> Answer:
    return api.post(case.path, case.text.encode("utf-8"))


# ---------------------------------------------------------------------------------------------------
# The properties, route by route
# ---------------------------------------------------------------------------------------------------


@fuzz_settings("chat")
@given(case=cases("chat"))
def test_chat_completions_bodies(api: LocalApi, case: Case) -> None:
    # Given a chat completion body: valid, or with junk in known, pass-through or nested fields
    # When it is posted to /v1/chat/completions
    answer = post_case(api, case)
    # Then it is a 400 naming the field, a 413 when too big, or a 200 that passed the body on as sent
    check_answer(api, case, answer)


@fuzz_settings("responses")
@given(case=cases("responses"))
def test_responses_bodies(api: LocalApi, case: Case) -> None:
    # Given a Responses API body: valid, or with junk in input items, tools, text, metadata...
    # When it is posted to /v1/responses
    answer = post_case(api, case)
    # Then it is a 400 naming the field, a 413 when too big, or a 200 that passed the body on as sent
    check_answer(api, case, answer)


@fuzz_settings("embeddings")
@given(case=cases("embeddings"))
def test_embeddings_bodies(api: LocalApi, case: Case) -> None:
    # Given an embeddings body: valid, or with junk in input, dimensions, encoding_format...
    # When it is posted to /v1/embeddings
    answer = post_case(api, case)
    # Then it is a 400 naming the field, a 413 when too big, or a 200 that passed the body on as sent
    check_answer(api, case, answer)


@fuzz_settings("envelope")
@given(case=cases("envelope"))
def test_envelope_bodies(api: LocalApi, case: Case) -> None:
    # Given an envelope request (prompt or messages, system_message, model, temperature, max_tokens) or junk in it
    # When it is posted to /chat (through the Lambda handler)
    answer = post_case(api, case)
    # Then it is a failure envelope naming the field, a 413 when too big, or a success envelope
    check_answer(api, case, answer)


raw_texts = st.builds(
    lambda route, name, literal, wrap: (route, name, literal, wrap),
    st.sampled_from(sorted(ROUTES)),
    st.sampled_from(["top_p", "temperature", "n", "dimensions", "max_tokens", "seed", "frequency_penalty", "x"]),
    st.one_of(st.sampled_from(RAW_NUMBERS), st.integers(-(10**400), 10**400).map(str)),
    st.sampled_from(["{}", "[{}]", '{"a": {}}', '{"logit_bias": {"1": {}}}']),
)
MINIMAL = {
    "chat": '"messages": [{"role": "user", "content": "hi"}]',
    "responses": '"input": "hi"',
    "embeddings": '"input": "hi"',
    "envelope": '"prompt": "hi"',
}


@fuzz_settings("raw")
@given(raw=raw_texts)
def test_number_literals_as_written(api: LocalApi, raw: tuple[str, str, str, str]) -> None:
    # Given a minimal valid body with one field holding a number literal as written: 1e999, 400 digits, -0...
    route, name, literal, wrap = raw
    value = wrap.replace("{}", literal) if wrap != "{}" else literal
    if wrap.startswith('{"logit_bias"'):
        name, value = "logit_bias", '{"1": ' + literal + "}"
    case = Case(
        route, None, [f"{name!r} written as {literal[:30]}"], text="{" + MINIMAL[route] + f', "{name}": {value}' + "}"
    )
    # When it is posted
    answer = post_case(api, case)
    # Then the same properties hold as for any body
    check_answer(api, case, answer)


# ---------------------------------------------------------------------------------------------------
# Regressions: the exact inputs that broke the app before
# ---------------------------------------------------------------------------------------------------


def regression(api: LocalApi, route: str, text: str) -> tuple[Answer, Json, Any]:
    case = Case(route, None, ["regression"], text=text)
    answer = post_case(api, case)
    context = describe(case, answer, api)
    assert answer.status < 500 and not api.watch.problems(), context
    upstream = list(api.stack.openai.received)
    return answer, strict_json(answer.body), (upstream[0] if upstream else None)


def assert_refused(answer: Answer, document: Json, upstream: Any, param: str) -> None:
    assert answer.status == 400, (answer.status, document)
    assert document["error"]["param"] == param, document
    assert upstream is None


def test_a_tool_schema_with_a_property_named_type_and_a_type_union_passes_through(api: LocalApi) -> None:
    # Given a chat body whose tools are a pydantic model's (a property named `type`) and a schema with a type union
    tools = [plain(pydantic_function_tool(Lookup)), CHAT_TOOLS[2]]
    body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": tools}
    # When it is posted to /v1/chat/completions, and the same tools in Responses' form to /v1/responses
    answer, _, upstream = regression(api, "chat", json.dumps(body))
    responses_tools = [{"type": "function", **tool["function"]} for tool in tools]
    answer2, _, upstream2 = regression(api, "responses", json.dumps({"input": "hi", "tools": responses_tools}))
    # Then both are answered, with the tools passed on unchanged
    assert answer.status == 200 and same(tools, upstream.json["tools"])
    assert answer2.status == 200 and same(responses_tools, upstream2.json["tools"])


def test_metadata_nested_600_deep_is_refused_naming_it(api: LocalApi) -> None:
    # Given a chat body whose metadata is nested 600 deep
    text = render({"messages": [{"role": "user", "content": "hi"}], "metadata": Deep(600, "object")})
    # When it is posted
    answer, document, upstream = regression(api, "chat", text)
    # Then it is a 400 naming metadata, and the upstream was not called
    assert_refused(answer, document, upstream, "metadata")


@pytest.mark.parametrize(
    ("route", "text", "param"),
    [
        ("chat", '{"messages": [{"role": "user", "content": "hi"}], "top_p": NaN}', "top_p"),
        (
            "chat",
            '{"messages": [{"role": "user", "content": "hi"}], "frequency_penalty": Infinity}',
            "frequency_penalty",
        ),
        ("chat", '{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"1": 1e999}}', "logit_bias"),
        ("chat", '{"messages": [{"role": "user", "content": "hi"}], "top_p": 1e999}', "top_p"),
        ("chat", '{"messages": [{"role": "user", "content": "hi"}], "n": ' + DIGITS_400 + "}", "n"),
        ("embeddings", '{"input": "hi", "dimensions": 1e999}', "dimensions"),
        ("responses", '{"input": "hi", "temperature": 0.5, "top_p": -Infinity}', "top_p"),
    ],
)
def test_non_finite_numbers_and_integers_beyond_int64_are_refused_naming_the_field(
    api: LocalApi, route: str, text: str, param: str
) -> None:
    # Given a body with NaN, an infinity (spelled out or as 1e999) or a 400-digit integer in a pass-through field
    # When it is posted
    answer, document, upstream = regression(api, route, text)
    # Then it is a 400 naming that field, and the upstream was not called
    assert_refused(answer, document, upstream, param)


@pytest.mark.parametrize("kind", [["message"], {"a": "message"}])
def test_a_responses_input_item_whose_type_is_not_text_passes_through_to_the_upstream(
    api: LocalApi, kind: Json
) -> None:
    # Given a Responses body whose input item has a `type` that is a list or a dict (the function reads no item's
    # type as a string: it is the upstream's to judge)
    text = json.dumps({"input": [{"type": kind, "role": "user", "content": "hi"}]})
    # When it is posted to /v1/responses
    answer, document, upstream = regression(api, "responses", text)
    # Then it is passed on as given, not a 500
    assert answer.status == 200 and upstream is not None, document
    assert upstream.json["input"][0]["type"] == kind


def test_max_tokens_above_the_ceiling_is_lowered_on_v1(api: LocalApi) -> None:
    # Given a chat body asking for more tokens than MAX_TOKENS_CEILING
    text = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_TOKENS_CEILING + 1})
    # When it is posted to /v1/chat/completions
    answer, document, upstream = regression(api, "chat", text)
    # Then it is answered, with the ceiling sent upstream
    assert answer.status == 200, document
    assert upstream.json["max_tokens"] == MAX_TOKENS_CEILING


def test_envelope_fields_with_nan_or_deep_nesting_are_refused_naming_them(api: LocalApi) -> None:
    # Given /chat bodies with a NaN temperature, and a field nested 600 deep
    for text, name in [
        ('{"prompt": "hi", "temperature": NaN}', "temperature"),
        (render({"prompt": "hi", "extra": Deep(600, "object")}), "extra"),
        (render({"messages": [{"role": "user", "content": Deep(600, "list")}]}), "messages"),
    ]:
        # When each is posted to /chat
        answer, document, upstream = regression(api, "envelope", text)
        # Then each is a failure envelope naming the field, and the upstream was not called
        assert answer.status == 400 and document["success"] is False and upstream is None, document
        assert name in document["error"], document
