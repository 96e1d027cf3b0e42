"""Gateway overhead: OUR app as an OpenAI-compatible gateway, budgets on and off, against the SDK direct.

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.gateway

The app is lambda_chat.asgi under uvicorn, started as the function runs it (benchmarks.streaming.AppProcess:
src/run.sh), with the environment of every measured process (benchmarks.stack), once without a budget table
("budgets off") and once with one in the stack's moto_server ("budgets on": generous default limits, nothing is
refused; no API Gateway context header is sent, so every call is the app's default caller). Beside them runs the
floor (benchmarks.floor): uvicorn and the SDK with nothing else, what any gateway built of them pays for the hop.
benchmarks.peers adds the LiteLLM proxy and the Portkey gateway to the same run (`make bench-peers`). The client is
the official `openai` SDK, one long-lived client per variant (max_retries=0), pointed at each gateway's /v1 or
straight at the fake upstream ("direct"). Every variant once per round, in an order drawn afresh each round (seeded:
common.shuffled), so that no variant always follows the same other one and pays for what that one does after its
answer (with the order only rotated, budgets off always followed budgets on, beside its deferred settle); warm-up
rounds thrown away:

    a. non-streamed chat.completions.create (answered at once by the upstream): the call's time; "added" is the
       gateway's percentile minus direct's (GATEWAY_ROUNDS, default 500)
    b. streamed, the upstream's first chunk at 100 ms, then 20 chunks 20 ms apart: request to first content chunk,
       and per chunk its arrival minus the upstream's send stamp ("t"); "added" is a percentile of the gateway's
       minus the same percentile of direct's (GATEWAY_STREAM_ROUNDS, default 40)
    c. 8 concurrent clients: 8 threads in this process, each its own SDK client, non-streamed calls back to back for
       GATEWAY_CONCURRENT_SECONDS (default 5) per variant, after a second of warm-up: requests per second and errors
       (direct too, as the ceiling: the 8 clients share this process's GIL)
    d. peak RSS (VmHWM) of each gateway after a. to c., summed over its process tree
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar, cast

from benchmarks.coldprobe import MESSAGES, vm_hwm_kib
from benchmarks.common import MIB, MODEL, Config, heading, interleaved, median, percentile, shuffled, table, verdict
from benchmarks.stack import Stack, run_main, standalone
from benchmarks.streaming import AppProcess, spread_table
from benchmarks.upstream import StreamPlan

if TYPE_CHECKING:
    import openai
    from openai.types.chat import ChatCompletionMessageParam

STREAM = StreamPlan(ttft_ms=100, interval_ms=20, chunks=21)  # the first chunk at 100 ms, then 20 chunks 20 ms apart
CALL_WARMUP = 20  # rounds thrown away, non-streamed
STREAM_WARMUP = 3  # rounds thrown away, streamed
CLIENTS = 8
CONCURRENT_WARMUP_S = 1.0
CLIENT_TIMEOUT_S = 30.0  # a stuck gateway fails a call instead of holding the run
BUDGET_LIMIT_USD = "1000000"  # budgets on: limits nothing here reaches
BUDGET_LIMIT_TOKENS = "1000000000000"
ADDED_CALL_LIMIT_MS = 2.0  # budgets off: added per call, p50
ADDED_TTFT_LIMIT_MS = 2.0  # budgets off: added time to first token, p50

SUMMARY_HEADERS = (
    "",
    "added per call, non-streamed (p50)",
    "added time to first token",
    "added per chunk, p50 / p99",
    f"{CLIENTS} concurrent clients: req/s",
    "peak RSS",
)


def _rounds(name: str, default: float) -> float:
    value = float(os.environ.get(name) or default)
    if value <= 0:
        raise SystemExit(f"{name} must be above 0")
    return value


@dataclass(frozen=True)
class Sizes:
    rounds: int  # a.
    stream_rounds: int  # b.
    concurrent_s: float  # c., per variant

    @classmethod
    def from_env(cls) -> Sizes:
        return cls(
            rounds=int(_rounds("GATEWAY_ROUNDS", 500)),
            stream_rounds=int(_rounds("GATEWAY_STREAM_ROUNDS", 40)),
            concurrent_s=_rounds("GATEWAY_CONCURRENT_SECONDS", 5),
        )


# ------------------------------------------------------------------------------------------------- gateways


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it (by each process's parent in /proc/<pid>/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def tree_peak_rss_mib(pid: int) -> tuple[float, int]:
    """The sum of VmHWM over a process tree (each process's own peak), and how many processes it summed."""
    total, count = 0, 0
    for member in process_tree(pid):
        try:
            total += vm_hwm_kib(member)
            count += 1
        except OSError:
            continue  # gone meanwhile
    return total * 1024 / MIB, count


class Gateway:
    """An OpenAI-compatible gateway on loopback: where the SDK points, what it sends, which process it is.

    A context manager: entering starts it and waits until it is ready (RuntimeError with the reason if it does not
    get there), leaving stops it.
    """

    label = ""  # its row in the summary table
    api_key = "sk-benchmark"  # what the SDK sends as its key
    headers: Mapping[str, str] = {}  # extra default headers on every request

    @property
    def base_url(self) -> str:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    @property
    def log_path(self) -> Path | None:
        return None

    def peak_rss(self) -> tuple[float, int]:
        return tree_peak_rss_mib(self.pid)

    def __enter__(self) -> Gateway:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class OurApp(Gateway):
    """OUR app as the function runs it (src/run.sh), budgets on or off; or (`command`) the floor beside it."""

    def __init__(self, label: str, env: dict[str, str], log_name: str, command: list[str] | None = None) -> None:
        self.label = label
        self._app = AppProcess(env, log_name=log_name, command=command)

    @property
    def base_url(self) -> str:
        return self._app.base_url

    @property
    def pid(self) -> int:
        return self._app.pid

    @property
    def log_path(self) -> Path:
        return self._app.log_path

    def start(self) -> None:
        self._app.start()
        self._app.wait_ready()

    def stop(self) -> None:
        self._app.stop()


BUDGETS_ON = "this project, budgets on (DynamoDB on moto)"
BUDGETS_OFF = "this project, budgets off"
FLOOR = "floor: uvicorn + the openai SDK, nothing else (benchmarks.floor)"
FLOOR_MODULE = "benchmarks.floor"


def our_gateways(stack: Stack) -> dict[str, Gateway]:
    """OUR app twice: budgets off, and budgets on with a fresh budget table in the stack's moto_server; and the floor,
    what serving HTTP and calling through the SDK cost without OUR code (benchmarks.floor)."""
    assert stack.moto is not None
    budget_table = f"lambda-chat-budgets-gateway-{uuid.uuid4().hex[:6]}"
    stack.moto.create_budget_table(budget_table)
    price = {"input": 0.15, "cached_input": 0.075, "output": 0.6}  # the stream's model, priced as gpt-4o-mini
    budgets = {
        "BUDGET_TABLE": budget_table,
        "DEFAULT_DAILY_BUDGET_USD": BUDGET_LIMIT_USD,
        "DEFAULT_MONTHLY_BUDGET_USD": BUDGET_LIMIT_USD,
        "DEFAULT_DAILY_BUDGET_TOKENS": BUDGET_LIMIT_TOKENS,
        "DEFAULT_MONTHLY_BUDGET_TOKENS": BUDGET_LIMIT_TOKENS,
        "MODEL_PRICES_JSON": json.dumps({STREAM.model: price}),
    }
    tag = f"{os.getpid()}"
    return {
        "on": OurApp(BUDGETS_ON, {**stack.child_env(), **budgets}, f"gateway-budgets-on-{tag}.log"),
        "off": OurApp(BUDGETS_OFF, stack.child_env(), f"gateway-budgets-off-{tag}.log"),
        "floor": OurApp(FLOOR, stack.child_env(), f"gateway-floor-{tag}.log", [sys.executable, "-m", FLOOR_MODULE]),
    }


# ------------------------------------------------------------------------------------------------- measures


def client_for(base_url: str, api_key: str = "sk-benchmark", headers: Mapping[str, str] | None = None) -> openai.OpenAI:
    import openai

    return openai.OpenAI(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        timeout=CLIENT_TIMEOUT_S,
        default_headers=dict(headers or {}),
    )


@dataclass
class Variant:
    """What is measured: direct, or a gateway, with the SDK client that calls it."""

    key: str
    label: str
    base_url: str
    api_key: str = "sk-benchmark"
    headers: Mapping[str, str] = field(default_factory=dict)
    gateway: Gateway | None = None
    errors: dict[str, int] = field(default_factory=dict)  # per measure
    first_error: str = ""

    def client(self) -> openai.OpenAI:
        return client_for(self.base_url, self.api_key, self.headers)

    def failed(self, measure: str, error: BaseException) -> None:
        self.errors[measure] = self.errors.get(measure, 0) + 1
        self.first_error = self.first_error or f"{measure}: {type(error).__name__}: {str(error)[:200]}"


def call_once(client: openai.OpenAI) -> float:
    """One non-streamed call; its time in ms (ValueError if the answer has no content)."""
    messages = cast("list[ChatCompletionMessageParam]", MESSAGES)
    started = time.perf_counter_ns()
    response = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=200)
    elapsed = (time.perf_counter_ns() - started) / 1e6
    if not response.choices or not response.choices[0].message.content:
        raise ValueError("an answer without content")
    return elapsed


@dataclass(frozen=True)
class Streamed:
    """One streamed call: request to first content chunk, and per stamped chunk its arrival minus its send stamp."""

    first_ms: float
    latencies_ms: list[float]
    chunks: int


def stream_once(client: openai.OpenAI, plan: StreamPlan = STREAM) -> Streamed:
    """One streamed call read to its end (ValueError if chunks are missing)."""
    messages = cast("list[ChatCompletionMessageParam]", MESSAGES)
    latencies: list[float] = []
    first: int | None = None
    chunks = 0
    started = time.monotonic_ns()  # CLOCK_MONOTONIC, as the upstream's stamps
    for chunk in client.chat.completions.create(model=plan.model, messages=messages, stream=True):
        arrived = time.monotonic_ns()
        if not chunk.choices or not chunk.choices[0].delta.content:
            continue
        chunks += 1
        first = first or arrived
        sent = (chunk.model_extra or {}).get("t")
        if isinstance(sent, int):
            latencies.append((arrived - sent) / 1e6)
    if first is None or chunks != plan.chunks:
        raise ValueError(f"{chunks} content chunks of {plan.chunks}")
    return Streamed((first - started) / 1e6, latencies, chunks)


T = TypeVar("T")


def guarded(variant: Variant, measure: str, run: Callable[[], T]) -> Callable[[], T | None]:
    """The measure, or None (counted against the variant) when it raises."""

    def attempt() -> T | None:
        try:
            return run()
        except Exception as error:  # a gateway's failure is a figure, not the end of the run
            variant.failed(measure, error)
            return None

    return attempt


def non_streamed(
    variants: Sequence[Variant], clients: Mapping[str, openai.OpenAI], rounds: int
) -> dict[str, list[float]]:
    measures = {v.key: guarded(v, "a", partial(call_once, clients[v.key])) for v in variants}
    results = interleaved(measures, rounds, CALL_WARMUP, order=shuffled)
    return {key: [value for value in values if value is not None] for key, values in results.items()}


def streamed(
    variants: Sequence[Variant], clients: Mapping[str, openai.OpenAI], rounds: int
) -> dict[str, list[Streamed]]:
    measures = {v.key: guarded(v, "b", partial(stream_once, clients[v.key])) for v in variants}
    results = interleaved(measures, rounds, STREAM_WARMUP, order=shuffled)
    return {key: [value for value in values if value is not None] for key, values in results.items()}


@dataclass(frozen=True)
class Load:
    requests: int
    errors: int
    seconds: float
    first_error: str

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else float("nan")


def concurrent(variant: Variant, seconds: float, clients: int = CLIENTS) -> Load:
    """`clients` threads, each its own SDK client, calling back to back: a warm-up, then `seconds` counted."""
    sdk = [variant.client() for _ in range(clients)]
    counts = [[0, 0] for _ in range(clients)]  # per thread: done, failed (counted phase only)
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)
    phase = {"counting": False, "stop": False}

    def worker(index: int) -> None:
        client = sdk[index]
        barrier.wait()
        while not phase["stop"]:
            counting = phase["counting"]
            try:
                call_once(client)
                if counting:
                    counts[index][0] += 1
            except Exception as error:  # counted, and the first one reported
                if counting:
                    counts[index][1] += 1
                    errors.append(f"{type(error).__name__}: {str(error)[:200]}")

    threads = [threading.Thread(target=worker, args=(index,), daemon=True) for index in range(clients)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait()
        time.sleep(CONCURRENT_WARMUP_S)
        phase["counting"] = True
        started = time.monotonic()
        time.sleep(seconds)
        phase["stop"] = True
        for thread in threads:
            thread.join(CLIENT_TIMEOUT_S + 5)
        elapsed = time.monotonic() - started  # the calls under way at the deadline are counted, and their time
    finally:
        phase["stop"] = True
        for client in sdk:
            client.close()
    return Load(sum(c[0] for c in counts), sum(c[1] for c in counts), elapsed, errors[0] if errors else "")


# --------------------------------------------------------------------------------------------------- tables


def _added(value: float, digits: int | None = None) -> str:
    if value != value:  # NaN
        return "n/a"
    if digits is None:
        digits = 2 if abs(value) < 10 else 1
    return f"{value:+.{digits}f}"


def _plain(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


@dataclass
class Figures:
    """One variant's figures, raw (ms, req/s, MiB)."""

    call_p50: float = float("nan")
    call_p90: float = float("nan")
    call_p99: float = float("nan")
    ttft_p50: float = float("nan")
    chunk_p50: float = float("nan")
    chunk_p99: float = float("nan")
    rps: float = float("nan")
    load_errors: int = 0
    rss_mib: float = float("nan")
    rss_processes: int = 0
    stamped: bool = True


def figures_of(calls: Sequence[float], streams: Sequence[Streamed], load: Load | None) -> Figures:
    latencies = [ms for run in streams for ms in run.latencies_ms]
    return Figures(
        call_p50=median(calls),
        call_p90=percentile(calls, 0.9),
        call_p99=percentile(calls, 0.99),
        ttft_p50=median([run.first_ms for run in streams]),
        chunk_p50=median(latencies),
        chunk_p99=percentile(latencies, 0.99),
        rps=load.per_s if load else float("nan"),
        load_errors=load.errors if load else 0,
        stamped=bool(latencies) or not streams,
    )


def summary_table(
    figures: Mapping[str, Figures], labels: Mapping[str, str], unavailable: Mapping[str, str], title: str
) -> str:
    direct = figures["direct"]
    rows: list[tuple[str, ...]] = []
    for key, f in figures.items():
        if key == "direct":
            continue
        chunk = (
            f"{_plain(f.chunk_p50 - direct.chunk_p50)} / {_plain(f.chunk_p99 - direct.chunk_p99)}"
            if f.stamped
            else "n/a (send stamps dropped)"
        )
        rps = "n/a" if f.rps != f.rps else f"{f.rps:.0f}" + (f" ({f.load_errors} errors)" if f.load_errors else "")
        rows.append(
            (
                labels[key],
                _added(f.call_p50 - direct.call_p50),
                _added(f.ttft_p50 - direct.ttft_p50),
                chunk,
                rps,
                "n/a" if f.rss_mib != f.rss_mib else f"{f.rss_mib:.0f} MiB",
            )
        )
    for label, reason in unavailable.items():
        rows.append((label, f"not measured: {reason}", "", "", "", ""))
    lines = [table(SUMMARY_HEADERS, rows, title)]
    lines.append(
        f"direct (the SDK straight to the fake upstream), raw: per call p50 {direct.call_p50:.2f} ms"
        f" (p90 {direct.call_p90:.2f}, p99 {direct.call_p99:.2f}); time to first token p50 {direct.ttft_p50:.1f} ms;"
        f" per chunk p50 / p99 {direct.chunk_p50:.2f} / {direct.chunk_p99:.2f} ms;"
        f" {CLIENTS} concurrent clients {direct.rps:.0f} req/s"
        + (f" ({direct.load_errors} errors)" if direct.load_errors else "")
    )
    return "\n".join(lines)


def added_table(title: str, values: Mapping[str, Sequence[float]], labels: Mapping[str, str]) -> str:
    """Each gateway's p50 / p90 / p99 minus direct's."""

    def at(series: Sequence[float]) -> list[float]:
        return [median(series), percentile(series, 0.9), percentile(series, 0.99)]

    direct = at(values["direct"])
    rows = [
        (labels[key], *(g - d for g, d in zip(at(series), direct, strict=True)), len(series))
        for key, series in values.items()
        if key != "direct"
    ]
    return table(("added (gateway - direct, per column)", "p50 ms", "p90 ms", "p99 ms", "n"), rows, title)


# ---------------------------------------------------------------------------------------------------- section


def measure(variants: Sequence[Variant], sizes: Sizes) -> dict[str, Figures]:
    labels = {v.key: v.label for v in variants}
    clients = {v.key: v.client() for v in variants}
    try:
        calls = non_streamed(variants, clients, sizes.rounds)
        title = (
            f"a. Non-streamed chat.completions.create, answered at once upstream ({sizes.rounds} rounds after"
            f" {CALL_WARMUP} thrown away, order shuffled)"
        )
        print(spread_table(title, "ms", {labels[k]: calls[k] for k in labels}))
        print(added_table("", calls, labels), flush=True)

        streams = streamed(variants, clients, sizes.stream_rounds)
        first = {k: [run.first_ms for run in runs] for k, runs in streams.items()}
        title = (
            f"\nb. Streamed, upstream first chunk at {STREAM.ttft_ms:g} ms then {STREAM.chunks - 1} chunks"
            f" {STREAM.interval_ms:g} ms apart ({sizes.stream_rounds} rounds after {STREAM_WARMUP} thrown away):"
            " request to first content chunk"
        )
        print(spread_table(title, "ms", {labels[k]: first[k] for k in labels}))
        print(added_table("", first, labels))
        per_chunk = {k: [ms for run in runs for ms in run.latencies_ms] for k, runs in streams.items()}
        title = "\nper chunk: arrival minus the upstream's send stamp (every content chunk of every round)"
        print(spread_table(title, "ms", {labels[k]: per_chunk[k] for k in labels}))
        print(added_table("", {k: v for k, v in per_chunk.items() if v}, labels), flush=True)
    finally:
        for client in clients.values():
            client.close()

    print(
        f"\nc. {CLIENTS} concurrent clients (threads in this process, each its own SDK client), non-streamed calls back"
        f" to back, {sizes.concurrent_s:g} s per variant after {CONCURRENT_WARMUP_S:g} s of warm-up",
        flush=True,
    )
    loads: dict[str, Load] = {}
    rows = []
    for v in variants:
        loads[v.key] = load = concurrent(v, sizes.concurrent_s)
        rows.append((v.label, load.per_s, load.requests, load.errors, load.first_error or "-"))
    print(table(("variant", "req/s", "requests", "errors", "first error"), rows), flush=True)

    figures = {v.key: figures_of(calls[v.key], streams[v.key], loads[v.key]) for v in variants}
    rss_rows = []
    for v in variants:
        if v.gateway is None:
            continue
        try:
            figures[v.key].rss_mib, figures[v.key].rss_processes = v.gateway.peak_rss()
        except OSError as error:
            print(f"{v.label}: no peak RSS ({error})")
            continue
        rss_rows.append((v.label, figures[v.key].rss_mib, figures[v.key].rss_processes, str(v.gateway.pid)))
    title = "\nd. Peak RSS after a. to c. (VmHWM, summed over the gateway's process tree)"
    print(table(("gateway", "peak RSS MiB", "processes", "pid"), rss_rows, title))
    for v in variants:
        if v.errors:
            print(f"{v.label}: failed calls {v.errors} (not in the figures); the first: {v.first_error}")
    return figures


def preflight(variant: Variant) -> None:
    """One non-streamed and one streamed call; RuntimeError naming what went wrong."""
    client = variant.client()
    try:
        call_once(client)
        stream_once(client)
    except Exception as error:
        raise RuntimeError(f"its first calls failed: {type(error).__name__}: {str(error)[:300]}") from error
    finally:
        client.close()


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:160] if lines else type(error).__name__


def run(
    stack: Stack,
    config: Config,
    peers: Mapping[str, Gateway] | None = None,
    unavailable: Mapping[str, str] | None = None,
) -> dict[str, float | str]:
    """The section: OUR app (budgets on and off) and any peers, against direct. Figures for benchmarks.run's summary.

    `peers` are started here (one that does not start gets its reason in its row); `unavailable` are peers that
    could not even be installed, with the reason.
    """
    print(heading("7. Gateway: what OUR app adds between the SDK and the upstream, budgets on and off"))
    sizes = Sizes.from_env()
    missing = dict(unavailable or {})
    candidates: dict[str, Gateway] = {**our_gateways(stack), **(peers or {})}
    variants = [Variant("direct", "direct: the SDK straight to the fake upstream", stack.base_url)]
    with ExitStack() as running:
        for key, gateway in candidates.items():
            started = time.monotonic()
            try:
                running.enter_context(gateway)
                variant = Variant(key, gateway.label, gateway.base_url, gateway.api_key, gateway.headers, gateway)
                preflight(variant)
            except (RuntimeError, OSError) as error:
                gateway.stop()
                where = f" (its log: {gateway.log_path})" if gateway.log_path else ""
                print(f"{gateway.label}: not measured, {error}{where}")
                missing[gateway.label] = first_line(error)
                continue
            where = f", its log {gateway.log_path}" if gateway.log_path else ""
            print(f"{gateway.label}: {gateway.base_url} (ready in {time.monotonic() - started:.1f} s{where})")
            variants.append(variant)
        print(f"fake upstream: {stack.base_url}\n", flush=True)
        figures = measure(variants, sizes)
    labels = {v.key: v.label for v in variants}
    title = (
        f"\nSummary: added by each gateway, medians unless said (ms; {sizes.rounds} non-streamed and"
        f" {sizes.stream_rounds} streamed rounds, interleaved)"
    )
    print(summary_table(figures, labels, missing, title))
    return flat(figures, missing)


def flat(figures: Mapping[str, Figures], unavailable: Mapping[str, str]) -> dict[str, float | str]:
    direct = figures["direct"]
    out: dict[str, float | str] = {
        "direct_call_ms": direct.call_p50,
        "direct_ttft_ms": direct.ttft_p50,
        "direct_rps": direct.rps,
    }
    for key, f in figures.items():
        if key == "direct":
            continue
        out.update(
            {
                f"{key}_added_call_ms": f.call_p50 - direct.call_p50,
                f"{key}_added_ttft_ms": f.ttft_p50 - direct.ttft_p50,
                f"{key}_added_chunk_p50_ms": f.chunk_p50 - direct.chunk_p50,
                f"{key}_added_chunk_p99_ms": f.chunk_p99 - direct.chunk_p99,
                f"{key}_rps": f.rps,
                f"{key}_load_errors": f.load_errors,
                f"{key}_rss_mib": f.rss_mib,
            }
        )
    for label, reason in unavailable.items():
        out[f"unavailable: {label}"] = reason
    return out


def summary_rows(figures: Mapping[str, float | str]) -> list[tuple[str, str, str]]:
    """The section's lines in benchmarks.run's summary: targets for budgets off, budgets on reported."""
    targets = (
        f"gateway, budgets off: added per call p50 <= {ADDED_CALL_LIMIT_MS:g} ms",
        f"gateway, budgets off: added TTFT p50 <= {ADDED_TTFT_LIMIT_MS:g} ms",
    )
    if "error" in figures:
        return [(target, f"failed: {figures['error']}", "FAILED") for target in targets]
    if "off_added_call_ms" not in figures:
        return [(target, "not measured (see section 7)", "FAILED") for target in targets]
    f = {name: float(value) for name, value in figures.items() if not isinstance(value, str)}
    rows = [
        (
            targets[0],
            f"{f['off_added_call_ms']:+.2f} ms (direct {f['direct_call_ms']:.2f} ms)",
            verdict(f["off_added_call_ms"] <= ADDED_CALL_LIMIT_MS),
        ),
        (
            targets[1],
            f"{f['off_added_ttft_ms']:+.2f} ms (direct {f['direct_ttft_ms']:.1f} ms)",
            verdict(f["off_added_ttft_ms"] <= ADDED_TTFT_LIMIT_MS),
        ),
        (
            "gateway, budgets off: added per chunk p50 / p99; 8 clients; peak RSS",
            f"{f['off_added_chunk_p50_ms']:.2f} / {f['off_added_chunk_p99_ms']:.2f} ms; {f['off_rps']:.0f} req/s"
            f" (direct {f['direct_rps']:.0f}); {f['off_rss_mib']:.0f} MiB",
            "REPORTED",
        ),
    ]
    if "floor_added_call_ms" in f:
        rows.append(
            (
                "gateway floor (uvicorn + the SDK alone): added per call / TTFT p50; budgets off above it",
                f"{f['floor_added_call_ms']:+.2f} / {f['floor_added_ttft_ms']:+.2f} ms;"
                f" {f['off_added_call_ms'] - f['floor_added_call_ms']:+.2f} /"
                f" {f['off_added_ttft_ms'] - f['floor_added_ttft_ms']:+.2f} ms",
                "REPORTED",
            )
        )
    if "on_added_call_ms" in f:
        rows.append(
            (
                "gateway, budgets on (moto): added per call / TTFT p50; per chunk p50 / p99; 8 clients; peak RSS",
                f"{f['on_added_call_ms']:+.1f} / {f['on_added_ttft_ms']:+.1f} ms;"
                f" {f['on_added_chunk_p50_ms']:.2f} / {f['on_added_chunk_p99_ms']:.2f} ms;"
                f" {f['on_rps']:.0f} req/s ({f['on_load_errors']:.0f} errors); {f['on_rss_mib']:.0f} MiB",
                "REPORTED",
            )
        )
    return rows


def main() -> int:
    return standalone(run)


if __name__ == "__main__":
    run_main(main)
