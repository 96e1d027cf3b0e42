"""One walk over every body, one place for the limits, and prices by explicit rules (issue 17's side doors)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from pydantic import BaseModel

from lambda_chat.errors import InvalidRequest
from lambda_chat.faces import ENVELOPE, OPENAI, RESPONSES
from lambda_chat.pricing import PriceTable
from lambda_chat.settings import Settings
from lambda_chat.walk import MAX_DEPTH, walk

SETTINGS = Settings(OPENAI_API_KEY_SECRET_ID="s", MAX_PROMPT_CHARS=1_000, MAX_TOKENS_CEILING=4_096)
REFUSING = Settings(OPENAI_API_KEY_SECRET_ID="s", MAX_TOKENS_CEILING=4_096, MAX_TOKENS_OVER_CEILING="refuse")
USER = {"role": "user", "content": "hi"}
PRICES = PriceTable.from_json(None)


def nested(depth: int) -> Any:
    """A value `depth` containers deep (a dict at the bottom)."""
    value: Any = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def refusal(face: Any, body: Any, settings: Settings = SETTINGS) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        face.parse(body, settings)
    return caught.value


# -- the walk ----------------------------------------------------------------------------------------------------


def test_depth_is_bounded_on_both_sides_of_the_limit_and_the_field_is_named() -> None:
    # Given metadata that reaches exactly the limit (the body itself is level 1), and one level more
    at_limit = {"model": "a", "messages": [USER], "metadata": nested(MAX_DEPTH - 1)}
    beyond = {"model": "a", "messages": [USER], "metadata": nested(MAX_DEPTH)}
    # Then the first passes and the second is a 400 naming the field
    assert OPENAI.parse(at_limit, SETTINGS).extra["metadata"] == at_limit["metadata"]
    assert refusal(OPENAI, beyond).param == "metadata"


def test_six_hundred_levels_deep_is_a_400_not_a_recursion_error() -> None:
    body = json.loads('{"model": "a", "messages": [{"role": "user", "content": "hi"}], "metadata": ' + "[" * 600 +
                      "]" * 600 + "}")  # fmt: skip
    assert refusal(OPENAI, body).param == "metadata"
    assert refusal(RESPONSES, {"input": "hi", "text": body["metadata"]}).param == "text"


@pytest.mark.parametrize(
    ("text", "param"),
    [
        ('{"top_p": NaN}', "top_p"),
        ('{"frequency_penalty": Infinity}', "frequency_penalty"),
        ('{"presence_penalty": -Infinity}', "presence_penalty"),
        ('{"logit_bias": {"1": 1e999}}', "logit_bias"),
        ('{"seed": ' + "9" * 400 + "}", "seed"),
        ('{"n": ' + "9" * 400 + "}", "n"),
        ('{"seed": -9223372036854775809}', "seed"),
    ],
)
def test_numbers_that_cannot_be_sent_are_a_400_naming_the_field(text: str, param: str) -> None:
    body = {"model": "a", "messages": [USER], **json.loads(text)}
    assert refusal(OPENAI, body).param == param


def test_the_largest_sendable_integers_and_finite_floats_pass() -> None:
    body = {"messages": [USER], "seed": 2**63 - 1, "top_p": 1e308, "logit_bias": {"1": -1e-308}}
    assert OPENAI.parse(body, SETTINGS).extra["seed"] == 2**63 - 1


def test_embeddings_dimensions_of_1e999_is_a_400() -> None:
    from lambda_chat.faces import EMBEDDINGS

    assert refusal(EMBEDDINGS, {"input": "x", "dimensions": math.inf}).param == "dimensions"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [USER], "model": ["gpt-4o-mini"]}, "model"),
        ({"messages": [USER], "model": {"a": 1}}, "model"),
        ({"messages": [{"role": ["user"], "content": "x"}]}, "messages.0.role"),
        ({"messages": [USER], "service_tier": {"tier": "priority"}}, "service_tier"),
    ],
)
def test_unhashable_values_where_strings_must_be_are_a_400(body: dict[str, Any], param: str) -> None:
    assert refusal(OPENAI, body).param == param


def test_type_keys_holding_dicts_and_lists_pass_through_as_given() -> None:
    # Given a tool from the SDK's own helper, for a model with a field named `type`, and a type union
    import openai

    class Pick(BaseModel):
        type: str
        note: str | None

    tool = openai.pydantic_function_tool(Pick)
    union = {"type": "function", "function": {"name": "f", "parameters": {"type": ["object", "null"]}}}
    body = {"messages": [USER], "tools": [tool, union], "response_format": {"type": {"oops": 1}}}
    # When the face parses it, Then it passes as given, with the schema's text counted
    request = OPENAI.parse(body, SETTINGS)
    assert request.extra["tools"] == [tool, union] and request.extra["response_format"] == {"type": {"oops": 1}}
    assert request.media_parts == 0


def test_responses_input_items_with_a_type_list_pass() -> None:
    body = {"input": [{"type": ["message"], "role": "user", "content": "hi"}]}
    assert RESPONSES.parse(body, SETTINGS).extra["input"] == body["input"]


@pytest.mark.parametrize(
    "where",
    [
        {"tools": [{"type": "function", "function": {"name": "f", "description": "x" * 990}}]},
        {"messages": [USER, {"role": "assistant", "tool_calls": [{"function": {"arguments": "x" * 999}}]}]},
        {"messages": [USER, {"role": "tool", "tool_call_id": "c", "content": "x" * 999}]},
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {"properties": {"x" * 990: {}}}}}},
    ],
)
def test_the_prompt_limit_counts_every_text_the_model_reads(where: dict[str, Any]) -> None:
    # Given 990 characters outside message content, and 30 more in a message
    body = {"messages": [{"role": "user", "content": "y" * 30}], **where}
    # Then together they are over the 1,000 characters allowed
    assert "characters" in refusal(OPENAI, body).message


def test_responses_count_instructions_function_call_output_and_tools() -> None:
    output = {"type": "function_call_output", "call_id": "c", "output": "x" * 600}
    body = {"input": [output], "instructions": "y" * 300, "tools": [{"type": "function", "name": "f" * 101}]}
    assert refusal(RESPONSES, body).param == "input"


def test_media_payloads_are_counted_as_parts_not_as_text() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 5_000}}
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, image, image]}]}
    assert walk(body).media_parts == 2 and walk(body).text_chars < 100
    assert OPENAI.parse(body, SETTINGS).media_parts == 2


# -- the token ceiling -----------------------------------------------------------------------------------------


def test_a_v1_ask_above_the_ceiling_is_lowered_and_says_so() -> None:
    request = OPENAI.parse({"messages": [USER], "max_tokens": 32_000}, SETTINGS)
    assert (request.max_tokens, request.lowered_from) == (4_096, 32_000)
    within = OPENAI.parse({"messages": [USER], "max_tokens": 4_096}, SETTINGS)
    assert (within.max_tokens, within.lowered_from) == (4_096, None)


def test_refuse_mode_refuses_instead() -> None:
    assert refusal(OPENAI, {"messages": [USER], "max_tokens": 4_097}, REFUSING).param == "max_tokens"
    assert refusal(RESPONSES, {"input": "x", "max_output_tokens": 5_000}, REFUSING).param == "max_output_tokens"


def test_n_times_the_output_limit_fits_the_ceiling() -> None:
    # Given n=128 answers of 4,096 tokens each against a ceiling of 4,096 for the whole call
    request = OPENAI.parse({"messages": [USER], "n": 128, "max_tokens": 4_096}, SETTINGS)
    # Then each answer gets its share, and the whole call cannot pass the ceiling
    assert request.max_tokens == 32 and request.copies == 128 and request.extra["n"] == 128
    assert request.max_tokens * request.copies <= 4_096
    message = refusal(OPENAI, {"messages": [USER], "n": 2, "max_tokens": 4_096}, REFUSING).message
    assert "at most 2048" in message and "n=2" in message
    assert refusal(OPENAI, {"messages": [USER], "n": 4_097}).param == "n"


def test_with_no_limit_asked_a_known_model_gets_what_it_can_write_within_the_ceiling() -> None:
    wide = Settings(OPENAI_API_KEY_SECRET_ID="s")  # the default ceiling, 32,768
    assert OPENAI.parse({"model": "gpt-4o-mini", "messages": [USER]}, wide).max_tokens == 16_384
    assert OPENAI.parse({"model": "o3", "messages": [USER]}, wide).max_tokens == 32_768
    assert OPENAI.parse({"model": "llama", "messages": [USER]}, wide).max_tokens == 32_768
    assert RESPONSES.parse({"model": "gpt-4o-2024-05-13", "input": "x"}, wide).max_tokens == 4_096


def test_the_envelope_still_refuses_above_the_ceiling_and_defaults_to_1000() -> None:
    assert refusal(ENVELOPE, {"prompt": "hi", "max_tokens": 4_097}).param == "max_tokens"
    assert ENVELOPE.parse({"prompt": "hi"}, SETTINGS).max_tokens == 1_000


# -- prices ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "priced_as"),
    [
        ("gpt-5-pro", "gpt-5-pro"),
        ("gpt-5-pro-2025-10-06", "gpt-5-pro"),
        ("o3-pro", "o3-pro"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
    ],
)
def test_a_model_is_priced_by_its_own_entry_or_as_a_dated_snapshot(model: str, priced_as: str) -> None:
    assert PRICES.price_of(model) == PRICES.price_of(priced_as) is not None


@pytest.mark.parametrize("model", ["gpt-5-turbo", "o3-deep", "gpt-4o-mini-tts", "gpt-4o-mini-2024", "ft:gpt-4o:x"])
def test_a_longer_name_that_is_not_a_snapshot_has_no_price(model: str) -> None:
    assert PRICES.price_of(model) is None


def test_gpt_5_pro_costs_twelve_times_gpt_5() -> None:
    assert PRICES.cost_usd("gpt-5-pro", 0, 1_000_000) == 120.0 and PRICES.cost_usd("gpt-5", 0, 1_000_000) == 10.0


def test_service_tiers_are_priced_and_an_unpriced_tier_has_no_price() -> None:
    assert PRICES.cost_usd("gpt-4o-mini", 1_000_000, 1_000_000, service_tier="priority") == pytest.approx(1.25)
    assert PRICES.cost_usd("gpt-5", 1_000_000, 1_000_000, service_tier="flex") == pytest.approx(5.625)
    assert PRICES.cost_usd("gpt-4o-mini", 1_000_000, 0, service_tier="auto") == pytest.approx(0.15)
    assert PRICES.price_of("gpt-4o-mini", "flex") is None and PRICES.price_of("gpt-4o-mini", "scale") is None
    custom = PriceTable.from_json('{"m": {"input": 1, "output": 2, "priority": {"input": 3, "output": 4}}}')
    assert custom.cost_usd("m", 1_000_000, 1_000_000, service_tier="priority") == pytest.approx(7.0)


def test_a_call_is_priced_at_the_tier_the_answer_ran_at() -> None:
    cost = PRICES.call_cost(("gpt-4o-mini", "auto"), ("gpt-4o-mini-2024-07-18", "priority"), 1_000_000, 0)
    assert cost == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b'{"n": ' + b"9" * 5_000 + b"}", "too many digits"),
        (b"[" * 5_000 + b"]" * 5_000, "nested too deeply"),
        (b'{"a": }', "not valid JSON"),
    ],
)
def test_bodies_python_cannot_read_are_told_why(raw: bytes, said: str) -> None:
    from lambda_chat.adapter import json_document

    with pytest.raises(InvalidRequest) as caught:
        json_document(raw, 10**6)
    assert said in caught.value.message


def test_a_key_guess_in_the_callers_own_input_is_never_marked_in_the_answer() -> None:
    # Given an upstream message that quotes the caller's own value, which ends like the function's key
    from lambda_chat.errors import scrub

    key = "sk-proj-0123456789abcdef"
    quoted = "Invalid value: 'xxabcdefgh1234'. Supported values are: 'auto', 'default', 'flex' and 'priority'."
    # Then it comes back as it was: no oracle for the key's last characters
    assert scrub(quoted, key) == quoted
    assert scrub(f"key {key} and sk-****...cdef and ****cdef", key).count("cdef") == 0


def test_numbers_and_keys_of_a_schema_count_as_text() -> None:
    enum = {"type": "function", "function": {"name": "f", "parameters": {"enum": list(range(100_000, 100_200))}}}
    keyed = {"type": "function", "function": {"name": "f", "parameters": {"k" * 1_000: 1}}}
    assert "characters" in refusal(OPENAI, {"messages": [USER], "tools": [enum]}).message
    assert "characters" in refusal(OPENAI, {"messages": [USER], "tools": [keyed]}).message


@pytest.mark.parametrize(
    "part",
    [
        {"type": "file", "file": {"file_data": "A" * 5_000, "filename": "a.pdf"}},
        {"type": "input_audio", "input_audio": {"data": "A" * 5_000, "format": "wav"}},
        {"type": "input_file", "file_data": "A" * 5_000, "filename": "a.pdf"},
    ],
)
def test_file_and_audio_payloads_are_parts_not_text(part: dict[str, Any]) -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, part]}]}
    request = OPENAI.parse(body, SETTINGS)
    assert request.media_parts == 1


def test_a_model_not_in_the_table_gets_the_ceiling_and_a_known_one_its_cap() -> None:
    wide = Settings(OPENAI_API_KEY_SECRET_ID="s")
    assert OPENAI.parse({"model": "chatgpt-4o-latest", "messages": [USER]}, wide).max_tokens == 16_384
    assert OPENAI.parse({"model": "gpt-4-turbo-preview", "messages": [USER]}, wide).max_tokens == 4_096
