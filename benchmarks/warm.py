"""Warm calls, in-process, against the fake upstream: paired calls, one of each variant per pair.

    handler  lambda_chat.handler.lambda_handler(API Gateway event, context): the real warm invocation
    create   a bare client.chat.completions.create(...) with one long-lived client, same model and messages
    raw      the HTTP floor: http.client keep-alive POST of the same JSON, then json.loads of the answer
    naive    benchmarks/naive_handler.py: boto3 client, secret read and OpenAI client built on every call

The measuring runs in a child process (so its RSS is its own). It swaps sys.stdout for /dev/null (with a line
counter) before anything is imported, so the handler's JSON log line is still formatted and written on every
call, at its real cost, but not printed. Secrets Manager reads are counted by wrapping Powertools'
`SecretsProvider._get`. A second child runs only the handler (BENCH_CALLS calls from a cold import, no
warm-up, nothing else in the process) for the handler's own peak RSS and secret-read count.
"""

from __future__ import annotations

import cProfile
import http.client
import json
import os
import pstats
import re
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

from benchmarks.common import (
    EVENT_FILE,
    MODEL,
    REPORT_PREFIX,
    Config,
    child_report,
    heading,
    median,
    percentile,
    ratio,
    rotated,
    table,
    verdict,
)
from benchmarks.stack import Stack, run_main, standalone

VARIANTS = {
    "handler": "(i) lambda_handler (OUR handler)",
    "create": "(ii) client.chat.completions.create",
    "raw": "(iii) raw http.client POST + json.loads",
    "naive": "(iv) naive baseline handler",
}
WARMUP_PAIRS = 50
PROFILE_CALLS = 200
TOP_FUNCTIONS = 15
RSS_LIMIT_MIB = 100
CHILD_TIMEOUT_S = 600
MESSAGES = [
    {"role": "system", "content": "You are a concise poet."},
    {"role": "user", "content": "Write a haiku about serverless functions."},
]


# ----------------------------------------------------------------------------------------------- child side


class CountingDevNull:
    """A stdout stand-in that writes to /dev/null (a real write per flush, as to a pipe) and counts lines."""

    def __init__(self) -> None:
        self._file = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        self.lines = 0
        self.metrics_documents = 0  # CloudWatch EMF documents (Powertools Metrics), counted apart from log lines

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        self.metrics_documents += text.count('"_aws":')
        return self._file.write(text)

    def flush(self) -> None:
        self._file.flush()

    def isatty(self) -> bool:
        return False


class SecretReadCounter:
    """Counts calls to Powertools' SecretsProvider._get (one per real Secrets Manager read), calling through."""

    def __init__(self) -> None:
        from aws_lambda_powertools.utilities.parameters.secrets import SecretsProvider

        self.count = 0
        original = SecretsProvider._get

        def counted(provider: Any, name: str, **sdk_options: Any) -> str | bytes:
            self.count += 1
            return original(provider, name, **sdk_options)

        SecretsProvider._get = counted  # type: ignore[method-assign]


def memory_now() -> dict[str, float]:
    """VmRSS and VmHWM (this address space) and ru_maxrss, in MiB."""
    values = {"ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values


class RawFloor:
    """The least a client can do: one keep-alive connection, POST the JSON, read and parse the answer."""

    def __init__(self, base_url: str, api_key: str) -> None:
        url = urlsplit(base_url)
        self._connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=30)
        self._path = url.path.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
        self._params = {"model": MODEL, "messages": MESSAGES, "temperature": 0.7, "max_tokens": 200}

    def __call__(self) -> bool:
        self._connection.request("POST", self._path, body=json.dumps(self._params).encode(), headers=self._headers)
        response = self._connection.getresponse()
        document = json.loads(response.read())
        return response.status == 200 and bool(document["choices"][0]["message"]["content"])


Call = Callable[[], bool]


def handler_call(handler: Callable[[Any, Any], Any], event_text: str) -> Call:
    """A prepared invocation: the event decoded and the context made before the clock starts (Lambda does both)."""
    from local.context import FakeLambdaContext

    event, context = json.loads(event_text), FakeLambdaContext()

    def call() -> bool:
        result = handler(event, context)
        return bool(result["statusCode"] == 200)

    return call


def build_variants() -> dict[str, Callable[[], Call]]:
    """For each variant, a function that prepares one call (untimed) and returns it (to be timed)."""
    import openai

    import benchmarks.naive_handler as naive
    from lambda_chat.handler import lambda_handler

    event_text = EVENT_FILE.read_text()
    base_url = os.environ["OPENAI_BASE_URL"]
    client = openai.OpenAI(api_key="sk-benchmark", base_url=base_url, max_retries=0)
    raw = RawFloor(base_url, "sk-benchmark")

    def create() -> bool:
        response = client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            temperature=0.7,
            max_tokens=200,
        )
        return bool(response.choices[0].message.content)

    return {
        "handler": lambda: handler_call(lambda_handler, event_text),
        "create": lambda: create,
        "raw": lambda: raw,
        "naive": lambda: handler_call(naive.lambda_handler, event_text),
    }


@dataclass
class LoopResult:
    times_ns: dict[str, list[int]]
    failures: dict[str, int]
    handler_lines: int  # stdout lines written during handler calls
    handler_metrics: int  # of which EMF metrics documents


def paired_loop(variants: dict[str, Callable[[], Call]], pairs: int, stdout: CountingDevNull) -> LoopResult:
    names = list(variants)
    times: dict[str, list[int]] = {name: [] for name in names}
    failures = dict.fromkeys(names, 0)
    lines = metrics = 0
    for index in range(pairs):
        for name in rotated(names, index):
            call = variants[name]()
            lines_before, metrics_before = stdout.lines, stdout.metrics_documents
            started = time.perf_counter_ns()
            ok = call()
            times[name].append(time.perf_counter_ns() - started)
            failures[name] += not ok
            if name == "handler":
                lines += stdout.lines - lines_before
                metrics += stdout.metrics_documents - metrics_before
    return LoopResult(times, failures, lines, metrics)


def short_location(filename: str, line: int, function: str) -> str:
    """A path relative to site-packages, src/ or the standard library."""
    for pattern in (r"^.*/site-packages/", r"^.*/src/", r"^.*/lib/python3\.\d+/"):
        filename, found = re.subn(pattern, "", filename)
        if found:
            break
    return f"{filename}:{line}({function})" if line else function


ProfileRow = tuple[str, float, float, float]  # location, calls per handler call, own µs, cumulative µs
FunctionKey = tuple[str, int, str]  # pstats' (filename, line, function)
SDK_FILES = ("openai/", "httpx2/", "httpcore2/", "h11/", "anyio/", "/ssl.py", "/socket.py", "/selectors.py")
OWN_FILES = ("lambda_chat/", "aws_lambda_powertools/")


def profile_handler(prepare: Callable[[], Call], calls: int) -> dict[str, list[ProfileRow]]:
    """cProfile over `calls` warm handler calls, per handler call (µs): see `cumulative_rows`, `outside_sdk_rows`."""
    prepared = [prepare() for _ in range(calls)]
    profiler = cProfile.Profile()
    profiler.enable()
    for call in prepared:
        call()
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    stats = {key: value for key, value in stats.items() if "benchmarks/" not in key[0] and "_lsprof" not in key[2]}
    return {"cumulative": cumulative_rows(stats, calls), "outside_sdk": outside_sdk_rows(stats, calls)}


def _row(key: FunctionKey, ncalls: float, tottime: float, cumtime: float, calls: int) -> ProfileRow:
    return (short_location(*key), ncalls / calls, tottime / calls * 1e6, cumtime / calls * 1e6)


def cumulative_rows(stats: dict[FunctionKey, Any], calls: int) -> list[ProfileRow]:
    """The top functions by cumulative time."""
    ranked = sorted(stats.items(), key=lambda item: item[1][3], reverse=True)[:TOP_FUNCTIONS]
    return [_row(key, nc, tt, ct, calls) for key, (_, nc, tt, ct, _) in ranked]


def outside_sdk_rows(stats: dict[FunctionKey, Any], calls: int) -> list[ProfileRow]:
    """What the handler spends around the SDK: functions reached from lambda_chat/Powertools code without going
    through the SDK/HTTP stack, with only the time of those call edges; the frames that enclose the SDK call
    (their cumulative time includes it) are left out."""

    def is_sdk(key: FunctionKey) -> bool:
        return any(part in key[0] for part in SDK_FILES)

    roots = {key for key in stats if any(part in key[0] for part in OWN_FILES)}
    outside, changed = set(roots), True
    while changed:
        changed = False
        for key, (*_, callers) in stats.items():
            # built-ins ("~") merge every call site, so nothing is followed through them
            if key not in outside and not is_sdk(key) and any(c in outside and c[0] != "~" for c in callers):
                outside.add(key)
                changed = True
    sdk_call = max((value[3] for key, value in stats.items() if is_sdk(key)), default=float("inf"))
    rows = []
    for key in outside:
        _, nc, tt, ct, callers = stats[key]
        if key not in roots:  # only the calls made from outside the SDK
            edges = [edge for caller, edge in callers.items() if caller in outside and caller[0] != "~"]
            nc, tt, ct = (sum(edge[i] for edge in edges) for i in (0, 2, 3))
        if ct < 0.9 * sdk_call:
            rows.append(_row(key, nc, tt, ct, calls))
    return sorted(rows, key=lambda row: row[3], reverse=True)[:TOP_FUNCTIONS]


def child_mixed(pairs: int, out: TextIO, stdout: CountingDevNull) -> None:
    counter = SecretReadCounter()
    variants = build_variants()
    after_import = memory_now()
    paired_loop(variants, WARMUP_PAIRS, stdout)
    reads_warmup = counter.count
    result = paired_loop(variants, pairs, stdout)
    reads_total = counter.count
    memory = memory_now()
    profile = profile_handler(variants["handler"], PROFILE_CALLS)
    report = {
        "times_ns": result.times_ns,
        "failures": result.failures,
        "handler_lines": result.handler_lines,
        "handler_metrics": result.handler_metrics,
        "secret_reads_warmup": reads_warmup,
        "secret_reads_timed": reads_total - reads_warmup,
        "memory_after_import": after_import,
        "memory_after_loop": memory,
        "profile": profile,
    }
    out.write(REPORT_PREFIX + json.dumps(report) + "\n")


def child_handler_only(calls: int, out: TextIO, stdout: CountingDevNull) -> None:
    from lambda_chat.handler import lambda_handler

    counter = SecretReadCounter()
    event_text = EVENT_FILE.read_text()
    failures = 0
    for _ in range(calls):
        failures += not handler_call(lambda_handler, event_text)()
    report = {"calls": calls, "failures": failures, "secret_reads": counter.count, "memory": memory_now()}
    out.write(REPORT_PREFIX + json.dumps(report) + "\n")


def child_main(mode: str) -> None:
    """Entry of the measuring child: stdout becomes a counting /dev/null before anything logs."""
    out = sys.stdout
    stdout = CountingDevNull()
    sys.stdout = stdout  # type: ignore[assignment]
    calls = int(os.environ["BENCH_CALLS"])
    if mode == "mixed":
        child_mixed(calls, out, stdout)
    else:
        child_handler_only(calls, out, stdout)
    out.flush()


# ---------------------------------------------------------------------------------------------- parent side


def run_child(mode: str, env: dict[str, str], calls: int) -> dict[str, Any]:
    code = f"import benchmarks.warm as w; w.child_main({mode!r})"
    return child_report(code, {**env, "BENCH_CALLS": str(calls)}, f"warm child {mode}", CHILD_TIMEOUT_S)


def latency_table(report: dict[str, Any]) -> str:
    rows = []
    for name, label in VARIANTS.items():
        times = [t / 1000 for t in report["times_ns"][name]]
        rows.append(
            (
                label,
                median(times),
                percentile(times, 0.1),
                percentile(times, 0.9),
                percentile(times, 0.99),
                len(times),
                report["failures"][name],
            )
        )
    headers = ("variant", "median µs", "p10 µs", "p90 µs", "p99 µs", "calls", "failed")
    return table(headers, rows, "Warm call latency (each pair runs every variant once, order rotated each pair)")


def paired_median_ratio(report: dict[str, Any], top: str, bottom: str) -> float:
    pairs = zip(report["times_ns"][top], report["times_ns"][bottom], strict=True)
    return median([a / b for a, b in pairs])


def ratios_table(report: dict[str, Any]) -> tuple[str, float]:
    med = {name: median(report["times_ns"][name]) / 1000 for name in VARIANTS}
    specs = [
        ("handler / create", "handler", "create", "at most 1.0"),
        ("handler / raw HTTP floor", "handler", "raw", ""),
        ("create / raw HTTP floor", "create", "raw", ""),
        ("naive / handler", "naive", "handler", ""),
    ]
    rows = [
        (label, ratio(med[top], med[bottom]), paired_median_ratio(report, top, bottom), med[top] - med[bottom], target)
        for label, top, bottom, target in specs
    ]
    headers = ("ratio", "of medians", "median per pair", "difference µs", "target")
    return table(headers, rows, "Ratios"), ratio(med["handler"], med["create"])


def profile_tables(report: dict[str, Any]) -> str:
    headers = ("function (file:line)", "calls/handler call", "own µs/call", "cumulative µs/call")
    first = table(
        headers,
        [tuple(row) for row in report["profile"]["cumulative"]],
        f"cProfile of {PROFILE_CALLS} warm handler calls (after the timed loop): top {TOP_FUNCTIONS} by cumulative"
        " time, per handler call (profiling inflates the absolute figures)",
    )
    second = table(
        headers,
        [tuple(row) for row in report["profile"]["outside_sdk"]],
        "The same profile without the SDK/HTTP stack, built-ins and the frames around the SDK call:"
        " what the handler adds around `create`",
    )
    return f"{first}\n\n{second}"


def memory_table(mixed: dict[str, Any], alone: dict[str, Any]) -> str:
    rows = [
        ("mixed child, after imports", *_memory_cells(mixed["memory_after_import"])),
        ("mixed child, after warm-up + timed loop", *_memory_cells(mixed["memory_after_loop"])),
        (f"handler-only child, after {alone['calls']} calls", *_memory_cells(alone["memory"])),
    ]
    return table(("process", "VmRSS MiB", "VmHWM (peak) MiB", "ru_maxrss MiB"), rows, "Memory")


def _memory_cells(memory: dict[str, float]) -> tuple[float, float, float]:
    return memory.get("VmRSS", float("nan")), memory.get("VmHWM", float("nan")), memory["ru_maxrss"]


def run(stack: Stack, config: Config) -> dict[str, float]:
    print(heading("4. Warm calls: in-process, paired"))
    env = stack.child_env()
    print(f"{WARMUP_PAIRS} warm-up pairs, then {config.calls} timed pairs of {len(VARIANTS)} calls", flush=True)
    mixed = run_child("mixed", env, config.calls)
    alone = run_child("handler", env, config.calls)
    print(latency_table(mixed))
    print()
    ratios, handler_over_create = ratios_table(mixed)
    print(ratios)
    print()
    print(profile_tables(mixed))
    print()
    print(memory_table(mixed, alone))
    print()
    reads = alone["secret_reads"]
    peak = alone["memory"].get("VmHWM", alone["memory"]["ru_maxrss"])
    print(
        f"Secrets Manager reads (SecretsProvider._get): handler-only child, {alone['calls']} calls from cold: {reads};"
        f" mixed child: {mixed['secret_reads_warmup']} in {WARMUP_PAIRS} warm-up calls,"
        f" {mixed['secret_reads_timed']} in {config.calls} timed calls"
    )
    print(
        f"stdout lines written by the {config.calls} timed handler calls: {mixed['handler_lines']}"
        f" (of which CloudWatch EMF metrics documents: {mixed['handler_metrics']}; the rest are JSON log lines)"
    )
    print()
    print(
        f"Target: warm handler at most 1.0x create: {handler_over_create:.2f}x -> {verdict(handler_over_create <= 1.0)}"
    )
    print(f"Target: exactly 1 secret read per {alone['calls']} handler calls: {reads} -> {verdict(reads == 1)}")
    met = verdict(peak <= RSS_LIMIT_MIB)
    print(f"Target: peak RSS at most {RSS_LIMIT_MIB} MiB (handler-only child): {peak:.1f} MiB -> {met}")
    return {
        "handler_over_create": handler_over_create,
        "secret_reads": reads,
        "handler_calls": alone["calls"],
        "peak_rss_mib": peak,
        "mixed_peak_rss_mib": mixed["memory_after_loop"].get("VmHWM", float("nan")),
    }


def main() -> int:
    return standalone(run)


if __name__ == "__main__":
    run_main(main)
