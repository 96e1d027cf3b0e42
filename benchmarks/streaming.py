"""Streaming: OUR streaming app against the official SDK streaming straight from the same fake upstream.

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.streaming

The app is lambda_chat.asgi under uvicorn, started the way the function starts it (src/run.sh, which runs
`python3 -m lambda_chat.asgi`: its main() calls uvicorn.run, PORT from the environment), with the environment of
every measured process (benchmarks.stack: the key in moto_server's Secrets Manager, the fake upstream as
OPENAI_BASE_URL). Every figure is seen from the client, the `openai` SDK's
`client.chat.completions.create(stream=True)` (in b. `client.responses.create(stream=True)`), pointed at the
app's /v1 ("app") or straight at the fake upstream ("direct"), one long-lived client each. Runs alternate
direct and app, the order rotated each round, after warm-up rounds that are thrown away. The fake upstream
(benchmarks.upstream) takes the stream's shape from the model name and stamps each content chunk (or text
delta) with its send time.

    a. time to first token, upstream TTFT 100 ms: from the request to the first content chunk
    b. the Responses API (POST /v1/responses), upstream TTFT 100 ms (nothing before it, not even
       response.created): from the request to the first event, and to the first response.output_text.delta
    c. latency per chunk, one chunk every 20 ms: arrival minus the upstream's send stamp (CLOCK_MONOTONIC,
       system-wide on Linux); "added" is the app's percentile minus direct's, percentile by percentile
    d. throughput of a 5,000-chunk stream without pauses: content chunks per second, request to last content chunk;
       http.client readers that count events without parsing them show what each source can deliver, and
       the CPU time per chunk of the client and of the app process shows who pays for what
    e. peak RSS of the warm app process (VmHWM) after a. to d.
    f. cold start: a fresh app process, from spawn through readiness (GET /healthz every 10 ms, as the Lambda
       Web Adapter polls) to the first content chunk of one streamed request, against the handler's cold start
       by benchmarks.cold_start's own child (process start, import, one invoke, answer), rounds interleaved
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from benchmarks import cold_start, warm
from benchmarks.coldprobe import INIT_PHASE, MESSAGES, vm_hwm_kib
from benchmarks.common import (
    MIB,
    ROOT,
    Config,
    heading,
    interleaved,
    median,
    paired_median_ratio,
    percentile,
    ratio,
    table,
    verdict,
)
from benchmarks.stack import Stack, run_main, standalone, terminate
from benchmarks.upstream import StreamPlan
from local.moto import LOG_DIR, free_port, log_tail

if TYPE_CHECKING:
    import openai
    from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam
    from openai.types.responses import ResponseInputParam, ResponseStreamEvent

RUN_SH = ROOT / "src" / "run.sh"  # what the Lambda Web Adapter runs
READINESS_POLL_S = 0.010  # the adapter's readiness check retries every 10 ms
START_TIMEOUT_S = 60
VARIANTS = {
    "direct": "SDK straight to the fake upstream",
    "app": "SDK through OUR app's /v1",
    "raw direct": "http.client straight to the fake upstream (diagnostic)",
    "raw app": "http.client through OUR app (diagnostic)",
}

TTFT = StreamPlan(ttft_ms=100, chunks=3)
PACED = StreamPlan(interval_ms=20, chunks=100)
BULK = StreamPlan(chunks=5000)
COLD = StreamPlan(chunks=3)
TTFT_PAIRS, TTFT_WARMUP = 30, 3
PACED_PAIRS, PACED_WARMUP = 5, 1
BULK_PAIRS, BULK_WARMUP = 7, 1

TTFT_LIMIT = 1.02  # app / direct, chat completions' first content chunk and the Responses API's first event
ADDED_MEDIAN_LIMIT_MS = 1.0
ADDED_P99_LIMIT_MS = 5.0
THROUGHPUT_FLOOR = 0.9  # app / direct
COLD_LIMIT = 1.10  # app / handler


class AppProcess:
    """The streaming app as the function runs it: src/run.sh (`python3 -m lambda_chat.asgi`) on a free port.

    Its output (the JSON log line of every call) goes to a log file under .local/logs, a real write per line.
    """

    def __init__(self, env: dict[str, str], log_name: str | None = None, command: list[str] | None = None) -> None:
        self._command = command or ["bash", str(RUN_SH)]  # another server answering /healthz (benchmarks.floor)
        self.port = free_port()
        path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])  # run.sh's python3
        self._env = {**env, "PORT": str(self.port), "PATH": path}
        self.log_path = LOG_DIR / (log_name or f"streaming-app-{self.port}.log")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self._command, env=self._env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_ready(self) -> None:
        """Poll GET /healthz as the adapter does, until it answers below 500 (the adapter's 'healthy')."""
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._healthy():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the streaming app on port {self.port} did not get ready; the end of its log"
                    f" ({self.log_path}):\n{log_tail(self.log_path)}"
                )
            time.sleep(READINESS_POLL_S)

    def _healthy(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
        try:
            connection.request("GET", "/healthz")
            return connection.getresponse().status < 500
        except OSError:
            return False
        finally:
            connection.close()

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def peak_rss_mib(self) -> float:
        return vm_hwm_kib(self.pid) * 1024 / MIB

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            terminate(process)

    def __enter__(self) -> AppProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def process_cpu_s(pid: int) -> tuple[float, float]:
    """User and system CPU time a process has used so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()  # after "pid (name)": state is field 3, utime 14
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


@dataclass(frozen=True)
class CpuUse:
    """CPU time of the whole machine (/proc/stat) and of this process, at a moment or over a span."""

    wall_s: float
    busy_s: float  # all CPUs together, idle and I/O wait excluded
    this_process_s: float

    @classmethod
    def now(cls) -> CpuUse:
        with open("/proc/stat", encoding="ascii") as stat:
            ticks = [int(value) for value in stat.readline().split()[1:]]  # the "cpu" line: every CPU together
        idle = ticks[3] + ticks[4]
        return cls(time.monotonic(), (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK"), time.process_time())

    def since(self, start: CpuUse) -> CpuUse:
        return CpuUse(
            self.wall_s - start.wall_s, self.busy_s - start.busy_s, self.this_process_s - start.this_process_s
        )

    @property
    def busy_cores(self) -> float:
        return self.busy_s / self.wall_s


def sdk_client(base_url: str) -> openai.OpenAI:
    import openai

    return openai.OpenAI(api_key="sk-benchmark", base_url=base_url, max_retries=0)  # the app ignores the key


@dataclass(frozen=True)
class StreamRun:
    """One streamed call as the client saw it (CLOCK_MONOTONIC ns)."""

    started_ns: int
    opened_ns: int  # the first event arrived, content or not (a Responses API stream opens with others)
    first_ns: int  # the first content chunk arrived
    last_ns: int  # the last content chunk arrived
    chunks: int  # content chunks
    latencies_ms: list[float]  # per content chunk: arrival minus the upstream's send stamp (when read)
    complete: bool  # every chunk of the plan arrived
    client_cpu_ms: float  # this process's CPU time (user + system) over the call

    @classmethod
    def of(
        cls,
        plan: StreamPlan,
        started_ns: int,
        cpu_started: float,
        arrivals: list[int],
        sent: list[int],
        opened_ns: int | None = None,
    ) -> StreamRun:
        last = time.monotonic_ns()
        first = arrivals[0] if arrivals else last
        return cls(
            started_ns=started_ns,
            opened_ns=first if opened_ns is None else opened_ns,
            first_ns=first,
            last_ns=arrivals[-1] if arrivals else last,
            chunks=len(arrivals),
            latencies_ms=[(arrived - at) / 1e6 for at, arrived in zip(sent, arrivals, strict=False)],
            complete=len(arrivals) == plan.chunks,
            client_cpu_ms=(time.process_time() - cpu_started) * 1000,
        )

    @property
    def opened_ms(self) -> float:
        return (self.opened_ns - self.started_ns) / 1e6

    @property
    def first_ms(self) -> float:
        return (self.first_ns - self.started_ns) / 1e6

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / (self.last_ns - self.started_ns) * 1e9


def timed_stream(
    plan: StreamPlan, open_stream: Callable[[], Iterable[Any]], stamp: Callable[[Any], int | None]
) -> StreamRun:
    """One SDK stream opened and read to its end, each event timed as the SDK hands it over.

    `stamp` gives a content event's send stamp from the upstream, None for any other event.
    """
    arrivals: list[int] = []
    sent: list[int] = []  # the upstream's stamps
    opened: int | None = None
    started, cpu_started = time.monotonic_ns(), time.process_time()
    for event in open_stream():
        arrived = time.monotonic_ns()
        opened = opened or arrived
        at = stamp(event)
        if at is not None:
            arrivals.append(arrived)
            sent.append(at)
    return StreamRun.of(plan, started, cpu_started, arrivals, sent, opened)


def _chunk_stamp(chunk: ChatCompletionChunk) -> int | None:
    content = chunk.choices[0].delta.content if chunk.choices else None
    return (chunk.model_extra or {})["t"] if content else None


def _delta_stamp(event: ResponseStreamEvent) -> int | None:
    return (event.model_extra or {})["t"] if event.type == "response.output_text.delta" else None


def read_stream(client: openai.OpenAI, plan: StreamPlan) -> StreamRun:
    """One `chat.completions.create(stream=True)`: its content chunks are the chunks with content."""
    messages = cast("list[ChatCompletionMessageParam]", MESSAGES)
    create = partial(client.chat.completions.create, model=plan.model, messages=messages, stream=True)
    return timed_stream(plan, create, _chunk_stamp)


def read_response_stream(client: openai.OpenAI, plan: StreamPlan) -> StreamRun:
    """One `responses.create(stream=True)`: its content chunks are the response.output_text.delta events."""
    create = partial(client.responses.create, model=plan.model, input=cast("ResponseInputParam", MESSAGES), stream=True)
    return timed_stream(plan, create, _delta_stamp)


def read_raw(base_url: str, plan: StreamPlan) -> StreamRun:
    """The same request by http.client, content events counted line by line, unparsed: what a source can deliver."""
    url = urlsplit(base_url)
    body = json.dumps({"model": plan.model, "messages": MESSAGES, "stream": True}).encode()
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=60)
    arrivals: list[int] = []
    started, cpu_started = time.monotonic_ns(), time.process_time()
    try:
        connection.request("POST", f"{url.path}/chat/completions", body, {"Content-Type": "application/json"})
        for line in connection.getresponse():
            if line.startswith(b"data: {") and b'"content"' in line:
                arrivals.append(time.monotonic_ns())
    finally:
        connection.close()
    return StreamRun.of(plan, started, cpu_started, arrivals, [])


@dataclass(frozen=True)
class Ends:
    """What the warm figures compare: the fake upstream ("direct") and OUR app, with one SDK client for each."""

    urls: dict[str, str]
    clients: dict[str, openai.OpenAI]
    app: AppProcess
    upstream_pid: int


Reader = Callable[["openai.OpenAI", StreamPlan], StreamRun]


def paired_streams(
    ends: Ends, plan: StreamPlan, pairs: int, warmup: int, reader: Reader = read_stream
) -> dict[str, list[StreamRun]]:
    measures = {name: partial(reader, client, plan) for name, client in ends.clients.items()}
    return interleaved(measures, pairs, warmup)


# --------------------------------------------------------------------------------------------------- tables

SPREAD_HEADERS = ("median", "min", "p90", "p99", "max", "n")


def spread(values: Sequence[float]) -> tuple[float, float, float, float, float, int]:
    return (
        median(values),
        min(values, default=float("nan")),
        percentile(values, 0.9),
        percentile(values, 0.99),
        max(values, default=float("nan")),
        len(values),
    )


def spread_table(title: str, unit: str, rows: Mapping[str, Sequence[float]]) -> str:
    headers = ("", *(f"{name} {unit}" if name != "n" else name for name in SPREAD_HEADERS))
    return table(headers, [(label, *spread(values)) for label, values in rows.items()], title)


def require_complete(runs: Mapping[str, list[StreamRun]], plan: StreamPlan) -> None:
    """A stream cut short (without the SDK raising) is a failure, not a figure."""
    short = {name: sum(not run.complete for run in variant) for name, variant in runs.items()}
    if any(short.values()):
        raise RuntimeError(f"streams without all {plan.chunks} content chunks: {short}")


def per_run(runs: Mapping[str, list[StreamRun]], figure: Callable[[StreamRun], float]) -> dict[str, list[float]]:
    return {name: [figure(run) for run in variant] for name, variant in runs.items()}


def compared(label: str, values: Mapping[str, list[float]], top: str, bottom: str, unit: str) -> float:
    """Print top / bottom (ratio of medians, difference, median per round); return the ratio of medians."""
    over = ratio(median(values[top]), median(values[bottom]))
    difference = median(values[top]) - median(values[bottom])
    per_round = paired_median_ratio(values[top], values[bottom])
    print(f"{label}: {over:.3f}x of medians ({difference:+,.2f} {unit}), {per_round:.3f}x median per round")
    return over


# -------------------------------------------------------------------------------------------------- figures


def first_arrivals(
    ends: Ends, reader: Reader, title: str, figures: Mapping[str, Callable[[StreamRun], float]]
) -> dict[str, dict[str, float]]:
    """Interleaved rounds of the TTFT plan; per figure (a time from the request), its table rows and app / direct."""
    runs = paired_streams(ends, TTFT, TTFT_PAIRS, TTFT_WARMUP, reader)
    require_complete(runs, TTFT)
    values = {figure: per_run(runs, measure) for figure, measure in figures.items()}
    title = f"{title}, upstream TTFT {TTFT.ttft_ms:g} ms ({TTFT_PAIRS} rounds after {TTFT_WARMUP} thrown away)"
    rows = {f"{VARIANTS[name]}: {figure}": times[name] for figure, times in values.items() for name in runs}
    print(spread_table(title, "ms", rows))
    return {
        figure: {
            "ratio": compared(f"app / direct, {figure}", times, "app", "direct", "ms"),
            "app_ms": median(times["app"]),
            "direct_ms": median(times["direct"]),
        }
        for figure, times in values.items()
    }


def time_to_first_token(ends: Ends) -> dict[str, float]:
    title = "a. Time to first token: request to first content chunk"
    first = first_arrivals(ends, read_stream, title, {"first content chunk": lambda run: run.first_ms})
    return {f"ttft_{name}": value for name, value in first["first content chunk"].items()}


def responses_first_event(ends: Ends) -> dict[str, float]:
    """Issue 12: how soon a Responses API stream through the app opens, against the SDK straight from the upstream."""
    title = "b. Responses API (POST /v1/responses, stream=True): request to first event and to first text delta"
    measures = {"first event": lambda run: run.opened_ms, "first output_text.delta": lambda run: run.first_ms}
    first = first_arrivals(ends, read_response_stream, title, measures)
    return {
        f"responses_{kind}_{name}": value
        for kind, figure in (("event", "first event"), ("delta", "first output_text.delta"))
        for name, value in first[figure].items()
    }


def chunk_latency(ends: Ends) -> dict[str, float]:
    runs = paired_streams(ends, PACED, PACED_PAIRS, PACED_WARMUP)
    require_complete(runs, PACED)
    direct, app = (spread([ms for run in runs[name] for ms in run.latencies_ms]) for name in ("direct", "app"))
    added = tuple(a - d for a, d in zip(app[:-1], direct[:-1], strict=True))
    title = (
        f"c. Latency per chunk, one every {PACED.interval_ms:g} ms: arrival minus the upstream's send stamp"
        f" ({PACED_PAIRS} rounds of {PACED.chunks}-chunk streams after {PACED_WARMUP} thrown away)"
    )
    rows = [
        (VARIANTS["direct"], *direct),
        (VARIANTS["app"], *app),
        ("added by the app (app - direct, per column)", *added, float("nan")),
    ]
    headers = ("", *(f"{name} ms" if name != "n" else name for name in SPREAD_HEADERS))
    print(table(headers, rows, title))
    return {"added_median_ms": added[0], "added_p99_ms": added[3]}


def throughput(ends: Ends) -> dict[str, float]:
    """The SDK's rates decide; http.client readers, interleaved with them, show what each source can deliver."""
    measures = {name: partial(read_stream, client, BULK) for name, client in ends.clients.items()}
    measures.update({f"raw {name}": partial(read_raw, url, BULK) for name, url in ends.urls.items()})
    pids = {"app": ends.app.pid, "fake upstream": ends.upstream_pid}
    before, machine_before = {name: process_cpu_s(pid) for name, pid in pids.items()}, CpuUse.now()
    runs = interleaved(measures, BULK_PAIRS, BULK_WARMUP)
    used = {name: [a - b for a, b in zip(process_cpu_s(pid), before[name], strict=True)] for name, pid in pids.items()}
    machine = CpuUse.now().since(machine_before)
    require_complete(runs, BULK)
    relayed = (BULK_PAIRS + BULK_WARMUP) * sum(name.endswith("app") for name in measures) * BULK.chunks
    rates = per_run(runs, lambda run: run.chunks_per_s)
    title = (
        f"d. Throughput of a {BULK.chunks:,}-chunk stream without pauses, request to last content chunk"
        f" ({BULK_PAIRS} rounds after {BULK_WARMUP} thrown away)"
    )
    print(spread_table(title, "chunks/s", {VARIANTS[name]: rates[name] for name in measures}))
    client_cpu = per_run(runs, lambda run: run.client_cpu_ms * 1000 / BULK.chunks)
    print(
        "client CPU per chunk, µs (this process, median of runs): "
        + ", ".join(f"{name} {median(values):.1f}" for name, values in client_cpu.items())
    )
    print(
        f"app process CPU per relayed chunk (/proc/<pid>/stat over all {relayed:,} chunks it relayed here):"
        f" {used['app'][0] * 1e6 / relayed:.1f} µs user + {used['app'][1] * 1e6 / relayed:.1f} µs system"
    )
    cores = {"client": machine.this_process_s, **{name: sum(times) for name, times in used.items()}}
    others = max(0.0, machine.busy_s - sum(cores.values()))  # clock ticks are 10 ms: never below 0
    print(
        f"machine CPU during d., in cores: {machine.busy_cores:.2f} of {os.cpu_count()} busy; "
        + ", ".join(f"{name} {seconds / machine.wall_s:.2f}" for name, seconds in cores.items())
        + f", every other process {others / machine.wall_s:.2f} (the client and the app each need a core here)"
    )
    share = compared("app / direct (SDK)", rates, "app", "direct", "chunks/s")
    return {
        "throughput_ratio": share,
        "app_chunks_per_s": median(rates["app"]),
        "direct_chunks_per_s": median(rates["direct"]),
    }


def peak_rss(app: AppProcess) -> dict[str, float]:
    peak = app.peak_rss_mib()
    print(f"e. Peak RSS of OUR app process (VmHWM, after a. to d.): {peak:.1f} MiB")
    return {"peak_rss_mib": peak}


@dataclass(frozen=True)
class ColdSample:
    init_ms: float  # spawn to ready: the readiness check's first answer (app), the module imported (handler)
    answer_ms: float  # spawn to the first content chunk (app) or to the answer (handler)
    rss_mib: float  # VmHWM once answered
    ok: bool


def cold_app(env: dict[str, str]) -> ColdSample:
    """A fresh app process: spawn, readiness, one streamed request to its first content chunk."""
    app = AppProcess(env, log_name="streaming-app-cold-start.log")  # each start writes over the last one's
    client = sdk_client(app.base_url)  # built before the clock starts: the caller exists already
    try:
        spawned = time.monotonic_ns()
        with app:
            ready = time.monotonic_ns()
            run = read_stream(client, COLD)
            rss = app.peak_rss_mib()
    finally:
        client.close()
    return ColdSample((ready - spawned) / 1e6, (run.first_ns - spawned) / 1e6, rss, run.complete)


def cold_handler(env: dict[str, str]) -> ColdSample:
    """The handler's cold start, exactly as benchmarks.cold_start measures variant (d)."""
    sample, _ = cold_start.run_child("handler", env)
    init_ms = sample.phases.get(INIT_PHASE, float("nan"))
    return ColdSample(init_ms, sample.to_answer_ms, sample.rss_mib, sample.ok)


def cold_starts(env: dict[str, str], rounds: int) -> dict[str, float]:
    measures = {"app": partial(cold_app, env), "handler": partial(cold_handler, env)}
    samples = interleaved(measures, rounds, warmup=1)  # the untimed round fills the OS file cache
    failed = {name: sum(not s.ok for s in variant) for name, variant in samples.items()}
    if any(failed.values()):
        raise RuntimeError(f"cold starts without a right answer: {failed}")
    answer = {name: [s.answer_ms for s in variant] for name, variant in samples.items()}
    title = (
        f"f. Cold start, spawn to first answer ({rounds} rounds, interleaved, order rotated, after 1 untimed):"
        " OUR app to its first content chunk (readiness polled every 10 ms), the handler as in section 2"
    )
    rows = {
        "init: app, spawn -> /healthz answers": [s.init_ms for s in samples["app"]],
        "init: handler (d), start -> module imported": [s.init_ms for s in samples["handler"]],
        "first request: app, ready -> first content chunk": [s.answer_ms - s.init_ms for s in samples["app"]],
        "first request: handler (d), imported -> answer": [s.answer_ms - s.init_ms for s in samples["handler"]],
        "total: app, spawn -> first content chunk": answer["app"],
        "total: handler (d), start -> first answer": answer["handler"],
    }
    print(spread_table(title, "ms", rows))
    rss = {name: median([s.rss_mib for s in variant]) for name, variant in samples.items()}
    print(f"peak RSS (VmHWM) once answered, median: app {rss['app']:.1f} MiB, handler {rss['handler']:.1f} MiB")
    over = compared("app / handler", answer, "app", "handler", "ms")
    return {"cold_ratio": over, "cold_app_ms": median(answer["app"]), "cold_handler_ms": median(answer["handler"])}


def summary_rows(figures: Mapping[str, float | str]) -> list[tuple[str, str, str]]:
    """The section's targets, measured and judged (also the streaming lines of benchmarks.run's summary)."""
    targets = (
        f"streaming TTFT (upstream {TTFT.ttft_ms:g} ms): app <= {TTFT_LIMIT:.2f}x SDK direct",
        f"Responses API stream, first event (upstream TTFT {TTFT.ttft_ms:g} ms): app <= {TTFT_LIMIT:.2f}x SDK direct",
        f"streaming added latency per chunk: median <= {ADDED_MEDIAN_LIMIT_MS:g} ms, p99 <= {ADDED_P99_LIMIT_MS:g} ms",
        f"streaming throughput ({BULK.chunks:,} chunks): app >= {THROUGHPUT_FLOOR:.1f}x SDK direct",
        f"streaming cold start to first chunk <= {COLD_LIMIT:.2f}x handler's",
        f"peak RSS <= {warm.RSS_LIMIT_MIB} MiB (streaming app process)",
    )
    if "error" in figures:
        return [(target, f"failed: {figures['error']}", "FAILED") for target in targets]
    f = {name: float(value) for name, value in figures.items()}
    measured = (
        (
            f"{f['ttft_ratio']:.3f}x ({f['ttft_app_ms']:.1f} vs {f['ttft_direct_ms']:.1f} ms)",
            f["ttft_ratio"] <= TTFT_LIMIT,
        ),
        (
            f"{f['responses_event_ratio']:.3f}x ({f['responses_event_app_ms']:.1f} vs"
            f" {f['responses_event_direct_ms']:.1f} ms); first text delta {f['responses_delta_ratio']:.3f}x"
            f" ({f['responses_delta_app_ms']:.1f} vs {f['responses_delta_direct_ms']:.1f} ms)",
            f["responses_event_ratio"] <= TTFT_LIMIT,
        ),
        (
            f"median {f['added_median_ms']:.2f} ms, p99 {f['added_p99_ms']:.2f} ms",
            f["added_median_ms"] <= ADDED_MEDIAN_LIMIT_MS and f["added_p99_ms"] <= ADDED_P99_LIMIT_MS,
        ),
        (
            f"{f['throughput_ratio']:.3f}x ({f['app_chunks_per_s']:,.0f} vs {f['direct_chunks_per_s']:,.0f} chunks/s)",
            f["throughput_ratio"] >= THROUGHPUT_FLOOR,
        ),
        (
            f"{f['cold_ratio']:.3f}x ({f['cold_app_ms']:.0f} vs {f['cold_handler_ms']:.0f} ms)",
            f["cold_ratio"] <= COLD_LIMIT,
        ),
        (f"{f['peak_rss_mib']:.1f} MiB", f["peak_rss_mib"] <= warm.RSS_LIMIT_MIB),
    )
    return [(target, text, verdict(ok)) for target, (text, ok) in zip(targets, measured, strict=True)]


def measure(stack: Stack, config: Config) -> dict[str, float]:
    env = stack.child_env()
    figures: dict[str, float] = {}
    with AppProcess(env) as app:
        print(f"app: {app.base_url} (its log: {app.log_path}); fake upstream: {stack.base_url}\n", flush=True)
        urls = {"direct": stack.base_url, "app": app.base_url}
        assert stack.upstream is not None
        ends = Ends(urls, {name: sdk_client(url) for name, url in urls.items()}, app, stack.upstream.pid)
        for figure in (time_to_first_token, responses_first_event, chunk_latency, throughput):
            figures.update(figure(ends))
            print(flush=True)
        figures.update(peak_rss(app))
    print(flush=True)
    figures.update(cold_starts(env, config.rounds))
    return figures


def run(stack: Stack, config: Config) -> dict[str, float | str]:
    """The section; on failure it prints why and returns {"error": ...} instead of figures."""
    import openai

    print(
        heading("5. Streaming: OUR app (uvicorn, as src/run.sh starts it) vs the SDK straight from the fake upstream")
    )
    try:
        figures: dict[str, float | str] = dict(measure(stack, config))
    except (RuntimeError, OSError, subprocess.SubprocessError, openai.OpenAIError) as error:
        print(f"FAILED: {error}")
        lines = str(error).strip().splitlines()
        figures = {"error": lines[0] if lines else type(error).__name__}
    print()
    print(table(("target", "measured", "verdict"), summary_rows(figures), "Targets"))
    return figures


def main() -> int:
    return standalone(run)


if __name__ == "__main__":
    run_main(main)
