"""Spend limits per caller, against moto_server's DynamoDB and the fake OpenAI on loopback.

Each test has a table of its own and callers of its own. A call reserves its estimate before the upstream is
called and settles its cost after; what the tests read back is the table's own item.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx2
import openai
import pytest

from lambda_chat import telemetry
from lambda_chat.budget import periods
from lambda_chat.budget_store import BudgetStore
from local.budget import clear_limits, set_limits
from tests.support.emf import KNOWN_RESPONSE, emf_lines
from tests.support.fake_openai import Reply
from tests.support.metering import the_call
from tests.support.stack import Budgeted, caller_headers, reconfigure, rest_event, wait_for

MINI = (Decimal("0.15"), Decimal("0.60"))  # gpt-4o-mini, USD per million input and output tokens (OpenAI's list)


def cost_of(usage: dict[str, int], price: tuple[Decimal, Decimal] = MINI) -> Decimal:
    return (usage["prompt_tokens"] * price[0] + usage["completion_tokens"] * price[1]) / 1_000_000


# -- settle with exact figures ---------------------------------------------------------------------------------


def test_a_call_settles_its_exact_cost_and_releases_the_rest(
    budgets: Budgeted, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given budgets on, with no limit for this caller
    # When an API Gateway request is served
    response = budgets.stack.invoke(rest_event({"prompt": "Say hi", "model": "gpt-4o-mini"}, "key-exact"))
    assert response["statusCode"] == 200
    usage = json.loads(response["body"])["usage"]
    # Then the month's item holds what the call cost, today's counters the same, and no hold is left
    item = budgets.month_item("key-exact")
    day = periods(time.time())[1]
    assert item["usd"] == cost_of(usage) == item[f"d{day}_usd"]
    assert item["tokens"] == usage["total_tokens"] == item[f"d{day}_tokens"]
    assert budgets.holds("key-exact") == []
    # And the call's log line carries the caller's spend (a log field, never a metric dimension)
    lines = [line for line in logged() if line["message"] == "chat completed"]
    assert len(lines) == 1
    assert lines[0]["caller"] == "key-exact" and lines[0]["caller_spend_today_usd"] == float(cost_of(usage))
    assert lines[0]["caller_tokens_month"] == usage["total_tokens"]


def test_spend_adds_up_per_caller_and_a_replayed_answer_costs_nothing(
    budgets: Budgeted, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = f"lambda-chat-idempotency-{uuid.uuid4().hex[:8]}"
    budgets.stack.moto.create_idempotency_table(table)
    monkeypatch.setenv("IDEMPOTENCY_TABLE", table)
    # Given two calls by one caller, one by another, and a retry of the first with its Idempotency-Key
    first = rest_event({"prompt": "one two three"}, "key-a")
    first["headers"]["Idempotency-Key"] = "k-1"
    answers = [
        budgets.stack.invoke(e)
        for e in (first, rest_event({"prompt": "four"}, "key-a"), rest_event({"prompt": "x"}, "key-b"), first)
    ]
    assert [a["statusCode"] for a in answers] == [200, 200, 200, 200]
    assert answers[3]["headers"]["Idempotent-Replayed"] == "true"
    usages = [json.loads(a["body"])["usage"] for a in answers]
    # Then each caller's spend is the sum of its own calls' costs; the replay added nothing
    assert budgets.spent("key-a") == (
        cost_of(usages[0]) + cost_of(usages[1]),
        usages[0]["total_tokens"] + usages[1]["total_tokens"],
    )
    assert budgets.spent("key-b") == (cost_of(usages[2]), usages[2]["total_tokens"])
    assert len(budgets.stack.openai.received) == 3


# -- over budget --------------------------------------------------------------------------------------------------


def test_over_budget_is_a_429_naming_the_period_with_retry_after_at_its_end(
    budgets: Budgeted, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a daily budget of $0.0006, and a first call (held: $0.0003) that cost $0.000435
    monkeypatch.setenv("DEFAULT_DAILY_BUDGET_USD", "0.0006")
    budgets.stack.openai.script(Reply(body=KNOWN_RESPONSE))
    first = budgets.stack.invoke(rest_event({"prompt": "hi", "max_tokens": 500}, "key-c"))
    assert first["statusCode"] == 200
    assert budgets.spent("key-c") == (Decimal("0.000435"), 1500)
    capsys.readouterr()
    # When the caller asks again, for a call that would fit an empty budget
    second = budgets.stack.invoke(rest_event({"prompt": "hi", "max_tokens": 500}, "key-c"))
    # Then it gets a 429 budget_exceeded envelope naming the daily budget, and the upstream was not called again
    assert second["statusCode"] == 429
    body = json.loads(second["body"])
    assert body["success"] is False
    assert "the daily budget of this API key is used up ($0.000435 of $0.0006" in body["error"]
    assert "resets at" in body["error"]
    assert len(budgets.stack.openai.received) == 1
    # And Retry-After is the seconds to the next UTC midnight; SDKs are told not to retry
    import time

    midnight = (int(time.time()) // 86_400 + 1) * 86_400
    assert abs(int(second["headers"]["Retry-After"]) - (midnight - time.time())) <= 3
    assert second["headers"]["x-should-retry"] == "false"
    # And the rejection is counted as BudgetRejections, with no per-caller dimension
    (blob,) = [b for b in emf_lines(capsys.readouterr().out) if "Requests" in b]
    assert blob["BudgetRejections"] == 1 and blob["outcome"] == "BudgetExceeded"
    assert all("caller" not in dims for dims in blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"])


def test_a_call_whose_estimate_exceeds_the_whole_budget_is_told_what_to_change(
    budgets: Budgeted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEFAULT_MONTHLY_BUDGET_TOKENS", "500")
    response = budgets.stack.invoke(rest_event({"prompt": "hi", "max_tokens": 1000}, "key-d"))
    assert response["statusCode"] == 429
    assert "more than the whole monthly budget (500 tokens)" in json.loads(response["body"])["error"]
    assert "Retry-After" not in response["headers"] and budgets.stack.openai.received == []
    # And a call that fits goes through, counted in tokens
    assert budgets.stack.invoke(rest_event({"prompt": "hi", "max_tokens": 400}, "key-d"))["statusCode"] == 200
    assert 0 < budgets.spent("key-d")[1] <= 500


def test_an_openai_client_gets_a_rate_limit_error_with_the_code_and_does_not_retry(
    budgets: Budgeted, client_for: Any, monkeypatch: pytest.MonkeyPatch, metered: list[telemetry.CallFigures]
) -> None:
    monkeypatch.setenv("DEFAULT_MONTHLY_BUDGET_USD", "0")
    client = client_for("key-e", max_retries=2)  # the SDK's default retries
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.code == "budget_exceeded" and "monthly budget" in raised.value.message
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert len(metered) == 1 and metered[0].outcome == "BudgetExceeded"  # one request: the SDK did not retry
    assert budgets.stack.openai.received == []


# -- concurrency --------------------------------------------------------------------------------------------------


def test_fifty_concurrent_calls_against_room_for_ten_let_exactly_ten_reach_the_upstream(
    budgets: Budgeted, client_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lambda_chat.budget import Budgets
    from lambda_chat.models import UpstreamRequest
    from lambda_chat.pricing import PriceTable

    # Given a daily budget with room for 10 estimates of this call, and 10.5 of them
    messages = [{"role": "user", "content": "hi"}]
    estimate = Budgets(budgets.store, PriceTable.from_json(None), fail_open=False, allow_unpriced=False).estimate(
        UpstreamRequest(model="gpt-4o-mini", messages=messages, max_tokens=100)
    )
    monkeypatch.setenv("DEFAULT_DAILY_BUDGET_USD", str(estimate.usd * Decimal("10.5")))
    # (moto serves one request at a time, at 20 to 70 ms each on 2 cores: give the 50 calls' writes time to queue)
    monkeypatch.setenv("BUDGET_TABLE_TIMEOUT_SECONDS", "20")
    monkeypatch.setenv("BUDGET_LIMITS_CACHE_SECONDS", "60")
    # And an upstream that holds every answer until the test lets it go
    budgets.stack.openai.gate = threading.Event()
    client = client_for("key-crowd")
    statuses: list[int] = []
    usages: list[dict[str, int]] = []

    def call() -> None:
        try:
            answer = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=100)
        except openai.APIStatusError as exc:
            statuses.append(exc.status_code)
            return
        assert answer.usage is not None
        usages.append(
            {"prompt_tokens": answer.usage.prompt_tokens, "completion_tokens": answer.usage.completion_tokens}
        )
        statuses.append(200)

    # When 50 calls arrive at once
    threads = [threading.Thread(target=call) for _ in range(50)]
    for thread in threads:
        thread.start()
    # Then 40 are refused while 10 are still in flight, and the upstream saw exactly those 10
    wait_for(lambda: len(statuses) == 40, seconds=30)
    assert statuses == [429] * 40
    wait_for(lambda: len(budgets.stack.openai.received) >= 10, seconds=10)
    time.sleep(0.3)  # no eleventh arrives
    assert len(budgets.stack.openai.received) == 10
    assert len(budgets.holds("key-crowd")) == 10
    budgets.stack.openai.gate.set()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == [200] * 10 + [429] * 40
    assert len(budgets.stack.openai.received) == 10
    # And once they settle (just after each answer has gone), the spend is the 10 calls' actual cost, nothing held
    sent = budgets.stack.openai.received[0].json
    assert sent["max_tokens"] == 100  # (an OpenAI-compatible base URL gets max_tokens)
    wait_for(lambda: budgets.holds("key-crowd") == [], seconds=10)
    assert budgets.spent("key-crowd") == (
        sum((cost_of(usage) for usage in usages), Decimal(0)),
        sum(usage["prompt_tokens"] + usage["completion_tokens"] for usage in usages),
    )


# -- overrides, unpriced models --------------------------------------------------------------------------------------


def test_an_override_beats_the_default_both_ways(budgets: Budgeted, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a default daily budget too small for any call
    monkeypatch.setenv("DEFAULT_DAILY_BUDGET_USD", "0.000001")
    assert budgets.stack.invoke(rest_event({"prompt": "hi"}, "key-f"))["statusCode"] == 429
    # When the operator lifts the limit for this caller (NULL: no limit)
    set_limits(budgets.store, "key-f", daily_usd=None)
    # Then its calls go through, while another caller's are still refused
    assert budgets.stack.invoke(rest_event({"prompt": "hi"}, "key-f"))["statusCode"] == 200
    assert budgets.stack.invoke(rest_event({"prompt": "hi"}, "key-g"))["statusCode"] == 429
    # And an override in tokens applies on top of the default in USD
    set_limits(budgets.store, "key-g", daily_usd=Decimal(1), daily_tokens=10)
    refused = budgets.stack.invoke(rest_event({"prompt": "hi"}, "key-g"))
    assert refused["statusCode"] == 429 and "(10 tokens)" in json.loads(refused["body"])["error"]
    clear_limits(budgets.store, "key-g")
    assert budgets.stack.invoke(rest_event({"prompt": "hi"}, "key-g"))["statusCode"] == 429  # the default again


def test_a_model_with_no_known_price_is_refused_where_a_usd_budget_applies_unless_allowed(
    budgets: Budgeted, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a model missing from the price table, and no USD limit: it runs, counted in tokens (at $0)
    event = {"prompt": "hi", "model": "my-fine-tune"}
    free = budgets.stack.invoke(event)
    assert free["success"] is True
    assert budgets.spent("direct") == (Decimal(0), free["usage"]["total_tokens"])
    # Given a daily USD budget: it is refused before any upstream call, saying how to price it
    reconfigure(monkeypatch, DEFAULT_DAILY_BUDGET_USD="10")
    refused = budgets.stack.invoke(event)
    assert refused["success"] is False and "no known price" in refused["error"]
    assert "MODEL_PRICES_JSON" in refused["error"] and len(budgets.stack.openai.received) == 1
    # When unpriced models are allowed, it runs, limited by tokens (its cost counts as 0)
    reconfigure(monkeypatch, ALLOW_UNPRICED_MODELS="true")
    allowed = budgets.stack.invoke(event)
    assert allowed["success"] is True
    assert budgets.spent("direct") == (Decimal(0), free["usage"]["total_tokens"] + allowed["usage"]["total_tokens"])
    # And a price given through MODEL_PRICES_JSON is used instead
    reconfigure(
        monkeypatch, ALLOW_UNPRICED_MODELS="false", MODEL_PRICES_JSON='{"my-fine-tune": {"input": 3, "output": 12}}'
    )
    priced = budgets.stack.invoke(event)
    assert priced["success"] is True
    assert budgets.spent("direct")[0] == cost_of(priced["usage"], (Decimal(3), Decimal(12)))
    assert len(budgets.stack.openai.received) == 3


# -- the table down, failed settles, failed calls -----------------------------------------------------------------


@pytest.mark.parametrize("fault", ["no such table", "endpoint down"])
def test_the_table_down_fails_closed_with_a_503_by_default(
    budgets: Budgeted, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    if fault == "no such table":
        monkeypatch.setenv("BUDGET_TABLE", "lambda-chat-budgets-missing")
    else:
        from local.moto import free_port

        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", f"http://127.0.0.1:{free_port()}")
    response = budgets.stack.invoke(rest_event({"prompt": "hi"}, "key-h"))
    assert response["statusCode"] == 503
    assert "budget table" in json.loads(response["body"])["error"]
    assert budgets.stack.openai.received == []


def test_the_table_down_in_open_mode_runs_the_call_and_counts_the_failure(
    budgets: Budgeted,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    logged: Callable[[], list[dict[str, Any]]],
) -> None:
    monkeypatch.setenv("BUDGET_TABLE", "lambda-chat-budgets-missing")
    monkeypatch.setenv("BUDGET_FAIL_MODE", "open")
    response = budgets.stack.invoke(rest_event({"prompt": "hi"}, "key-i"))
    assert response["statusCode"] == 200 and len(budgets.stack.openai.received) == 1
    (blob,) = [b for b in emf_lines(capsys.readouterr().out) if "Requests" in b]
    assert blob["BudgetStoreFailures"] == 1
    assert any("the call runs unmetered" in line["message"] for line in logged())


class FlakyWrites:
    """The function's DynamoDB client, with settles failing as told. A settle is a write that names a hold the item
    holds now (a reservation names one it does not hold yet) and no released id (as an expired hold's release does)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.plan: list[str] = []  # per settle attempt: "drop" (time out, not applied), "late" (applied, then time out)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_item(self, **request: Any) -> Any:
        from botocore.exceptions import ReadTimeoutError

        if self.plan and self._settles(request):
            fault = self.plan.pop(0)
            if fault == "late":
                self._client.update_item(**request)
            raise ReadTimeoutError(endpoint_url="http://budget-table")
        return self._client.update_item(**request)

    def _settles(self, request: dict[str, Any]) -> bool:
        named = set(request.get("ExpressionAttributeNames", {}).values())
        found = self._client.get_item(TableName=request["TableName"], Key=request["Key"], ConsistentRead=True)
        held = {name for name in found.get("Item", {}) if name.startswith("hold:")}
        return "released" not in named and bool(named & held)


@pytest.fixture
def flaky(budgets: Budgeted, monkeypatch: pytest.MonkeyPatch) -> FlakyWrites:
    wrapper = FlakyWrites(budgets.stack.moto.client("dynamodb"))
    monkeypatch.setattr(BudgetStore, "client", property(lambda self: wrapper))
    return wrapper


def test_a_settle_that_times_out_is_retried_once_and_never_counted_twice(
    budgets: Budgeted, flaky: FlakyWrites, logged: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given a settle whose first try times out, not applied: the retry settles the exact cost
    flaky.plan = ["drop"]
    first = budgets.stack.invoke(rest_event({"prompt": "hi"}, "key-j"))
    assert first["statusCode"] == 200 and flaky.plan == []
    assert budgets.spent("key-j")[0] == cost_of(json.loads(first["body"])["usage"])
    # Given a settle whose first try went through but its answer timed out: the retry adds nothing more
    flaky.plan = ["late"]
    second = budgets.stack.invoke(rest_event({"prompt": "hi"}, "key-j"))
    assert flaky.plan == []
    usages = [json.loads(answer["body"])["usage"] for answer in (first, second)]
    assert budgets.spent("key-j") == (
        cost_of(usages[0]) + cost_of(usages[1]),
        usages[0]["total_tokens"] + usages[1]["total_tokens"],
    )
    assert budgets.holds("key-j") == []
    retries = [line for line in logged() if line["message"] == "budget table call failed; trying once more"]
    assert len(retries) == 2 and {line["reason"] for line in retries} == {"ReadTimeoutError"}


def test_a_settle_that_fails_twice_still_answers_and_is_logged_and_counted(
    budgets: Budgeted,
    flaky: FlakyWrites,
    capsys: pytest.CaptureFixture[str],
    logged: Callable[[], list[dict[str, Any]]],
) -> None:
    flaky.plan = ["drop", "drop"]
    capsys.readouterr()
    response = budgets.stack.invoke(rest_event({"prompt": "hi"}, "key-j2"))
    assert response["statusCode"] == 200 and json.loads(response["body"])["success"] is True and flaky.plan == []
    assert sum("budget settle failed twice" in line["message"] for line in logged()) == 1
    (blob,) = [b for b in emf_lines(capsys.readouterr().out) if "Requests" in b]
    assert blob["BudgetSettleFailures"] == 1
    assert len(budgets.holds("key-j2")) == 1  # held until it expires


def test_a_stream_the_client_left_before_its_first_frame_is_ended_and_settled(
    budgets: Budgeted, metered: list[telemetry.CallFigures]
) -> None:
    import asyncio

    from lambda_chat.calls import Invocation
    from lambda_chat.deadline import Deadline
    from lambda_chat.faces import OPENAI
    from lambda_chat.stream import ChatStream
    from lambda_chat.wiring import service_for

    budgets.stack.openai.script(Reply.stream([f" w{i}" for i in range(100)], interval=0.05))
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "go"}], "stream": True}

    async def leave_before_the_first_frame() -> None:
        invocation = Invocation("streaming_api", Deadline(30_000), OPENAI, caller="key-s4", streams=True)
        stream = await service_for("app").chat(request, invocation)
        assert isinstance(stream, ChatStream)
        assert len(budgets.holds("key-s4")) == 1
        async with stream:  # what the app does when the response ends before frames() runs
            pass
        await stream.close()  # a second ending changes nothing (the_call: one log line, one count)

    asyncio.run(leave_before_the_first_frame())
    # Then the upstream was closed, the estimate settled as spent, and the call logged as a disconnect
    wait_for(lambda: len(budgets.stack.openai.streams_abandoned) == 1)
    assert budgets.holds("key-s4") == [] and budgets.spent("key-s4")[1] > 0
    assert the_call(metered).outcome == "ClientDisconnected"


@pytest.mark.parametrize(
    ("reply", "billed"),
    [(Reply.error(400, "bad model", code="model_not_found"), False), (Reply(action="truncate", body={"x": 1}), True)],
    ids=["upstream 400 settles nothing", "broken answer keeps the estimate"],
)
def test_a_failed_call_settles_what_openai_may_have_billed(budgets: Budgeted, reply: Reply, billed: bool) -> None:
    budgets.stack.openai.script(reply)
    response = budgets.stack.invoke(rest_event({"prompt": "hi", "max_tokens": 100}, "key-k"))
    assert response["statusCode"] in (400, 502)
    usd, tokens = budgets.spent("key-k")
    assert budgets.holds("key-k") == []
    if billed:
        assert usd > 0 and tokens > 100  # the estimate: the prompt's size and the 100 tokens asked for
    else:
        assert (usd, tokens) == (Decimal(0), 0)


# -- streams ------------------------------------------------------------------------------------------------------


def test_a_stream_settles_from_its_final_usage(
    budgets: Budgeted, client_for: Any, metered: list[telemetry.CallFigures]
) -> None:
    client = client_for("key-s1")
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usages = [chunk.usage for chunk in stream if chunk.usage is not None]
    assert len(usages) == 1
    usage = usages[0]
    wait_for(lambda: budgets.holds("key-s1") == [])
    # (the client's closing the stream while the spend was written must not lose the call's log line and metrics)
    assert the_call(metered).outcome == "success"
    assert budgets.spent("key-s1") == (
        cost_of({"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}),
        usage.total_tokens,
    )


def test_a_disconnected_stream_settles_its_reservation(budgets: Budgeted, client_for: Any) -> None:
    # Given a stream of 100 chunks, 50 ms apart
    budgets.stack.openai.script(Reply.stream([f" w{i}" for i in range(100)], interval=0.05))
    client = client_for("key-s2")
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "go"}], stream=True
    )
    # While it streams, its estimate is held
    next(iter(stream))
    (hold,) = budgets.holds("key-s2")
    # When the client goes away after a few chunks (no usage arrives)
    stream.close()
    # Then what was held is what is spent: the usage, and so the cost, is unknown
    wait_for(lambda: budgets.holds("key-s2") == [])
    assert budgets.spent("key-s2") == (hold["usd"], int(hold["tokens"]))


def test_a_stream_the_upstream_refuses_before_its_first_byte_settles_nothing(
    budgets: Budgeted, client_for: Any
) -> None:
    budgets.stack.openai.script(Reply.error(400, "context too long", code="context_length_exceeded"))
    client = client_for("key-s3")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "go"}], stream=True)
    assert budgets.spent("key-s3") == (Decimal(0), 0) and budgets.holds("key-s3") == []


def test_responses_and_embeddings_are_budgeted_too(
    budgets: Budgeted, client_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = client_for("key-r")
    response = client.responses.create(model="gpt-4.1-mini", input="Say hi")
    embedded = client.embeddings.create(model="text-embedding-3-small", input=["a b c", "d e"])
    assert response.usage is not None
    chat_cost = (
        response.usage.input_tokens * Decimal("0.40") + response.usage.output_tokens * Decimal("1.60")
    ) / 1_000_000
    embedding_cost = embedded.usage.prompt_tokens * Decimal("0.02") / 1_000_000
    wait_for(lambda: budgets.holds("key-r") == [])  # settled just after each answer has gone
    assert budgets.spent("key-r") == (
        chat_cost + embedding_cost,
        response.usage.total_tokens + embedded.usage.total_tokens,
    )
    # And a stored response's own routes cost nothing and need no budget
    reconfigure(monkeypatch, DEFAULT_DAILY_BUDGET_USD="0")
    assert client.responses.retrieve(response.id).id == response.id
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model="text-embedding-3-small", input="more")


def test_the_streaming_app_answers_503_when_the_table_is_down(
    budgets: Budgeted, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUDGET_TABLE", "lambda-chat-budgets-missing")
    answer = httpx2.post(
        f"{base_url}/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers=caller_headers("key-t"),
    )
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "budget_store_unavailable"
    assert budgets.stack.openai.received == []


def test_in_lambda_the_books_close_before_the_response_ends(
    budgets: Budgeted,
    client_for: Any,
    base_url: str,
    monkeypatch: pytest.MonkeyPatch,
    metered: list[Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the streaming app inside Lambda, which freezes the environment as soon as a response has ended
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "lambda-chat-StreamingFunction")
    client = client_for("key-frozen")
    # When a whole answer has come back to the client
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    settled_first = budgets.holds("key-frozen") == [] and len(metered) == 1
    # And a stream has been read to the end of its response (the sync SDK stops reading at [DONE]; the end of the
    # response is what ends a Lambda invocation)
    budgets.stack.openai.script(Reply.stream(["a", "b"]))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = httpx2.post(f"{base_url}/chat/completions", json=body, headers=caller_headers("key-frozen"), timeout=10)
    # Then each was already settled, logged and counted when its response ended: nothing was left for after it
    assert settled_first
    assert response.text.endswith("data: [DONE]\n\n")
    assert budgets.holds("key-frozen") == [] and len(metered) == 2
    assert [call.outcome for call in metered] == ["success", "success"]
    # And each call wrote one metrics line (the stream's, flushed by the task that ended it, not again after it)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert [line["Requests"] for line in lines] == [[1.0], [1.0]]
