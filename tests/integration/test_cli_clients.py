"""Real coding-agent CLIs, unmodified, against the function: OpenAI's Codex CLI and opencode.

Each CLI (pinned in tests/node) runs headless, once, in a temporary home of its own, configured as its docs say
to use an OpenAI-compatible endpoint: nothing but the function's base URL (local/serve.py, the streaming
function's ASGI app, in this process), a model and a key. `codex exec` speaks the Responses API (`wire_api =
"responses"`); `opencode run` speaks Chat Completions through the AI SDK's `@ai-sdk/openai-compatible`, which
opencode bundles. The fake upstream answers, budgets are on (a table in moto_server), and the tests read what
the CLI printed, what reached the upstream, and what the budget table holds.

What these clients send that hand-written requests do not: Codex's tool schemas (about 19 kB) have a property
named `type` whose schema is an object, and come with `reasoning`, `include`, `store: false` and
`prompt_cache_key`; opencode asks for `max_tokens: 32000` on every call, title included.

Neither CLI may reach the internet: each runs with every proxy variable pointing at a loopback listener that
records and refuses what it is asked for (NO_PROXY covers loopback), and the tests assert it was asked nothing.
What would otherwise go out: Codex syncs its curated plugins (github.com, api.github.com, chatgpt.com) and exports
metrics (ab.chatgpt.com); opencode fetches models.dev's catalogue (models.opencode.ai) and installs
`@opencode-ai/plugin` from registry.npmjs.org into its config directory. The configuration (in
tests/support/cli_clients.py, shared with tests/support/cli_demo.py) turns each off.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from lambda_chat import telemetry
from local.serve import serving_in_background
from tests.support.cli_clients import (
    CALLER_KEY,
    CODEX_MODEL,
    DELTAS,
    OPENCODE_MODEL,
    Outbound,
    Ran,
    refusing_proxy,
    run_codex,
    run_opencode,
)
from tests.support.fake_openai import Reply
from tests.support.stack import API_KEY, Stack

TEXT = "".join(DELTAS)
# The function's defaults throughout (MAX_TOKENS_CEILING 32,768, MAX_PROMPT_CHARS 256,000): Codex's first request
# alone is about 35,000 characters, and opencode asks gpt-4o-mini for 32,000 output tokens, twice what it can write.
MINI_MAX_OUTPUT = 16_384


# -- the sentinel for outbound traffic -----------------------------------------------------------------------------


@pytest.fixture
def outbound() -> Iterator[Outbound]:
    with refusing_proxy() as seen:
        yield seen


# -- the function, with budgets on ---------------------------------------------------------------------------------


@pytest.fixture
def budget_table(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> str:
    """Budgets on, as `make serve` and the stack have them: a table of this test's own, and a daily USD limit."""
    table = f"lambda-chat-budgets-{uuid.uuid4().hex[:8]}"
    stack.moto.create_budget_table(table)
    monkeypatch.setenv("BUDGET_TABLE", table)
    monkeypatch.setenv("DEFAULT_DAILY_BUDGET_USD", "5")
    return table


@pytest.fixture
def base_url(stack: Stack, budget_table: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("ALLOWED_MODELS", "gpt-4o-mini,gpt-4.1-mini")
    with serving_in_background() as url:
        yield f"{url}/v1"


def budget_items(stack: Stack, table: str) -> list[dict[str, Any]]:
    """Every caller's month item: its spend (USD, tokens) and the holds of calls still in flight."""
    items = stack.moto.client("dynamodb").scan(TableName=table, ConsistentRead=True)["Items"]
    return [
        {
            "caller": item["caller"]["S"],
            "usd": Decimal(item["usd"]["N"]) if "usd" in item else Decimal(0),
            "tokens": int(item["tokens"]["N"]) if "tokens" in item else 0,
            "holds": [name for name in item if name.startswith("hold:")],
        }
        for item in items
    ]


def calls_recorded(metered: list[telemetry.CallFigures], count: int, seconds: float = 3.0) -> list[str]:
    """The outcomes of the calls the function metered (a stream's are recorded just after it ends)."""
    deadline = time.monotonic() + seconds
    while len(metered) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return [call.outcome for call in metered]


def properties_named_type(schema: object) -> list[object]:
    """The schemas of every property named `type` in a JSON schema (or list of tools): what `type` maps to there
    is a schema (a dict), not a type name."""
    found: list[object] = []
    if isinstance(schema, dict):
        properties = schema.get("properties")
        if isinstance(properties, dict) and "type" in properties:
            found.append(properties["type"])
        for value in schema.values():
            found += properties_named_type(value)
    elif isinstance(schema, list):
        for value in schema:
            found += properties_named_type(value)
    return found


def evidence(ran: Ran) -> str:
    return f"exit {ran.returncode} after {ran.seconds} s\nstdout: {ran.stdout[-2000:]}\nstderr: {ran.stderr[-6000:]}"


# -- Codex CLI -----------------------------------------------------------------------------------------------------


def test_codex_exec_prints_the_upstreams_answer_through_the_responses_api_with_budgets_on(
    stack: Stack,
    base_url: str,
    budget_table: str,
    outbound: Outbound,
    metered: list[telemetry.CallFigures],
    tmp_path: Path,
) -> None:
    # Given an upstream that streams its answer as Responses API events, and budgets on
    stack.openai.script(Reply.stream(DELTAS))
    # When `codex exec` runs one turn against the function, configured by its base URL, the wire API and a key
    ran = run_codex(base_url, tmp_path, outbound.url)
    # Then it exited 0, having printed the upstream's text as its answer
    assert ran.returncode == 0, evidence(ran)
    assert ran.stdout.strip() == TEXT, evidence(ran)
    # And the request reached the upstream through the function: one streamed POST /v1/responses with the
    # function's own key (never the CLI's), the token limit set to the ceiling, and Codex's own fields kept
    assert [(r.method, r.path) for r in stack.openai.received] == [("POST", "/v1/responses")]
    sent = stack.openai.received[0]
    assert sent.headers["authorization"] == f"Bearer {API_KEY}" and CALLER_KEY not in json.dumps(sent.headers)
    assert (sent.json["model"], sent.json["stream"], sent.json["max_output_tokens"]) == (CODEX_MODEL, True, 32_768)
    assert sent.json["store"] is False and sent.json["include"] == ["reasoning.encrypted_content"]
    assert "reasoning" in sent.json and sent.json["prompt_cache_key"]
    # And among Codex's tool schemas is a property named `type`, whose schema is an object: the shape the budget
    # estimate must take in its stride
    assert any(isinstance(schema, dict) for schema in properties_named_type(sent.json["tools"]))
    # And the call was metered and settled: its cost is spent, no hold is left
    assert calls_recorded(metered, 1) == ["success"]
    assert metered[0].completion_tokens == len(DELTAS)
    items = budget_items(stack, budget_table)
    assert len(items) == 1 and items[0]["usd"] > 0 and items[0]["holds"] == [], items
    # And Codex tried to reach nothing else
    assert outbound.attempts == []


# -- opencode ------------------------------------------------------------------------------------------------------


def test_opencode_run_prints_the_upstreams_answer_with_its_32000_token_limit_lowered_to_what_the_model_writes(
    stack: Stack,
    base_url: str,
    budget_table: str,
    outbound: Outbound,
    metered: list[telemetry.CallFigures],
    tmp_path: Path,
) -> None:
    # Given an upstream that streams its answer as chat completion chunks (to opencode's title request too), and
    # budgets on
    stack.openai.script(Reply.stream(DELTAS), Reply.stream(DELTAS))
    # When `opencode run` runs one turn against the function, configured as an OpenAI-compatible provider
    ran = run_opencode(base_url, tmp_path, outbound.url)
    # Then it exited 0, having printed the upstream's text as its answer
    assert ran.returncode == 0, evidence(ran)
    assert ran.stdout.strip() == TEXT, evidence(ran)
    # And its calls reached the upstream through the function, streamed, with the function's own key, and the
    # 32,000 output tokens opencode asks for lowered to what gpt-4o-mini can write instead of refused
    received = stack.openai.received
    assert received and {(r.method, r.path) for r in received} == {("POST", "/v1/chat/completions")}
    assert [r.json["max_tokens"] for r in received] == [MINI_MAX_OUTPUT] * len(received)
    assert all(r.json["stream"] is True and r.json["model"] == OPENCODE_MODEL for r in received)
    assert {r.headers["authorization"] for r in received} == {f"Bearer {API_KEY}"}
    assert any(r.json.get("tools") for r in received), "opencode's turn (the call with its tools) never arrived"
    # And every call was metered and settled: its cost is spent, no hold is left
    assert calls_recorded(metered, len(received)) == ["success"] * len(received)
    items = budget_items(stack, budget_table)
    assert len(items) == 1 and items[0]["usd"] > 0 and items[0]["holds"] == [], items
    # And opencode tried to reach nothing else
    assert outbound.attempts == []
