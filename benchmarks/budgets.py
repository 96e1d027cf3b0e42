"""Budgets on a warm call: what the reserve and the settle add, against moto_server's DynamoDB on loopback.

One child process, paired calls in rotated order:
    off      lambda_handler with budgets off (no BUDGET_TABLE)
    on       lambda_handler with budgets on (the budget table in moto_server, no limit hit)
    create   a bare client.chat.completions.create(...), as in the warm benchmark
    steps    the same reserve and settle (BudgetStore.reserve, .settle) alone, for another caller
    writes   two bare UpdateItem calls (ADD two counters): moto's own cost of two round trips
moto_server closes its connection after each answer, so each of its requests also pays a TCP connect.
Both handlers are built in the same process (two services; the handler is pointed at one or the other per call).
DynamoDB requests are counted with botocore's before-send event, split into those made while reserving (before
the upstream call) and while settling (after it); the CPU of both steps is read with time.process_time.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks.common import (
    EVENT_FILE,
    MODEL,
    REPORT_PREFIX,
    Config,
    child_report,
    heading,
    median,
    percentile,
    rotated,
    table,
    verdict,
)
from benchmarks.stack import Stack, run_main, standalone
from benchmarks.warm import MESSAGES, CountingDevNull, handler_call

WARMUP_PAIRS = 30
VARIANTS = {
    "off": "(i) lambda_handler, budgets off",
    "on": "(ii) lambda_handler, budgets on",
    "create": "(iii) client.chat.completions.create",
    "steps": "(iv) the reserve and the settle alone",
    "writes": "(v) two bare UpdateItem calls (moto's cost)",
}


# ----------------------------------------------------------------------------------------------- child side


class Phases:
    """DynamoDB requests and CPU of the budget steps, per phase: reserve (before the upstream) and settle (after)."""

    def __init__(self, store: Any) -> None:
        self.phase = "outside"
        self.requests: dict[str, int] = {"reserve": 0, "settle": 0, "outside": 0}
        self.cpu_ns: dict[str, int] = {"reserve": 0, "settle": 0}
        store.client.meta.events.register("before-send.dynamodb", self._sent)
        for name in ("reserve", "settle"):
            setattr(store, name, self._timed(name, getattr(store, name)))

    def _sent(self, **_: Any) -> None:
        self.requests[self.phase] += 1

    def _timed(self, phase: str, step: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.phase = phase
            started = time.process_time_ns()
            try:
                return step(*args, **kwargs)
            finally:
                self.cpu_ns[phase] += time.process_time_ns() - started
                self.phase = "outside"

        return timed


def child_main() -> None:
    out, stdout = sys.stdout, CountingDevNull()
    sys.stdout = stdout  # type: ignore[assignment]
    pairs = int(os.environ["BENCH_CALLS"])
    table_name = os.environ["BUDGET_TABLE"]

    import openai

    from lambda_chat import handler as handler_module
    from lambda_chat import wiring

    on = wiring.configured_service("handler")  # built at init with BUDGET_TABLE set
    assert on is not None and on.budgets is not None
    os.environ.pop("BUDGET_TABLE")
    wiring.reset()
    off = wiring.service_for("handler")
    off.warm()
    assert off.budgets is None
    serving = {"service": on}
    handler_module.configured_service = lambda entry: serving["service"]  # type: ignore[assignment]
    phases = Phases(on.budgets.store)

    client = openai.OpenAI(api_key="sk-benchmark", base_url=os.environ["OPENAI_BASE_URL"], max_retries=0)
    dynamodb = on.budgets.store.client
    event_text = EVENT_FILE.read_text()

    def handler_with(service: Any) -> Callable[[], bool]:
        call = handler_call(handler_module.lambda_handler, event_text)

        def run() -> bool:
            serving["service"] = service
            return call()

        return run

    def create() -> bool:
        response = client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=0.7, max_tokens=200)  # type: ignore[arg-type]
        return bool(response.choices[0].message.content)

    def writes() -> bool:
        key = {"caller": {"S": "bench-bare"}, "period": {"S": "2026-12"}}
        for _ in range(2):
            dynamodb.update_item(
                TableName=table_name,
                Key=key,
                UpdateExpression="ADD #usd :usd, #tok :tok",
                ExpressionAttributeNames={"#usd": "usd", "#tok": "tokens"},
                ExpressionAttributeValues={":usd": {"N": "0.0000051"}, ":tok": {"N": "13"}},
                ReturnValues="UPDATED_NEW",
            )
        return True

    from decimal import Decimal

    from lambda_chat.budget import Charge, Limits
    from lambda_chat.budget_store import BudgetStore

    bare_store = BudgetStore(table_name, Limits(daily_usd=Decimal(1000)), client=dynamodb)
    charge, cost = Charge(Decimal("0.0001224"), 216), Charge(Decimal("0.0000111"), 23)

    def steps() -> bool:
        return bare_store.settle(bare_store.reserve("bench-steps", charge, seconds=30), cost) is not None

    variants: dict[str, Callable[[], bool]] = {
        "off": handler_with(off),
        "on": handler_with(on),
        "create": create,
        "steps": steps,
        "writes": writes,
    }
    names = list(variants)
    times: dict[str, list[int]] = {name: [] for name in names}
    failures = dict.fromkeys(names, 0)
    per_call: list[tuple[int, int]] = []
    for index in range(WARMUP_PAIRS + pairs):
        for name in rotated(names, index):
            before = dict(phases.requests)
            started = time.perf_counter_ns()
            ok = variants[name]()
            elapsed = time.perf_counter_ns() - started
            if index < WARMUP_PAIRS:
                continue
            times[name].append(elapsed)
            failures[name] += not ok
            if name == "on":
                per_call.append(
                    (
                        phases.requests["reserve"] - before["reserve"],
                        phases.requests["settle"] - before["settle"],
                    )
                )
            if name == "off":
                assert phases.requests == before, "the budgets-off handler touched the budget table"
    report = {
        "times_ns": times,
        "failures": failures,
        "round_trips": per_call,
        "cpu_ns": {phase: value / max(len(per_call), 1) for phase, value in phases.cpu_ns.items()},
    }
    out.write(REPORT_PREFIX + json.dumps(report) + "\n")
    out.flush()


# ---------------------------------------------------------------------------------------------- parent side


def run(stack: Stack, config: Config) -> dict[str, float]:
    assert stack.moto is not None
    pairs = max(config.calls // 5, 100)  # each "on" call is 2 writes to moto, ~20-70 ms each here
    budget_table = f"lambda-chat-budgets-bench-{uuid.uuid4().hex[:6]}"
    stack.moto.create_budget_table(budget_table)
    env = {**stack.child_env(), "BUDGET_TABLE": budget_table}
    print(heading("6. Budgets: the reserve and the settle on a warm call (moto_server DynamoDB)"))
    report = child_report(
        "import benchmarks.budgets as b; b.child_main()", {**env, "BENCH_CALLS": str(pairs)}, "budgets child"
    )
    cold = cold_starts(stack.child_env(), env, max(config.rounds // 2, 5))
    ms = {name: [value / 1e6 for value in values] for name, values in report["times_ns"].items()}
    rows = [
        (label, median(ms[name]), percentile(ms[name], 0.95), percentile(ms[name], 0.99), report["failures"][name])
        for name, label in VARIANTS.items()
    ]
    print(table(("variant", "median ms", "p95 ms", "p99 ms", "failures"), rows, title=f"{pairs} pairs, rotated order"))
    added = [on - off for on, off in zip(ms["on"], ms["off"], strict=True)]
    over_create_on = median([on / c for on, c in zip(ms["on"], ms["create"], strict=True)])
    over_create_off = median([off / c for off, c in zip(ms["off"], ms["create"], strict=True)])
    trips = report["round_trips"]
    before = max(trip[0] for trip in trips)
    after = max(trip[1] for trip in trips)
    cpu_ms = sum(report["cpu_ns"].values()) / 1e6
    print(
        f"\nadded by budgets, per pair (on - off): median {median(added):.2f} ms, p95 {percentile(added, 0.95):.2f} ms;"
        f" the reserve and settle alone: median {median(ms['steps']):.2f} ms;"
        f" two bare UpdateItem calls: median {median(ms['writes']):.2f} ms"
        f"\nDynamoDB requests per budgeted call: {before} while reserving (before the upstream call), {after} while"
        f" settling (after it); over {len(trips)} calls: {sorted(set(map(tuple, trips)))}"
        f"\nCPU of the two steps in this process (botocore included): {cpu_ms:.2f} ms per call"
        f"\nwarm handler over create (per-pair median): budgets off {over_create_off:.2f}x, on {over_create_on:.2f}x"
        f"\ncold start to the first answer, {len(cold['off'])} rounds interleaved: budgets off"
        f" {median(cold['off']):.0f} ms, on {median(cold['on']):.0f} ms (the DynamoDB client built at init, the limits"
        " read and both writes)"
    )
    return {
        "pairs": pairs,
        "added_ms": median(added),
        "writes_ms": median(ms["writes"]),
        "steps_ms": median(ms["steps"]),
        "before": before,
        "after": after,
        "cpu_ms": cpu_ms,
        "off_over_create": over_create_off,
        "on_over_create": over_create_on,
        "failures": sum(report["failures"].values()),
        "cold_off_ms": median(cold["off"]),
        "cold_on_ms": median(cold["on"]),
    }


def cold_starts(env_off: dict[str, str], env_on: dict[str, str], rounds: int) -> dict[str, list[float]]:
    """The handler's cold start (benchmarks.cold_start's probe) with budgets off and on, interleaved."""
    from benchmarks.cold_start import run_child as cold_child

    envs = {"off": env_off, "on": env_on}
    cold_child("handler", env_on)  # warms the file cache and __pycache__, untimed
    times: dict[str, list[float]] = {"off": [], "on": []}
    for index in range(rounds):
        for name in rotated(list(envs), index):
            sample = cold_child("handler", envs[name])[0]
            if sample.ok:
                times[name].append(sample.to_answer_ms)
    return times


def summary_rows(figures: dict[str, float]) -> list[tuple[str, str, str]]:
    return [
        (
            "budgets: DynamoDB round trips per warm call <= 1 before, 1 after",
            f"{figures['before']:.0f} before, {figures['after']:.0f} after",
            verdict(figures["before"] <= 1 and figures["after"] <= 1 and not figures["failures"]),
        ),
        (
            "budgets: added latency, vs the two steps alone (moto)",
            f"{figures['added_ms']:.1f} ms vs {figures['steps_ms']:.1f} ms (2 bare writes {figures['writes_ms']:.1f})",
            "REPORTED",
        ),
        (
            "warm: handler over create, budgets off / on",
            f"{figures['off_over_create']:.2f}x / {figures['on_over_create']:.2f}x",
            "REPORTED",
        ),
        (
            "cold start to first answer, budgets off / on",
            f"{figures['cold_off_ms']:.0f} / {figures['cold_on_ms']:.0f} ms",
            "REPORTED",
        ),
    ]


def main() -> int:
    return standalone(run)


if __name__ == "__main__":
    run_main(main)
