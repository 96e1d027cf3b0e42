"""Issue 17: each promise held against the input and the upstream answers that once broke it.

Callers kept apart (idempotency records, the function's key, what the container learns), limits and budgets with
no side doors, valid JSON that once gave a 500, odd but legal events, and `make serve` on a developer's laptop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx2
import openai
import pytest

from tests.support.events import load_event
from tests.support.fake_openai import Reply, natural_completion
from tests.support.metering import last, the_call
from tests.support.stack import API_KEY, Budgeted, Stack, caller_headers, reconfigure, rest_event, wait_for

USER = [{"role": "user", "content": "hi"}]


def post(base_url: str, path: str, body: Any, *, headers: dict[str, str] | None = None) -> httpx2.Response:
    text = body if isinstance(body, (str, bytes)) else json.dumps(body)
    sent = {"content-type": "application/json", **(headers or {})}
    return httpx2.post(f"{base_url}{path}", content=text, headers=sent, timeout=10)


# -- callers kept apart ----------------------------------------------------------------------------------------


def test_one_callers_idempotency_key_never_reaches_another_callers_answer(idempotent: Stack) -> None:
    # Given caller A's answer stored under a key
    event_a = rest_event({"prompt": "hi"}, "key-a")
    event_a["headers"]["Idempotency-Key"] = "shared-key"
    first = idempotent.invoke(event_a)
    # When caller B sends the same key with the same body, and then with another body
    event_b = rest_event({"prompt": "hi"}, "key-b")
    event_b["headers"]["Idempotency-Key"] = "shared-key"
    second = idempotent.invoke(event_b)
    other = rest_event({"prompt": "something else"}, "key-b")
    other["headers"]["Idempotency-Key"] = "shared-key-2"
    idempotent.invoke({**event_a, "headers": {**event_a["headers"], "Idempotency-Key": "shared-key-2"}})
    third = idempotent.invoke(other)
    # Then B's requests are B's own: answered by OpenAI, never replayed from A's, never a 422
    assert first["statusCode"] == second["statusCode"] == third["statusCode"] == 200
    assert "Idempotent-Replayed" not in second["headers"] and "Idempotent-Replayed" not in third["headers"]
    assert len(idempotent.openai.received) == 4


def test_a_large_answer_is_stored_compressed_and_replayed(idempotent: Stack) -> None:
    # Given an answer of about 1 MB (n > 1, logprobs), well over what one DynamoDB record holds as it is
    big = natural_completion({"messages": USER})
    big["choices"][0]["message"]["content"] = " ".join(["word"] * 200_000)
    idempotent.openai.script(Reply(body=big))
    event = rest_event({"prompt": "hi"}, "key-a")
    event["headers"]["Idempotency-Key"] = "big"
    first = idempotent.invoke(event)
    # When it is repeated
    second = idempotent.invoke(event)
    # Then the repeat is the stored answer, and OpenAI was called once
    assert first["statusCode"] == second["statusCode"] == 200
    assert second["headers"]["Idempotent-Replayed"] == "true"
    assert json.loads(second["body"]) == json.loads(first["body"])
    assert len(idempotent.openai.received) == 1


def test_an_answer_too_large_even_compressed_is_never_paid_for_twice(idempotent: Stack) -> None:
    # Given an answer that does not compress below what a record holds (random text)
    import secrets

    big = natural_completion({"messages": USER})
    big["choices"][0]["message"]["content"] = secrets.token_urlsafe(600_000)
    idempotent.openai.script(Reply(body=big))
    event = rest_event({"prompt": "hi"}, "key-a")
    event["headers"]["Idempotency-Key"] = "too-big"
    first = idempotent.invoke(event)
    # When it is repeated
    second = idempotent.invoke(event)
    # Then the first got its answer, the repeat a clear 410 (never a false 409), and OpenAI was called once
    assert first["statusCode"] == 200
    assert second["statusCode"] == 410
    assert "too large to be stored" in json.loads(second["body"])["error"]
    assert len(idempotent.openai.received) == 1


def test_a_body_with_nan_and_an_idempotency_key_is_a_400_not_a_store_error(idempotent: Stack) -> None:
    event = load_event("apigateway-rest.json")
    event["isBase64Encoded"] = False
    event["body"] = '{"prompt": "hi", "temperature": NaN}'
    event["headers"]["Idempotency-Key"] = "nan"
    assert idempotent.invoke(event)["statusCode"] == 400


def test_openais_401_never_tells_a_caller_anything_of_the_functions_key(stack: Stack) -> None:
    # Given OpenAI refusing the key, quoting its end (as it does), twice (the key is re-read once)
    refusal = Reply.error(401, f"Incorrect API key provided: sk-****...{API_KEY[-4:]}. See ...", code="invalid_api_key")
    stack.openai.script(refusal, refusal)
    # When a caller asks
    answer = stack.invoke(rest_event({"prompt": "hi"}, "key-a"))
    # Then it gets a 502 that quotes nothing of the key
    assert answer["statusCode"] == 502
    assert API_KEY[-4:] not in answer["body"] and "sk-" not in answer["body"]


def test_an_upstream_message_quoting_a_key_is_scrubbed_from_any_error(stack: Stack) -> None:
    stack.openai.script(Reply.error(400, f"bad request for key {API_KEY} (sk-proj-abcd****wxyz)", param="model"))
    answer = stack.invoke(rest_event({"prompt": "hi"}, "key-a"))
    assert answer["statusCode"] == 400
    assert API_KEY not in answer["body"] and "wxyz" not in answer["body"] and "[redacted]" in answer["body"]


def test_one_callers_bad_max_tokens_never_changes_what_others_send(base_url: str, stack: Stack) -> None:
    # Given the upstream refusing one caller's value of max_tokens (not the parameter itself)
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    stack.openai.script(
        Reply.error(
            400,
            "max_tokens is too large: 4000. This model supports at most 16 tokens.",
            param="max_tokens",
            code="invalid_value",
        )
    )
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=USER, max_tokens=4000)  # type: ignore[arg-type]
    # When another caller asks next
    client.chat.completions.create(model="gpt-4o-mini", messages=USER, max_tokens=10)  # type: ignore[arg-type]
    # Then the refused call was not retried under the other parameter, and the next caller's limit went as before
    assert len(stack.openai.received) == 2
    assert stack.openai.received[1].json.get("max_tokens") == 10
    assert "max_completion_tokens" not in stack.openai.received[1].json


# -- limits and budgets ---------------------------------------------------------------------------------------


def test_n_times_the_output_limit_never_passes_the_ceiling(base_url: str, stack: Stack) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=USER,  # type: ignore[arg-type]
        n=128,
        max_tokens=4096,
    )
    sent = stack.openai.received[0].json
    assert sent["n"] == 128 and sent["max_tokens"] * 128 <= 32_768
    assert raw.headers["x-max-tokens-lowered"] == f"from=4096, to={sent['max_tokens']}"


def test_opencodes_max_tokens_32000_is_served_and_a_larger_ask_lowered(
    base_url: str, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_TOKENS_CEILING", "4096")
    answer = post(base_url, "/chat/completions", {"model": "gpt-4o-mini", "messages": USER, "max_tokens": 32000})
    assert answer.status_code == 200 and answer.headers["x-max-tokens-lowered"] == "from=32000, to=4096"
    assert stack.openai.received[0].json["max_tokens"] == 4096
    monkeypatch.setenv("MAX_TOKENS_OVER_CEILING", "refuse")
    reconfigure(monkeypatch)
    refused = post(base_url, "/chat/completions", {"model": "gpt-4o-mini", "messages": USER, "max_tokens": 32000})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "max_tokens"


@pytest.mark.parametrize(
    "body",
    [
        {"messages": USER, "tools": [{"type": "function", "function": {"name": "f", "description": "x" * 200_000}}]},
        {
            "messages": [
                *USER,
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "x" * 200_000}}
                    ],
                },
            ]
        },
    ],
)
def test_text_outside_message_content_counts_against_the_prompt_limit(
    base_url: str, stack: Stack, monkeypatch: pytest.MonkeyPatch, body: dict[str, Any]
) -> None:
    monkeypatch.setenv("MAX_PROMPT_CHARS", "32000")  # 200,000 characters outside message content, 32,000 allowed
    answer = post(base_url, "/chat/completions", {"model": "gpt-4o-mini", **body})
    assert answer.status_code == 400 and "characters" in answer.json()["error"]["message"]
    assert not stack.openai.received


def test_a_responses_function_call_output_counts_against_the_prompt_limit(
    base_url: str, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_PROMPT_CHARS", "32000")  # 200,000 characters outside message content, 32,000 allowed
    item = {"type": "function_call_output", "call_id": "c", "output": "x" * 200_000}
    answer = post(base_url, "/responses", {"model": "gpt-4o-mini", "input": [item]})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "input"


def test_gpt_5_pro_and_o3_pro_are_priced_as_themselves_under_a_usd_budget(
    budgets: Budgeted, client_for: Callable[..., openai.OpenAI], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a daily budget of $0.20 and a 10,000-token output limit: $0.10 of output for gpt-5, $1.20 for gpt-5-pro
    reconfigure(monkeypatch, DEFAULT_DAILY_BUDGET_USD="0.2", ALLOWED_MODELS="gpt-5,gpt-5-pro,o3,o3-pro")
    client = client_for("pro-caller")

    def ask(model: str) -> int:
        try:
            client.chat.completions.create(model=model, messages=USER, max_tokens=10_000)  # type: ignore[arg-type]
        except openai.APIStatusError as error:
            return error.status_code
        return 200

    # Then the standard models pass and the pro ones, at ten times the price, are refused
    assert [ask(model) for model in ("gpt-5", "gpt-5-pro", "o3", "o3-pro")] == [200, 429, 200, 429]


def test_priority_is_priced_at_its_own_rate_and_an_unpriced_tier_is_refused_under_a_usd_budget(
    budgets: Budgeted, client_for: Callable[..., openai.OpenAI], monkeypatch: pytest.MonkeyPatch, metered: list[Any]
) -> None:
    reconfigure(monkeypatch, DEFAULT_DAILY_BUDGET_USD="10")
    client = client_for("tier-caller")
    # When a priority call is answered at the priority tier
    priority = natural_completion({"messages": USER, "model": "gpt-4o-mini"})
    budgets.stack.openai.script(Reply(body={**priority, "service_tier": "priority"}))
    client.chat.completions.create(model="gpt-4o-mini", messages=USER, service_tier="priority")  # type: ignore[arg-type]
    usage = priority["usage"]
    # Then it is priced at priority's rate ($0.25 and $1.00 per million), in the budget and the metrics
    expected = (usage["prompt_tokens"] * Decimal("0.25") + usage["completion_tokens"] * Decimal("1.00")) / 1_000_000
    wait_for(lambda: budgets.holds("tier-caller") == [])  # settled just after the answer has gone
    assert budgets.spent("tier-caller")[0] == expected
    assert Decimal(str(last(metered).cost_usd)) == expected
    # And flex, which gpt-4o-mini is not offered at, is refused naming the field
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER, service_tier="flex")  # type: ignore[arg-type]
    assert refused.value.param == "service_tier"


# -- valid JSON that once gave a 500 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "text", "param"),
    [
        ("/chat/completions", '{"messages": [{"role": "user", "content": "hi"}], "top_p": NaN}', "top_p"),
        (
            "/chat/completions",
            '{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"1": 1e999}}',
            "logit_bias",
        ),
        ("/chat/completions", '{"messages": [{"role": "user", "content": "hi"}], "n": ' + "9" * 400 + "}", "n"),
        ("/embeddings", '{"input": "hi", "dimensions": 1e999}', "dimensions"),
        ("/responses", '{"input": "hi", "metadata": ' + "[" * 600 + "]" * 600 + "}", "metadata"),
    ],
)
def test_numbers_and_depths_the_parser_accepts_get_a_400_naming_the_field(
    budgets: Budgeted, base_url: str, path: str, text: str, param: str
) -> None:
    answer = post(base_url, path, text)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == param
    assert not budgets.stack.openai.received


def test_absurd_usage_figures_are_a_502_and_the_estimate_is_kept(budgets: Budgeted, base_url: str) -> None:
    broken = natural_completion({"messages": USER})
    broken["usage"] = {"prompt_tokens": 10**300, "completion_tokens": 1, "total_tokens": 10**300}
    budgets.stack.openai.script(Reply(body=broken))
    answer = post(base_url, "/chat/completions", {"messages": USER}, headers=caller_headers("usage-caller"))
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "upstream_malformed"
    assert budgets.spent("usage-caller")[0] > 0 and not budgets.holds("usage-caller")


def test_a_stream_with_absurd_usage_ends_cleanly_and_is_logged(
    budgets: Budgeted, base_url: str, metered: list[Any]
) -> None:
    # Given a stream whose usage chunk is absurd
    chunks = [
        {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
         "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]},
        {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini", "choices": [],
         "usage": {"prompt_tokens": 10**400, "completion_tokens": 1, "total_tokens": 10**400}},
    ]  # fmt: skip
    raw = b"".join(b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks) + b"data: [DONE]\n\n"
    budgets.stack.openai.script(Reply(action="respond", body=raw, headers={"Content-Type": "text/event-stream"}))
    # When it is streamed through the app
    body = {"messages": USER, "stream": True}
    with httpx2.stream("POST", f"{base_url}/chat/completions", json=body, headers=caller_headers("s"), timeout=10) as r:
        text = b"".join(r.iter_bytes()).decode()
    # Then it ends with an error event, cleanly, and the call is logged and counted once
    assert r.status_code == 200 and "upstream_malformed" in text
    assert the_call(metered).outcome == "UpstreamMalformed"


# -- odd but legal requests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["apigateway-http-api.json", "function-url.json"])
def test_http_events_without_a_body_are_http_not_direct_invokes(stack: Stack, name: str) -> None:
    # Given an HTTP API / Function URL GET with no body key at all (as API Gateway sends one)
    event = load_event(name)
    event.pop("body", None)
    event["requestContext"]["http"]["method"] = "GET"
    # Then it is answered over HTTP: 405 with Allow, billed to no one
    answer = stack.invoke(event)
    assert answer["statusCode"] == 405 and answer["headers"]["Allow"] == "POST"
    event["requestContext"]["http"]["method"] = "POST"
    assert stack.invoke(event)["statusCode"] == 400
    assert not stack.openai.received


def test_a_relay_keeps_openais_query_parameters(base_url: str, stack: Stack) -> None:
    created = post(base_url, "/responses", {"model": "gpt-4o-mini", "input": "hi"}).json()
    url = f"{base_url}/responses/{created['id']}/input_items?after=item_1&limit=2&order=asc&include[]=a&x=y"
    assert httpx2.get(url, timeout=10).status_code == 200
    relayed = stack.openai.received[-1].path
    assert relayed.endswith("?after=item_1&limit=2&order=asc&include%5B%5D=a") or "after=item_1" in relayed
    assert "limit=2" in relayed and "order=asc" in relayed and "x=y" not in relayed


# -- make serve on a developer's laptop ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"content-type": "text/plain"}, 415),
        ({"content-type": "application/x-www-form-urlencoded"}, 415),
        ({"content-type": "multipart/form-data; boundary=x"}, 415),
        ({"content-type": "application/json", "origin": "https://evil.example"}, 403),
        ({"content-type": "application/json", "origin": "http://127.0.0.1:1"}, 403),
        ({"content-type": "application/json", "sec-fetch-site": "cross-site"}, 403),
        ({"content-type": "application/json", "host": "rebound.example:3000"}, 403),
        ({"content-type": "application/json", "host": "[evil]:3000"}, 403),
        ({"content-type": "application/json", "origin": "null"}, 403),
        ({}, 415),
        ({"content-type": "application/json; charset=utf-8", "sec-fetch-site": "same-origin"}, 200),
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat"])
def test_make_serve_refuses_what_another_sites_page_could_send(
    base_url: str, stack: Stack, headers: dict[str, str], status: int, path: str
) -> None:
    root = base_url.removesuffix("/v1")
    body = {"messages": USER} if path.startswith("/v1") else {"prompt": "hi"}
    answer = httpx2.post(root + path, content=json.dumps(body), headers=headers, timeout=10)
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("application/json")
    assert len(stack.openai.received) == (1 if status == 200 else 0)


def test_make_serve_answers_its_own_origin(base_url: str, stack: Stack) -> None:
    root = base_url.removesuffix("/v1")
    answer = post(base_url, "/chat/completions", {"messages": USER}, headers={"origin": root})
    assert answer.status_code == 200


def test_an_oversized_chat_body_is_a_json_413(base_url: str) -> None:
    root = base_url.removesuffix("/v1")
    answer = httpx2.post(
        f"{root}/chat", content=b"x" * (10 * 1024 * 1024 + 1), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413 and answer.json()["success"] is False


def test_a_client_that_leaves_mid_body_is_not_a_traceback(base_url: str, stack: Stack) -> None:
    # Given what the server logs as errors (uvicorn logs an exception the app let out, with its traceback)
    errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append  # type: ignore[method-assign]
    logging.getLogger("uvicorn.error").addHandler(handler)
    root = base_url.removesuffix("/v1")
    host, port = root.removeprefix("http://").split(":")

    async def leave_mid_body(path: str) -> None:
        _reader, writer = await asyncio.open_connection(host, int(port))
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        writer.write(head.encode() + b'{"prompt": ')
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()

    try:
        # When a client sends half a body to each route, then goes away
        for path in ("/chat", "/v1/chat/completions"):
            asyncio.run(leave_mid_body(path))
        # Then the server logs no error for it, in the second it is given to (a failure is logged within ms)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: errors, 1.0)
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
    assert [record.getMessage() for record in errors] == []
    assert not stack.openai.received


def test_an_unreadable_adapter_deadline_is_not_a_500(base_url: str, stack: Stack) -> None:
    for deadline in ("NaN", "Infinity", "1e999", "true", '"soon"', "-1"):
        headers = {"x-amzn-lambda-context": '{"deadline": ' + deadline + "}"}
        answer = post(base_url, "/chat/completions", {"messages": USER}, headers=headers)
        assert answer.status_code == 200, deadline


def test_an_adapter_header_nested_past_the_parsers_depth_is_ignored(base_url: str, stack: Stack) -> None:
    deep = "[" * 20_000 + "]" * 20_000
    for name in ("x-amzn-request-context", "x-amzn-lambda-context"):
        answer = post(base_url, "/chat/completions", {"messages": USER}, headers={name: deep})
        assert answer.status_code == 200, name


def test_make_serve_takes_a_body_less_post_such_as_a_cancel(base_url: str, stack: Stack) -> None:
    # Given a stored response, and a POST with no body and no Content-Type (the npm SDK's cancel sends none)
    created = post(base_url, "/responses", {"model": "gpt-4o-mini", "input": "hi"}).json()
    answer = httpx2.post(f"{base_url}/responses/{created['id']}/cancel", timeout=10)
    # Then it reaches the route, and the upstream
    assert answer.status_code == 200 and stack.openai.received[-1].path.endswith("/cancel")
