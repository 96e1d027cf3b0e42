"""Property-based fuzzing of the handler: every trigger's shape, valid and broken, thousands of times.

Whatever arrives, the handler answers (it never raises) in its trigger's shape with the five-key
envelope. A request the contract refuses gets a 4xx over HTTP and `success: false` from a direct or
EventBridge invoke, without OpenAI being called; a request it accepts succeeds; and with a healthy
OpenAI and secret nothing is ever a 5xx (only the caller can be at fault). Which is which comes
from how each case is built, never from the function's own validator: valid requests are drawn from
the request contract in README.md and the limits in `tests/support/fuzz_stack.py`, and invalid ones are
valid requests given one named defect.

FUZZ_EXAMPLES (default 10000) is how many events the whole module generates, shared out among its
tests by SHARES: one event per Hypothesis example, except that the valid and invalid request tests
send each example's request through all five triggers (five events). A deeper run is one command:
`FUZZ_EXAMPLES=200000 .venv/bin/python -m pytest tests/fuzz`.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local.context import FakeLambdaContext
from tests.support.events import load_event
from tests.support.fuzz_stack import (
    ALLOWED_MODELS,
    DEFAULT_MODEL,
    MAX_BODY_BYTES,
    MAX_MESSAGES,
    MAX_PROMPT_CHARS,
    MAX_TOKENS_CEILING,
    TALLY,
    FuzzStack,
    fuzz_examples,
)

Json = Any  # a JSON-like value: None, bool, int, float, str, list or dict of them

ENVELOPE_KEYS = ["success", "completion", "usage", "finish_reason", "error"]
HTTP_KEYS = {"statusCode", "headers", "body", "isBase64Encoded"}
USAGE_KEYS = {"prompt_tokens", "completion_tokens", "total_tokens"}
FIELDS = ("prompt", "messages", "system_message", "model", "temperature", "max_tokens")
ROLES = ("system", "user", "assistant")
HTTP_TRIGGERS = ("rest", "http_api", "function_url")
TRIGGERS = ("direct", "eventbridge", *HTTP_TRIGGERS)
OTHER_METHODS = ("GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "get", "Put")

# How the FUZZ_EXAMPLES events are shared out among the tests below (the shares add up to 1).
SHARES = {
    "valid": 0.25,
    "invalid": 0.25,
    "bodies": 0.15,
    "methods": 0.03,
    "idempotency keys": 0.02,
    "nulls": 0.12,
    "anything": 0.18,
}


def fuzz_settings(share: str, events_per_example: int = 1) -> settings:
    return settings(
        max_examples=max(1, round(fuzz_examples() * SHARES[share] / events_per_example)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        print_blob=True,
    )


# ---------------------------------------------------------------------------------------------------
# Text and JSON values
# ---------------------------------------------------------------------------------------------------

# Pieces that like to break things: NUL and other controls, odd whitespace, BOM, bidi override, the
# last code points of the BMP and of Unicode, emoji (one a ZWJ sequence), characters whose case
# mapping changes length, a combining accent, JSON's own quote and backslash.
SPICY = (
    "\x00",
    "\x1b",
    "\x7f",
    "\u0085",
    "\u00a0",
    "\u200b",
    "\u2028",
    "\u202e",
    "\ufeff",
    "\ufffd",
    "\uffff",
    "\U0010ffff",
    "\U0001f600",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467",
    "\u017f",
    "\u0130",
    "e\u0301",
    '"',
    "\\",
)


def spiced(text: str, spice: str) -> str:
    middle = len(text) // 2
    return text[:middle] + spice + text[middle:]


def texts(*, min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[str]:
    """Well-formed Unicode text (no lone surrogates), often with a SPICY piece (5 characters at most) in it.

    (A single string draw plus one piece keeps generation fast: a list of characters would cost a draw each.)
    """
    run = st.text(st.characters(codec="utf-8"), min_size=min_size, max_size=max_size)
    return st.builds(spiced, run, st.sampled_from(("", *SPICY)))


visible_chars = st.characters(categories=("L", "N", "So"))  # never whitespace, whatever counts as such
lone_surrogates = st.characters(categories=("Cs",))
blank_texts = st.text(alphabet=" \t\r\n", max_size=8)


def nonblank_texts(max_size: int) -> st.SearchStrategy[str]:
    """Text with at least one visible character in it: at most max_size + 6 characters."""

    def with_visible(text: str, char: str) -> str:
        at = len(text) // 3
        return text[:at] + char + text[at:]

    return st.builds(with_visible, texts(max_size=max_size), visible_chars)


# JSON values by type, built so that "any value but a string" needs no filtering (filters cost draws).
json_texts = st.one_of(texts(max_size=8), lone_surrogates)
json_numbers = st.one_of(st.integers(), st.floats())  # floats include NaN and the infinities
json_scalars = st.one_of(st.none(), st.booleans(), json_numbers, json_texts)
json_values: st.SearchStrategy[Json] = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts(max_size=6), inner, max_size=3)),
    max_leaves=5,
)
json_lists = st.lists(json_values, max_size=3)
json_objects = st.dictionaries(texts(max_size=6), json_values, max_size=3)
BY_TYPE = {"bool": st.booleans(), "number": json_numbers, "str": json_texts, "list": json_lists, "dict": json_objects}
not_null = st.one_of(*BY_TYPE.values())
not_text = st.one_of(st.booleans(), json_numbers, json_lists, json_objects)
not_number = st.one_of(st.booleans(), json_texts, json_lists, json_objects)
not_integer = st.one_of(st.floats(), not_number)  # 5.0 is a number, but not the integer the contract asks for
not_object = st.one_of(st.none(), st.booleans(), json_numbers, json_texts, json_lists)
not_list = st.one_of(st.booleans(), json_numbers, json_texts, json_objects)


def other_type_than(value: Json) -> st.SearchStrategy[Json]:
    """A non-null value of another JSON type than `value`."""
    tag = type_tag(value)
    return st.one_of(*(values for name, values in BY_TYPE.items() if name != tag))


def type_tag(value: Json) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__  # str, list, dict


# ---------------------------------------------------------------------------------------------------
# Requests: valid ones from the contract, invalid ones with one named defect
# ---------------------------------------------------------------------------------------------------

ABSENT = object()  # a field left out of the request


def optional(values: st.SearchStrategy[Json]) -> st.SearchStrategy[Json]:
    """An optional field: left out, explicitly null (the same as left out), or a value."""
    return st.one_of(st.just(ABSENT), st.none(), values)


def with_fields(request: dict[str, Json], **fields: Json) -> dict[str, Json]:
    return {**request, **{name: value for name, value in fields.items() if value is not ABSENT}}


def text_size(request: dict[str, Json]) -> int:
    """The characters of text a request carries (prompt, system message and message contents)."""
    size = len(request.get("prompt") or "") + len(request.get("system_message") or "")
    return size + sum(len(message["content"]) for message in request.get("messages") or [])


temperatures = st.one_of(st.floats(min_value=0, max_value=2), st.integers(min_value=0, max_value=2))
token_limits = st.integers(min_value=1, max_value=MAX_TOKENS_CEILING)
models = st.sampled_from(ALLOWED_MODELS)
messages = st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": nonblank_texts(250)})


simple_requests = st.builds(lambda prompt: {"prompt": prompt}, nonblank_texts(60))


@st.composite
def valid_requests(draw: st.DrawFn) -> dict[str, Json]:
    """A request the contract accepts, in the prompt or the messages form, sometimes right at its limits."""
    form = draw(st.sampled_from([*["prompt", "messages"] * 3, "prompt at the limit", "most messages"]))
    if form == "prompt":
        request = with_fields(
            {"prompt": draw(nonblank_texts(1000))}, system_message=draw(optional(texts(max_size=1000)))
        )
    elif form == "prompt at the limit":
        system = draw(st.integers(min_value=0, max_value=MAX_PROMPT_CHARS - 1))
        request = {"prompt": draw(visible_chars) * (MAX_PROMPT_CHARS - system)}
        request = with_fields(request, system_message=draw(visible_chars) * system if system else ABSENT)
    elif form == "messages":
        request = {"messages": draw(st.lists(messages, min_size=1, max_size=MAX_MESSAGES))}
    else:
        request = {"messages": draw(st.lists(messages, min_size=MAX_MESSAGES, max_size=MAX_MESSAGES))}
    other = "messages" if "prompt" in request else "prompt"
    request = with_fields(
        request,
        **{other: draw(st.sampled_from([ABSENT, None]))},
        model=draw(optional(models)),
        temperature=draw(optional(temperatures)),
        max_tokens=draw(optional(token_limits)),
    )
    assert text_size(request) <= MAX_PROMPT_CHARS, "the generator must keep valid requests within the limit"
    order = draw(st.permutations(list(request)))
    return {name: request[name] for name in order}


@dataclass(frozen=True)
class Invalid:
    request: Json
    defect: str  # what the contract says is wrong with it


def prompt_form(draw: st.DrawFn, request: dict[str, Json]) -> dict[str, Json]:
    if request.get("prompt") is not None:
        return dict(request)
    rest = {name: value for name, value in request.items() if name != "messages"}
    return {**rest, "prompt": draw(nonblank_texts(20))}


def messages_form(draw: st.DrawFn, request: dict[str, Json]) -> dict[str, Json]:
    if request.get("messages") is not None:
        return {**request, "messages": list(request["messages"])}
    rest = {name: value for name, value in request.items() if name not in ("prompt", "system_message")}
    return {**rest, "messages": draw(st.lists(messages, min_size=1, max_size=3))}


def some_message(draw: st.DrawFn, request: dict[str, Json]) -> tuple[dict[str, Json], int]:
    request = messages_form(draw, request)
    return request, draw(st.integers(min_value=0, max_value=len(request["messages"]) - 1))


def no_prompt_and_no_messages(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    rest = {name: value for name, value in r.items() if name not in ("prompt", "messages")}
    return with_fields(rest, prompt=draw(st.sampled_from([ABSENT, None])))


def both_prompt_and_messages(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    return {**prompt_form(draw, r), "messages": messages_form(draw, r)["messages"]}


def blank_prompt(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    return {**prompt_form(draw, r), "prompt": draw(blank_texts)}


def prompt_not_text(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    return {**prompt_form(draw, r), "prompt": draw(not_text)}


def no_messages_in_the_list(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    return {**messages_form(draw, r), "messages": []}


def messages_not_a_list(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    return {**messages_form(draw, r), "messages": draw(not_list)}


def a_message_not_an_object(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    request, i = some_message(draw, r)
    request["messages"][i] = draw(not_object)
    return request


def a_message_with_an_unknown_role(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    request, i = some_message(draw, r)
    odd_roles = st.one_of(st.sampled_from(["User", "ASSISTANT", "tool", "function", "developer", ""]), not_null)
    role = draw(odd_roles.filter(lambda role: role not in ROLES))  # Hypothesis also tries this module's literals
    request["messages"][i] = {**request["messages"][i], "role": role}
    return request


def a_message_without_text(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    request, i = some_message(draw, r)
    request["messages"][i] = {**request["messages"][i], "content": draw(st.one_of(st.just(""), st.none(), not_text))}
    return request


def a_message_missing_a_field(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    request, i = some_message(draw, r)
    missing = draw(st.sampled_from(["role", "content"]))
    request["messages"][i] = {name: value for name, value in request["messages"][i].items() if name != missing}
    return request


def a_message_with_an_unknown_field(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    request, i = some_message(draw, r)
    name = draw(texts(max_size=6).filter(lambda name: name not in ("role", "content")))
    request["messages"][i] = {**request["messages"][i], name: draw(json_values)}
    return request


def system_message_with_messages(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    return {**messages_form(draw, r), "system_message": draw(texts())}


def system_message_not_text(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    return {**prompt_form(draw, r), "system_message": draw(not_text)}


def model_not_allowed(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    model = draw(st.one_of(st.sampled_from(["gpt-4o", "GPT-4O-MINI", " gpt-4o-mini", ""]), texts()))
    return {**r, "model": model} if model not in ALLOWED_MODELS else {**r, "model": model + "-x"}


def model_not_text(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    return {**r, "model": draw(not_text)}


def temperature_out_of_range(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    below = st.one_of(st.floats(max_value=-1e-9), st.integers(max_value=-1))
    above = st.one_of(st.floats(min_value=2.000001), st.integers(min_value=3))
    return {**r, "temperature": draw(st.one_of(below, above, st.just(math.nan)))}


def temperature_not_a_number(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    return {**r, "temperature": draw(st.one_of(st.sampled_from(["0.5", "1", "hot"]), not_number))}


def max_tokens_out_of_range(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    wrong = st.one_of(st.integers(max_value=0), st.integers(min_value=MAX_TOKENS_CEILING + 1), st.just(10**30))
    return {**r, "max_tokens": draw(wrong)}


def max_tokens_not_an_integer(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    return {**r, "max_tokens": draw(st.one_of(st.sampled_from([5.0, "100", True]), not_integer))}


def an_unknown_field(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    typos = st.sampled_from(["temprature", "Prompt", "PROMPT", "max-tokens", "maxTokens", "message", "prompt "])
    name = draw(st.one_of(typos, texts(max_size=8)).filter(lambda name: name not in FIELDS))
    return {**r, name: draw(json_values)}


def too_many_messages(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    short = st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": nonblank_texts(1)})
    extra = draw(st.lists(short, min_size=MAX_MESSAGES + 1, max_size=MAX_MESSAGES + 8))
    return {**messages_form(draw, r), "messages": extra}


def too_much_text(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    size = draw(st.integers(min_value=MAX_PROMPT_CHARS + 1, max_value=3 * MAX_PROMPT_CHARS))
    if draw(st.booleans()):
        return {**prompt_form(draw, r), "prompt": draw(visible_chars) * size, "system_message": None}
    return {**messages_form(draw, r), "messages": [{"role": "user", "content": draw(visible_chars) * size}]}


def huge_text(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    """Up to a million characters of prompt: over the text limit everywhere, over the body limit on HTTP."""
    unit, size = draw(texts(min_size=1, max_size=4)), draw(st.integers(min_value=70_000, max_value=1_000_000))
    return {**prompt_form(draw, r), "prompt": (unit * (size // len(unit) + 1))[:size]}


def a_lone_surrogate_in_the_text(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    """Half a UTF-16 pair is not text: OpenAI cannot be sent it, so the request is the caller's error."""
    where = draw(st.sampled_from(["prompt", "system_message", "message"]))
    surrogate = draw(lone_surrogates)
    if where == "message":
        request, i = some_message(draw, r)
        message = request["messages"][i]
        request["messages"][i] = {**message, "content": message["content"] + surrogate}
        return request
    request = prompt_form(draw, r)
    return {**request, where: (request.get(where) or "") + surrogate}


def not_an_object(draw: st.DrawFn, r: dict[str, Json]) -> Json:
    return draw(st.one_of(not_object, st.just([r])))


DEFECTS: dict[str, Callable[[st.DrawFn, dict[str, Json]], Json]] = {
    "neither prompt nor messages": no_prompt_and_no_messages,
    "both prompt and messages": both_prompt_and_messages,
    "a blank prompt": blank_prompt,
    "a prompt that is not text": prompt_not_text,
    "an empty messages list": no_messages_in_the_list,
    "messages that are not a list": messages_not_a_list,
    "a message that is not an object": a_message_not_an_object,
    "a message with an unknown role": a_message_with_an_unknown_role,
    "a message without text": a_message_without_text,
    "a message missing its role or content": a_message_missing_a_field,
    "a message with an unknown field": a_message_with_an_unknown_field,
    "system_message with messages": system_message_with_messages,
    "a system_message that is not text": system_message_not_text,
    "a model not in ALLOWED_MODELS": model_not_allowed,
    "a model that is not text": model_not_text,
    "a temperature outside 0..2": temperature_out_of_range,
    "a temperature that is not a number": temperature_not_a_number,
    "max_tokens outside 1..MAX_TOKENS_CEILING": max_tokens_out_of_range,
    "max_tokens that is not an integer": max_tokens_not_an_integer,
    "an unknown field": an_unknown_field,
    "more than MAX_MESSAGES messages": too_many_messages,
    "more than MAX_PROMPT_CHARS of text": too_much_text,
    "a huge prompt (up to a million characters)": huge_text,
    "a lone surrogate in the text": a_lone_surrogate_in_the_text,
    "a request that is not an object": not_an_object,
}


@st.composite
def invalid_requests(draw: st.DrawFn) -> Invalid:
    """A valid request given one defect the contract (README.md, Request) names."""
    defect = draw(st.sampled_from(sorted(DEFECTS)))
    return Invalid(DEFECTS[defect](draw, draw(valid_requests())), defect)


# ---------------------------------------------------------------------------------------------------
# Events: a request delivered by a trigger, with the noise real events carry
# ---------------------------------------------------------------------------------------------------

TEMPLATES = {
    "rest": load_event("apigateway-rest-messages.json"),
    "http_api": load_event("apigateway-http-api.json"),
    "function_url": load_event("function-url.json"),
}
EVENTBRIDGE = load_event("eventbridge.json")
IDEMPOTENCY_HEADER = "idempotency-key"
MAX_IDEMPOTENCY_KEY = 255
idempotency_keys = st.one_of(
    st.uuids().map(str),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=MAX_IDEMPOTENCY_KEY),
)
CONTENT_TYPES = ["application/json", "APPLICATION/JSON", "text/plain", "application/json; charset=latin-1", ""]


@dataclass(frozen=True)
class Body:
    """An HTTP body as API Gateway would put it in the event, and what it weighs in bytes."""

    text: Json  # usually a str; anything at all for broken events
    base64_flag: Json  # the event's isBase64Encoded (ABSENT: left out)
    size: int  # bytes once decoded (a body that is not UTF-8 is weighed with its surrogates passed through)
    utf8: bool = True  # False when the text cannot be encoded as UTF-8 (lone surrogates)


def utf8_size(text: str) -> tuple[int, bool]:
    try:
        return len(text.encode("utf-8")), True
    except UnicodeEncodeError:
        return len(text.encode("utf-8", "surrogatepass")), False


def plain_body(text: str, flag: Json = False) -> Body:
    size, utf8 = utf8_size(text)
    return Body(text, flag, size, utf8)


def base64_body(data: bytes) -> Body:
    return Body(base64.b64encode(data).decode("ascii"), True, len(data))


@st.composite
def bodies_for(draw: st.DrawFn, request: Json) -> Body:
    """The request as JSON text, the ways clients and API Gateway send it (base64 for binary media types)."""
    encoding = draw(st.sampled_from(["json", "utf-8 json", "spaced json", "base64"]))
    if encoding == "base64":
        text = json.dumps(request, ensure_ascii=draw(st.booleans()))
        return base64_body(text.encode("utf-8", "surrogatepass"))
    if encoding == "spaced json":
        indent = draw(st.none() | st.integers(min_value=0, max_value=4))
        space = st.text(alphabet=" \t\r\n", max_size=4)
        text = draw(space) + json.dumps(request, indent=indent, ensure_ascii=draw(st.booleans())) + draw(space)
    else:
        text = json.dumps(request, ensure_ascii=encoding == "json")
    return plain_body(text, draw(st.sampled_from([False, None, ABSENT])))


def odd_case(name: str, seed: int) -> str:
    """`name` with the case of some of its characters flipped, as proxies and clients do."""
    flips = random.Random(seed)
    return "".join(char.swapcase() if flips.random() < 0.5 else char for char in name)


seeds = st.integers(min_value=0, max_value=2**32 - 1)


def put(container: dict[str, Json], name: str, value: Json) -> None:
    if value is ABSENT:
        container.pop(name, None)
    else:
        container[name] = value


# Values a field the request does not depend on may hold instead of its usual one (ABSENT: left out).
odd_values = st.sampled_from([ABSENT, None, {}, [], "", 0, False, {"k": "v"}, ["x"], "\ud800", "x" * 300])
NOISY_FIELDS = (
    "multiValueHeaders",
    "queryStringParameters",
    "multiValueQueryStringParameters",
    "pathParameters",
    "stageVariables",
    "cookies",
    "routeKey",
    "rawPath",
    "x-extra",
    "requestContext.requestId",
    "requestContext.identity",
    "requestContext.stage",
)


def add_noise(draw: st.DrawFn, event: dict[str, Json]) -> None:
    """What varies between real events without changing the request: headers, parameters, ids."""
    headers = event.get("headers") or {}
    variant = draw(st.sampled_from(["as sent", "odd case", "odd case", "null", "left out", "empty"]))
    if variant == "odd case":
        seed = draw(seeds)
        odd = {odd_case(name, seed): value for name, value in headers.items() if name.lower() != "content-type"}
        odd[odd_case("Content-Type", seed)] = draw(st.sampled_from(CONTENT_TYPES))
        odd.update(draw(st.dictionaries(texts(max_size=6), texts(max_size=12), max_size=2)))
        odd = {name: value for name, value in odd.items() if name.lower() != IDEMPOTENCY_HEADER}
        if draw(st.booleans()):  # idempotency is off in the fuzz stack, so a well-formed key changes nothing
            odd[odd_case(IDEMPOTENCY_HEADER, seed)] = draw(idempotency_keys)
        headers = odd
    put(
        event,
        "headers",
        {"as sent": headers, "odd case": headers, "null": None, "left out": ABSENT, "empty": {}}[variant],
    )
    for name in draw(st.sets(st.sampled_from(NOISY_FIELDS), max_size=3)):
        container, _, name = name.rpartition(".")
        value = draw(st.one_of(odd_values, texts(max_size=40)) if name == "requestId" else odd_values)
        put(event[container] if container else event, name, value)


@st.composite
def http_events(draw: st.DrawFn, trigger: str, body: Body, method: str = "POST") -> dict[str, Json]:
    """`body` in the trigger's sample event, with POST (or `method`) and noise around it."""
    event = copy.deepcopy(TEMPLATES[trigger])
    add_noise(draw, event)
    put(event, "body", body.text)
    put(event, "isBase64Encoded", body.base64_flag)
    if trigger == "rest":
        event["httpMethod"] = method
    else:
        event["requestContext"]["http"]["method"] = method
    return event


@dataclass(frozen=True)
class Delivery:
    trigger: str
    event: Json
    body: Body | None = None  # for HTTP triggers

    @property
    def is_http(self) -> bool:
        return self.trigger in HTTP_TRIGGERS


@st.composite
def deliveries(draw: st.DrawFn, request: Json, triggers: tuple[str, ...] = TRIGGERS) -> Delivery:
    """`request` as one trigger delivers it: the event itself, EventBridge's detail or an HTTP body."""
    trigger = draw(st.sampled_from(triggers))
    if trigger == "direct":
        return Delivery(trigger, request)
    if trigger == "eventbridge":
        return Delivery(trigger, {**EVENTBRIDGE, "id": draw(st.uuids()).hex, "detail": request})
    body = draw(bodies_for(request))
    return Delivery(trigger, draw(http_events(trigger, body)), body)


# ---------------------------------------------------------------------------------------------------
# The handler, and what every answer must look like
# ---------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    raw: Any
    envelope: dict[str, Json]
    status: int | None  # None when the answer is the envelope itself (direct, EventBridge)
    upstream_calls: list[Any] = field(default_factory=list)


def invoke(stack: FuzzStack, event: Json) -> Answer:
    """Run the handler once; it must not raise, and its answer must be well formed in one of the two shapes."""
    from lambda_chat.handler import lambda_handler

    stack.openai.received.clear()
    TALLY.events += 1
    try:
        raw = lambda_handler(event, FakeLambdaContext())
    except Exception as exc:
        raise AssertionError(f"the handler raised {type(exc).__name__}: {exc}") from exc
    answer = well_formed(raw)
    answer.upstream_calls = [received.json for received in stack.openai.received]
    return answer


def well_formed(raw: Any) -> Answer:
    assert isinstance(raw, dict), f"the answer is a {type(raw).__name__}, not a JSON object"
    if "statusCode" in raw:
        assert set(raw) == HTTP_KEYS
        status = raw["statusCode"]
        assert type(status) is int and 200 <= status <= 599
        assert isinstance(raw["headers"], dict) and raw["headers"].get("Content-Type") == "application/json"
        assert raw["isBase64Encoded"] is False
        assert isinstance(raw["body"], str)
        envelope = json.loads(raw["body"])
        assert isinstance(envelope, dict)
        assert (status == 200) == (envelope.get("success") is True), "only a 200 says success"
        assert status < 500, f"{status} with a healthy OpenAI and secret: only the caller can be at fault"
    else:
        envelope, status = raw, None
        json.dumps(raw)  # Lambda serialises the result: it must be JSON-able
    assert list(envelope) == ENVELOPE_KEYS, f"the envelope's keys are {list(envelope)}"
    if envelope["success"] is True:
        assert isinstance(envelope["completion"], str)
        usage = envelope["usage"]
        assert usage is None or (set(usage) == USAGE_KEYS and all(type(n) is int for n in usage.values()))
        assert envelope["finish_reason"] is None or isinstance(envelope["finish_reason"], str)
        assert envelope["error"] is None
    else:
        assert envelope["success"] is False
        assert envelope["completion"] is None and envelope["usage"] is None and envelope["finish_reason"] is None
        assert isinstance(envelope["error"], str) and envelope["error"].strip()
    return Answer(raw, envelope, status)


def assert_shape(answer: Answer, delivery: Delivery) -> None:
    if delivery.is_http:
        assert answer.status is not None, "an HTTP trigger got the bare envelope, not {statusCode, headers, body}"
    else:
        assert answer.status is None, "a direct or EventBridge invoke got an HTTP response"


def assert_refused(answer: Answer, statuses: set[int] | None = None) -> None:
    """Refused as the caller's fault, in whichever shape was answered, and OpenAI was not called."""
    assert answer.envelope["success"] is False
    if answer.status is not None:
        assert 400 <= answer.status < 500
        if statuses is not None:
            assert answer.status in statuses, f"status {answer.status}, expected one of {sorted(statuses)}"
    assert answer.upstream_calls == [], "OpenAI was called for a request that had to be refused"


def refusal_statuses(delivery: Delivery) -> set[int]:
    """400 for a refused request; 413 when the HTTP body is over the limit (400 too if it is not even UTF-8)."""
    body = delivery.body
    if body is None or body.size <= MAX_BODY_BYTES:
        return {400}
    return {413} if body.utf8 else {400, 413}


# ---------------------------------------------------------------------------------------------------
# The properties
# ---------------------------------------------------------------------------------------------------


@st.composite
def deliveries_by_every_trigger(draw: st.DrawFn, request: Json) -> list[Delivery]:
    return [draw(deliveries(request, (trigger,))) for trigger in TRIGGERS]


@fuzz_settings("valid", events_per_example=len(TRIGGERS))
@given(data=st.data())
def test_valid_requests_succeed_on_every_trigger(fuzz_stack: FuzzStack, data: st.DataObject) -> None:
    # Given a request the contract accepts, delivered by each trigger, with the noise real events carry
    request = data.draw(valid_requests(), label="request")
    for delivery in data.draw(deliveries_by_every_trigger(request), label="deliveries"):
        assert delivery.body is None or delivery.body.size <= MAX_BODY_BYTES
        # When the handler runs it
        answer = invoke(fuzz_stack, delivery.event)
        # Then it succeeds, answering in the trigger's shape
        assert_shape(answer, delivery)
        assert answer.envelope["success"] is True, (delivery.trigger, answer.envelope["error"])
        assert answer.status in (None, 200)
        # And OpenAI was called once, with the request as sent
        assert len(answer.upstream_calls) == 1
        assert_sent_as_requested(answer.upstream_calls[0], request)


def assert_sent_as_requested(sent: dict[str, Json], request: dict[str, Json]) -> None:
    assert sent["model"] == (request.get("model") or DEFAULT_MODEL)
    if request.get("messages") is not None:
        assert sent["messages"] == request["messages"]
    else:
        assert sent["messages"][-1] == {"role": "user", "content": request["prompt"]}
        if request.get("system_message"):
            assert sent["messages"][0] == {"role": "system", "content": request["system_message"]}
    if request.get("temperature") is not None:
        assert sent["temperature"] == request["temperature"]
    if request.get("max_tokens") is not None:
        assert sent["max_tokens"] == request["max_tokens"]


@fuzz_settings("invalid", events_per_example=len(TRIGGERS))
@given(data=st.data())
def test_invalid_requests_are_refused_on_every_trigger(fuzz_stack: FuzzStack, data: st.DataObject) -> None:
    # Given a request with one defect the contract names, delivered by each trigger
    case = data.draw(invalid_requests(), label="invalid request")
    for delivery in data.draw(deliveries_by_every_trigger(case.request), label="deliveries"):
        # When the handler runs it
        answer = invoke(fuzz_stack, delivery.event)
        # Then it is refused in the trigger's shape: 400 (413 for a body over the limit), or success false
        assert_shape(answer, delivery)
        assert_refused(answer, refusal_statuses(delivery))


NEEDS_A_REQUEST = {
    "body not a string",
    "truncated JSON",
    "a lone surrogate in the text",
    "isBase64Encoded true but the body is plain JSON",
    "isBase64Encoded false but the body is base64",
    "base64 with characters outside the alphabet",
}


@st.composite
def broken_bodies(draw: st.DrawFn) -> tuple[str, Body]:
    """An HTTP body that cannot carry a request, or whose isBase64Encoded lies, and what is wrong with it."""
    defect = draw(
        st.sampled_from(
            [
                "no body",
                "body not a string",
                "truncated JSON",
                "not JSON",
                "JSON but not an object",
                "deeply nested JSON",
                "over the size limit",
                "over the size limit in bytes, not characters",
                "over the size limit once decoded from base64",
                "a lone surrogate in the text",
                "a raw control character in a JSON string",
                "isBase64Encoded true but the body is plain JSON",
                "isBase64Encoded false but the body is base64",
                "base64 of bytes that are not UTF-8 JSON",
                "base64 with characters outside the alphabet",
                "base64 of JSON that is not an object",
            ]
        )
    )
    request = draw(valid_requests()) if defect in NEEDS_A_REQUEST else {}
    text = json.dumps(request, ensure_ascii=draw(st.booleans()))
    if defect == "no body":
        return defect, Body(draw(st.sampled_from([None, "", ABSENT])), draw(st.sampled_from([False, True])), 0)
    if defect == "body not a string":
        return defect, Body(draw(st.one_of(st.just(request), not_text)), draw(st.sampled_from([False, True])), 0)
    if defect == "truncated JSON":
        return defect, plain_body(text[: draw(st.integers(min_value=1, max_value=len(text) - 1))])
    if defect == "not JSON":
        garbage = draw(st.one_of(st.sampled_from(["prompt=hi", "{'prompt': 'hi'}", "undefined", "<xml/>"]), texts()))
        if garbage.lstrip().startswith("{") and not garbage.startswith("{'"):
            garbage = "x" + garbage
        return defect, plain_body(garbage)
    if defect == "JSON but not an object":
        return defect, plain_body(json.dumps(draw(not_object)))
    if defect == "deeply nested JSON":
        depth = draw(st.integers(min_value=2, max_value=40_000))
        nested = '{"prompt": ' * depth + '"hi"' + "}" * depth if draw(st.booleans()) else "[" * depth + "]" * depth
        return defect, plain_body(nested)
    if defect == "over the size limit":
        size = draw(st.integers(min_value=MAX_BODY_BYTES + 1, max_value=4 * MAX_BODY_BYTES))
        return defect, plain_body(json.dumps({"prompt": "x" * size}))
    if defect == "over the size limit in bytes, not characters":
        body = plain_body(json.dumps({"prompt": "\u00e9" * (MAX_BODY_BYTES // 2 + 100)}, ensure_ascii=False))
        assert len(body.text) <= MAX_BODY_BYTES < body.size
        return defect, body
    if defect == "over the size limit once decoded from base64":
        size = draw(st.integers(min_value=MAX_BODY_BYTES + 1, max_value=2 * MAX_BODY_BYTES))
        return defect, base64_body(json.dumps({"prompt": "y" * size}).encode())
    if defect == "a lone surrogate in the text":
        at = draw(st.integers(min_value=0, max_value=len(text)))
        return defect, plain_body(text[:at] + draw(lone_surrogates) + text[at:])
    if defect == "a raw control character in a JSON string":
        return defect, plain_body(
            json.dumps({"prompt": "a"})[:-2] + draw(st.sampled_from(["\x00", "\n", "\x1f"])) + '"}'
        )
    if defect == "isBase64Encoded true but the body is plain JSON":
        return defect, Body(text, True, len(text.encode()))
    if defect == "isBase64Encoded false but the body is base64":
        return defect, plain_body(base64.b64encode(text.encode()).decode())
    if defect == "base64 of bytes that are not UTF-8 JSON":
        return defect, base64_body(b"\x80" + draw(st.binary(max_size=64)))
    if defect == "base64 with characters outside the alphabet":
        encoded = base64.b64encode(text.encode()).decode()
        at = draw(st.integers(min_value=0, max_value=len(encoded)))
        intruder = draw(st.one_of(st.sampled_from(["{", "-", "_", "*", "\u00e9", " "]), lone_surrogates))
        return defect, Body(encoded[:at] + intruder + encoded[at:], True, len(text.encode()))
    return defect, base64_body(json.dumps(draw(not_object)).encode())


@fuzz_settings("bodies")
@given(data=st.data())
def test_http_bodies_that_carry_no_request_are_refused(fuzz_stack: FuzzStack, data: st.DataObject) -> None:
    # Given an HTTP event whose body is missing, not JSON, not an object, too big, or whose base64 flag lies
    defect, body = data.draw(broken_bodies(), label="broken body")
    trigger = data.draw(st.sampled_from(HTTP_TRIGGERS), label="trigger")
    event = data.draw(http_events(trigger, body), label="event")
    delivery = Delivery(trigger, event, body)
    assert body.size > MAX_BODY_BYTES or not defect.startswith("over the size limit")
    # When the handler runs it
    answer = invoke(fuzz_stack, event)
    # Then it is refused: 400, or 413 for a body over the limit
    if body.text is ABSENT:  # without a body the event is no longer recognisably HTTP: any refusal will do
        assert_refused(answer)
    else:
        assert_shape(answer, delivery)
        assert_refused(answer, refusal_statuses(delivery))


@fuzz_settings("methods")
@given(data=st.data())
def test_methods_other_than_post_get_405(fuzz_stack: FuzzStack, data: st.DataObject) -> None:
    # Given a valid request sent with a method other than POST
    request = data.draw(simple_requests, label="request")
    trigger = data.draw(st.sampled_from(HTTP_TRIGGERS), label="trigger")
    method = data.draw(st.sampled_from(OTHER_METHODS), label="method")
    event = data.draw(http_events(trigger, plain_body(json.dumps(request)), method), label="event")
    # When the handler runs it
    answer = invoke(fuzz_stack, event)
    # Then it answers 405 without calling OpenAI
    assert_refused(answer, {405})
    assert answer.status == 405


bad_idempotency_keys = st.one_of(
    blank_texts,
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=MAX_IDEMPOTENCY_KEY + 1, max_size=2_000),
    not_text,
)


@fuzz_settings("idempotency keys")
@given(data=st.data())
def test_a_malformed_idempotency_key_header_gets_400(fuzz_stack: FuzzStack, data: st.DataObject) -> None:
    # Given a valid request over HTTP whose Idempotency-Key header is blank, too long or not text
    request = data.draw(simple_requests, label="request")
    trigger = data.draw(st.sampled_from(HTTP_TRIGGERS), label="trigger")
    event = data.draw(http_events(trigger, plain_body(json.dumps(request))), label="event")
    headers = event["headers"] if isinstance(event.get("headers"), dict) else {}
    headers = {name: value for name, value in headers.items() if name.lower() != IDEMPOTENCY_HEADER}
    event["headers"] = {**headers, odd_case(IDEMPOTENCY_HEADER, data.draw(seeds)): data.draw(bad_idempotency_keys)}
    # When the handler runs it
    answer = invoke(fuzz_stack, event)
    # Then it answers 400 without calling OpenAI
    assert_refused(answer, {400})
    assert answer.status == 400


# ---------------------------------------------------------------------------------------------------
# Null everywhere: the sample events with fields nulled, removed or given the wrong type
# ---------------------------------------------------------------------------------------------------

SAMPLES = {
    "apigateway-rest.json": "rest",
    "apigateway-rest-messages.json": "rest",
    "apigateway-http-api.json": "v2",
    "function-url.json": "v2",
    "eventbridge.json": "eventbridge",
    "direct.json": "direct",
    "direct-messages.json": "direct",
}
SAMPLE_EVENTS = {name: load_event(name) for name in SAMPLES}
OPTIONAL_FIELDS = ("system_message", "model", "temperature", "max_tokens")
FieldPath = tuple[str | int, ...]

# What a change to a field does to the outcome, from what each field is for.
NO_EFFECT = 0  # not part of the request: the sample still succeeds
EITHER = 1  # the contract does not say (e.g. an HTTP method that is null): accepted or refused, never a 5xx
REFUSED = 2  # the request is gone or broken: refused


def effect_of(sample: str, path: FieldPath, change: str) -> int:
    """The effect of nulling, removing or retyping the field at `path` of a sample event."""
    kind = SAMPLES[sample]
    if not path:
        return REFUSED  # the whole event is null, or not an object
    if kind == "direct":
        return request_effect(path, change)
    if kind == "eventbridge":
        if path[0] == "detail":
            return request_effect(path[1:], change)
        if path[0] in ("detail-type", "source"):
            return REFUSED if change == "remove" else EITHER
        return NO_EFFECT
    if path in (("body",), ("requestContext",)):
        return REFUSED
    if path == ("isBase64Encoded",):
        encoded = SAMPLE_EVENTS[sample]["isBase64Encoded"] is True  # its base64 body would then be read as JSON
        return EITHER if change == "retype" else REFUSED if encoded else NO_EFFECT
    if kind == "rest" and path in (("httpMethod",), ("requestContext", "httpMethod")):
        return EITHER  # the request context still says REST (either one of the two does): it is served as HTTP
    if kind == "v2" and path in (("version",), ("requestContext", "http"), ("requestContext", "http", "method")):
        return EITHER
    return NO_EFFECT


def request_effect(path: FieldPath, change: str) -> int:
    if not path:
        return REFUSED
    if len(path) == 1 and path[0] in OPTIONAL_FIELDS and change != "retype":
        return NO_EFFECT  # an optional field left out or null takes its default
    return REFUSED


def paths_of(value: Json, prefix: FieldPath = ()) -> list[FieldPath]:
    paths = [prefix]
    if isinstance(value, dict):
        for name, inner in value.items():
            paths += paths_of(inner, (*prefix, name))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            paths += paths_of(inner, (*prefix, index))
    return paths


@dataclass(frozen=True)
class Mangled:
    sample: str
    event: Json
    changes: tuple[tuple[FieldPath, str], ...]
    effect: int


@st.composite
def mangled_samples(draw: st.DrawFn) -> Mangled:
    sample = draw(st.sampled_from(sorted(SAMPLES)))
    event: Json = copy.deepcopy(SAMPLE_EVENTS[sample])
    paths = draw(st.lists(st.sampled_from(paths_of(event)), min_size=1, max_size=3, unique=True))
    changes = []
    for path in sorted(paths, key=len, reverse=True):  # the deepest first, so parents can still be reached
        parent: Json = event
        for step in path[:-1]:
            parent = parent[step]
        choices = ["null", "retype"] + (["remove"] if path and isinstance(parent, dict) else [])
        change = draw(st.sampled_from(choices))
        old = parent[path[-1]] if path else event
        new = None if change == "null" else draw(other_type_than(old))
        if not path:
            event = new
        elif change == "remove":
            del parent[path[-1]]
        else:
            parent[path[-1]] = new
        changes.append((path, change))
    effect = max(effect_of(sample, path, change) for path, change in changes)
    return Mangled(sample, event, tuple(changes), effect)


@fuzz_settings("nulls")
@given(case=mangled_samples())
def test_sample_events_with_fields_nulled_removed_or_retyped(fuzz_stack: FuzzStack, case: Mangled) -> None:
    # Given a sample event with up to three fields nulled, removed or given another type
    # When the handler runs it
    answer = invoke(fuzz_stack, case.event)
    # Then the answer is well formed (checked by invoke) and, by what the changed fields are for:
    if case.effect == REFUSED:
        # the request is gone or broken: refused
        assert_refused(answer)
    elif case.effect == NO_EFFECT:
        # nothing the request depends on changed: the sample still succeeds, in its trigger's shape
        assert answer.envelope["success"] is True, answer.envelope["error"]
        assert answer.status == (None if SAMPLES[case.sample] in ("direct", "eventbridge") else 200)


# ---------------------------------------------------------------------------------------------------
# Anything at all
# ---------------------------------------------------------------------------------------------------


def deeply_nested(depth: int, leaf: Json) -> Json:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


method_values = st.one_of(st.sampled_from(["POST", "post", "GET", ""]), json_values)
request_contexts = st.fixed_dictionaries(
    {},
    optional={
        "http": st.one_of(st.fixed_dictionaries({}, optional={"method": method_values}), json_values),
        "requestId": json_values,
    },
)
any_bodies = st.one_of(
    json_values.map(json.dumps),
    json_values.map(lambda value: base64.b64encode(json.dumps(value).encode()).decode()),
    texts(),
    json_values,
)
TRIGGER_LIKE_VALUES = {
    "version": st.one_of(st.sampled_from(["2.0", "1.0"]), json_values),
    "httpMethod": method_values,
    "requestContext": st.one_of(request_contexts, json_values),
    "body": any_bodies,
    "isBase64Encoded": json_values,
    "headers": json_values,
    "detail-type": json_values,
    "source": json_values,
    "detail": json_values,
    **{name: json_values for name in FIELDS},
}


@st.composite
def trigger_like_events(draw: st.DrawFn) -> dict[str, Json]:
    """Objects made of the fields the triggers are told apart by, and the request's, holding anything."""
    names = draw(st.lists(st.sampled_from(sorted(TRIGGER_LIKE_VALUES)), max_size=6, unique=True))
    return {name: draw(TRIGGER_LIKE_VALUES[name]) for name in names}


@fuzz_settings("anything")
@given(
    event=st.one_of(
        json_values,
        trigger_like_events(),
        st.dictionaries(st.one_of(texts(max_size=8), lone_surrogates), json_values, max_size=6),
        st.builds(deeply_nested, st.integers(min_value=500, max_value=5_000), json_scalars),
        st.builds(lambda depth: {"prompt": "hi", "x": deeply_nested(depth, 1)}, st.integers(500, 5_000)),
    )
)
def test_anything_at_all_gets_a_well_formed_answer(fuzz_stack: FuzzStack, event: Json) -> None:
    # Given any JSON-like value as the event: a non-object, a shape mixing triggers' fields, deep nesting
    # When the handler runs it
    answer = invoke(fuzz_stack, event)
    # Then it answers without raising, in one of the two shapes, never with a 5xx (checked by invoke)
    assert answer.envelope["success"] in (True, False)
