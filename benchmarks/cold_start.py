"""Cold start, whole processes: every variant is a fresh `python -c ...`, timed from spawn to its answer.

    a. bare     the bare interpreter (a one-liner that only reports)
    b. sdk      import openai, build a client, one chat.completions.create
    c. floor    import openai and boto3, read the key with boto3 from moto_server, build a client, one request
    d. handler  import lambda_chat.handler (Lambda's init) and serve the first API Gateway request
    e. naive    benchmarks/naive_handler.py (eager imports, clients and secret read per call), same request

Rounds are interleaved (each round runs every variant once) with the order rotated each round, after one
untimed round that warms the OS file cache and __pycache__. Then (d) and (c) run with -X importtime
(3 runs each, interleaved; the run with the median total is shown).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field

from benchmarks.coldprobe import BARE_CODE
from benchmarks.common import MIB, ROOT, Config, heading, median, percentile, ratio, rotated, table, verdict
from benchmarks.stack import Stack, run_main, standalone

VARIANTS = {
    "bare": "a. bare interpreter",
    "sdk": "b. SDK process (openai only)",
    "floor": "c. floor (openai + boto3 secret)",
    "handler": "d. OUR handler",
    "naive": "e. naive baseline handler",
}
CHILD_TIMEOUT_S = 120
TOP_IMPORTS = 15
IMPORTTIME_RUNS = 3  # -X importtime runs of (d) and (c) each; the one with the median total is shown


@dataclass
class Sample:
    to_answer_ms: float
    wall_ms: float  # spawn to exit, seen from the parent
    rss_mib: float  # VmHWM: the peak of the child's own address space
    maxrss_mib: float  # getrusage ru_maxrss (on Linux it keeps the parent's RSS across fork+exec)
    ok: bool
    phases: dict[str, float] = field(default_factory=dict)  # phase -> ms since start


@dataclass(frozen=True)
class ImportRecord:
    self_us: int
    cumulative_us: int
    depth: int
    name: str


def command(variant: str, importtime: bool = False) -> list[str]:
    code = BARE_CODE if variant == "bare" else f"import benchmarks.coldprobe as p; p.main({variant!r})"
    flags = ["-X", "importtime"] if importtime else []
    return [sys.executable, *flags, "-c", code]


def run_child(variant: str, env: dict[str, str], importtime: bool = False) -> tuple[Sample, str]:
    """One fresh process; its sample and its stderr (the -X importtime report, if asked for)."""
    child_env = dict(env)
    child_env["BENCH_T0_NS"] = str(time.monotonic_ns())
    started = int(child_env["BENCH_T0_NS"])
    done = subprocess.run(
        command(variant, importtime),
        env=child_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    wall_ms = (time.monotonic_ns() - started) / 1e6
    return parse_sample(variant, done, wall_ms), done.stderr


def parse_sample(variant: str, done: subprocess.CompletedProcess[str], wall_ms: float) -> Sample:
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("BENCH "):
            head, _, tail = line.partition("\t")
            _, elapsed_ns, hwm_kib, maxrss_kib, ok = head.split()
            phases = {}
            for item in filter(None, tail.split(";")):
                phase, _, at_ns = item.rpartition("=")
                phases[phase] = int(at_ns) / 1e6
            return Sample(
                to_answer_ms=int(elapsed_ns) / 1e6,
                wall_ms=wall_ms,
                rss_mib=int(hwm_kib) * 1024 / MIB,
                maxrss_mib=int(maxrss_kib) * 1024 / MIB,
                ok=ok == "1" and done.returncode == 0,
                phases=phases,
            )
    raise RuntimeError(f"variant {variant} reported nothing (exit {done.returncode}): {done.stderr[-2000:]}")


def measure(env: dict[str, str], rounds: int) -> dict[str, list[Sample]]:
    names = list(VARIANTS)
    for name in names:  # untimed: fills the OS file cache and writes any missing .pyc
        run_child(name, env)
    samples: dict[str, list[Sample]] = defaultdict(list)
    for round_index in range(rounds):
        for name in rotated(names, round_index):
            samples[name].append(run_child(name, env)[0])
        print(f"  round {round_index + 1}/{rounds} done", file=sys.stderr, flush=True)
    return samples


def results_table(samples: dict[str, list[Sample]]) -> str:
    rows = []
    for name, label in VARIANTS.items():
        times = [s.to_answer_ms for s in samples[name]]
        rows.append(
            (
                label,
                median(times),
                min(times),
                percentile(times, 0.9),
                median([s.wall_ms for s in samples[name]]),
                median([s.rss_mib for s in samples[name]]),
                median([s.maxrss_mib for s in samples[name]]),
                f"{sum(s.ok for s in samples[name])}/{len(times)}",
            )
        )
    headers = (
        "variant",
        "median ms",
        "min ms",
        "p90 ms",
        "spawn->exit ms",
        "peak RSS MiB",
        "ru_maxrss MiB",
        "answers ok",
    )
    return table(
        headers,
        rows,
        "Start to answer (child's clock, exit excluded); spawn->exit seen from the parent;\n"
        "peak RSS = VmHWM of the child (ru_maxrss, also shown, keeps the parent's RSS across fork+exec on Linux)",
    )


def paired_ratio(samples: dict[str, list[Sample]], top: str, bottom: str) -> float:
    """Median of the per-round ratios (each round runs both variants back to back)."""
    pairs = zip(samples[top], samples[bottom], strict=True)
    return median([a.to_answer_ms / b.to_answer_ms for a, b in pairs])


def ratios_table(samples: dict[str, list[Sample]]) -> tuple[str, float]:
    med = {name: median([s.to_answer_ms for s in samples[name]]) for name in VARIANTS}
    specs = [
        ("d/c  handler / floor", "handler", "floor", "at most 1.00"),
        ("d/b  handler / SDK process", "handler", "sdk", ""),
        ("e/d  naive / handler", "naive", "handler", ""),
        ("c/b  floor / SDK process", "floor", "sdk", ""),
    ]
    rows = []
    for label, top, bottom, target in specs:
        rows.append(
            (
                label,
                ratio(med[top], med[bottom]),
                paired_ratio(samples, top, bottom),
                med[top] - med[bottom],
                target,
            )
        )
    headers = ("ratio", "of medians", "median per round", "difference ms", "target")
    return table(headers, rows, "Ratios"), ratio(med["handler"], med["floor"])


def phases_table(samples: dict[str, list[Sample]]) -> str:
    rows = []
    for name, label in VARIANTS.items():
        if name == "bare":
            continue
        phase_names = list(samples[name][0].phases)
        previous = 0.0
        for phase in [*phase_names, "answered"]:
            if phase == "answered":
                at = median([s.to_answer_ms for s in samples[name]])
            else:
                at = median([s.phases[phase] for s in samples[name]])
            rows.append((label, phase, at, at - previous))
            previous = at
            label = ""
    headers = ("variant", "phase ends", "median ms since start", "phase ms")
    return table(headers, rows, "Where the cold start goes (medians of the same rounds)")


def parse_importtime(stderr: str) -> list[ImportRecord]:
    records = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|", 2)
        stripped = name.lstrip(" ")
        depth = (len(name) - len(stripped) - 1) // 2
        records.append(ImportRecord(int(self_us), int(cumulative_us), depth, stripped.strip()))
    return records


def importtime_runs(env: dict[str, str]) -> tuple[list[ImportRecord], list[ImportRecord]]:
    """(d) and (c) under -X importtime, interleaved; for each, the run whose total import time is the median."""
    runs: dict[str, list[list[ImportRecord]]] = {"handler": [], "floor": []}
    for index in range(IMPORTTIME_RUNS):
        for name in rotated(list(runs), index):
            runs[name].append(parse_importtime(run_child(name, env, importtime=True)[1]))

    def median_run(records: list[list[ImportRecord]]) -> list[ImportRecord]:
        return sorted(records, key=lambda run: sum(r.self_us for r in run))[len(records) // 2]

    return median_run(runs["handler"]), median_run(runs["floor"])


def package_of(module: str) -> str:
    return module.split(".", 1)[0]


def by_package(records: list[ImportRecord]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for record in records:
        totals[package_of(record.name)] += record.self_us
    return totals


def import_tables(handler_records: list[ImportRecord], floor_records: list[ImportRecord]) -> str:
    top = sorted(handler_records, key=lambda r: r.cumulative_us, reverse=True)[:TOP_IMPORTS]
    rows = [(r.name, r.depth, r.cumulative_us / 1000, r.self_us / 1000) for r in top]
    first = table(
        ("module (d. OUR handler)", "depth", "cumulative ms", "self ms"),
        rows,
        f"Top {TOP_IMPORTS} cumulative import costs of (d): -X importtime (inflates times), median-total of"
        f" {IMPORTTIME_RUNS} runs",
    )
    handler_pkgs, floor_pkgs = by_package(handler_records), by_package(floor_records)
    names = sorted(set(handler_pkgs) | set(floor_pkgs), key=lambda n: handler_pkgs.get(n, 0), reverse=True)
    pkg_rows: list[tuple[object, ...]] = [
        (
            n,
            handler_pkgs.get(n, 0) / 1000,
            floor_pkgs.get(n, 0) / 1000,
            (handler_pkgs.get(n, 0) - floor_pkgs.get(n, 0)) / 1000,
        )
        for n in names[:20]
    ]
    pkg_rows.append(
        (
            "TOTAL (all modules)",
            sum(handler_pkgs.values()) / 1000,
            sum(floor_pkgs.values()) / 1000,
            (sum(handler_pkgs.values()) - sum(floor_pkgs.values())) / 1000,
        )
    )
    pkg_rows.append(
        (
            "modules imported (count)",
            len(handler_records),
            len(floor_records),
            len(handler_records) - len(floor_records),
        )
    )
    second = table(
        ("top-level package", "d. handler self ms", "c. floor self ms", "d - c ms"),
        pkg_rows,
        "Import time by top-level package (sum of self times), (d) vs (c), top 20 of (d)",
    )
    only_handler = sorted(set(handler_pkgs) - set(floor_pkgs), key=lambda n: handler_pkgs[n], reverse=True)
    third = "Packages imported by (d) but not by (c): " + (
        ", ".join(f"{n} ({handler_pkgs[n] / 1000:.1f} ms)" for n in only_handler) or "none"
    )
    return f"{first}\n\n{second}\n\n{third}"


def run(stack: Stack, config: Config) -> dict[str, float]:
    print(heading("2. Cold start: whole processes, spawn to first answer"))
    env = stack.child_env()
    print(f"{config.rounds} rounds x {len(VARIANTS)} variants, interleaved, order rotated each round", flush=True)
    samples = measure(env, config.rounds)
    print(results_table(samples))
    print()
    ratios, handler_over_floor = ratios_table(samples)
    print(ratios)
    print()
    print(phases_table(samples))
    print()
    handler_imports, floor_imports = importtime_runs(env)
    print(import_tables(handler_imports, floor_imports))
    met = verdict(handler_over_floor <= 1.0)
    print(f"\nTarget: cold start of (d) at most 1.00x (c): {handler_over_floor:.2f}x -> {met}")
    return {
        "handler_over_floor": handler_over_floor,
        "handler_ms": median([s.to_answer_ms for s in samples["handler"]]),
        "floor_ms": median([s.to_answer_ms for s in samples["floor"]]),
        "handler_rss_mib": median([s.rss_mib for s in samples["handler"]]),
    }


def main() -> int:
    return standalone(run)


if __name__ == "__main__":
    run_main(main)
