"""Shared helpers: configuration from the environment, statistics, tables, machine description."""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
EVENT_FILE = ROOT / "events" / "apigateway-rest.json"
MODEL = "gpt-4o-mini"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Config:
    rounds: int  # cold-start rounds (every variant once per round)
    calls: int  # warm paired calls (every variant once per pair)

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            rounds=_positive_int("BENCH_ROUNDS", 15),
            calls=_positive_int("BENCH_CALLS", 1000),
        )


def _positive_int(name: str, default: int) -> int:
    value = int(os.environ.get(name) or default)
    if value < 1:
        raise SystemExit(f"{name} must be at least 1")
    return value


def rotated(items: Sequence[str], shift: int) -> list[str]:
    """The items starting at position `shift` (mod len), so each item takes every position in turn."""
    k = shift % len(items)
    return [*items[k:], *items[:k]]


T = TypeVar("T")


def shuffled(items: Sequence[str], seed: int) -> list[str]:
    """The items in an order drawn from `seed`: over many rounds, each item follows each other one as often.

    Rotation keeps the items' cyclic order, so one item would always follow the same other one, and pay for
    whatever that one leaves running after its answer (a deferred settle, a peer's logging) on a 2-core machine.
    """
    return random.Random(seed).sample(list(items), len(items))


def interleaved(
    measures: Mapping[str, Callable[[], T]],
    rounds: int,
    warmup: int = 0,
    order: Callable[[Sequence[str], int], list[str]] = rotated,
) -> dict[str, list[T]]:
    """Every measure once per round, in the order `order` gives for the round (rotated unless said); the first
    `warmup` rounds are thrown away."""
    names = list(measures)
    results: dict[str, list[T]] = {name: [] for name in names}
    for index in range(warmup + rounds):
        for name in order(names, index):
            result = measures[name]()
            if index >= warmup:
                results[name].append(result)
    return results


def paired_median_ratio(tops: Sequence[float], bottoms: Sequence[float]) -> float:
    """The median of the per-round ratios (each round measures both, back to back)."""
    return median([top / bottom for top, bottom in zip(tops, bottoms, strict=True)])


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation): enough for benchmark summaries."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str | None = None) -> str:
    """A plain-text table; numbers are right-aligned, text left-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [
        max(len(headers[i]), *(len(row[i]) for row in cells)) if cells else len(headers[i]) for i in range(len(headers))
    ]
    numeric = [all(_is_number(row[i]) for row in rows) if rows else False for i in range(len(headers))]
    lines = [title] if title else []
    lines.append("  ".join(h.rjust(w) if n else h.ljust(w) for h, w, n in zip(headers, widths, numeric, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(row, widths, numeric, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.1f}" if abs(value) < 10_000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def heading(text: str) -> str:
    return f"\n{'=' * len(text)}\n{text}\n{'=' * len(text)}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "cpu model", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def source_state() -> str:
    """Which code is measured: the commit, and how many files under src/ differ from it (read-only git)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    dirty = f"{len(status)} file(s) under src/ modified or new, uncommitted" if status else "src/ clean"
    return f"{commit[:90]} ({dirty})"


def machine_report(config: Config) -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    packages = ("openai", "httpx2", "aws-lambda-powertools", "boto3", "pydantic", "moto")
    rows = [
        ("CPU", cpu_model()),
        ("cores", f"{os.cpu_count()} (usable by this process: {usable})"),
        ("load average (1/5/15 min)", load),
        ("Python", f"{platform.python_implementation()} {sys.version.split()[0]} ({sys.executable})"),
        ("platform", platform.platform()),
        ("packages", ", ".join(f"{p} {_version(p)}" for p in packages)),
        ("code measured", source_state()),
        ("BENCH_ROUNDS (cold-start rounds)", str(config.rounds)),
        ("BENCH_CALLS (warm paired calls)", str(config.calls)),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


REPORT_PREFIX = "BENCHJSON "  # the line a measuring child prints its report on


def child_report(code: str, env: Mapping[str, str], what: str, timeout: float = 600) -> dict[str, Any]:
    """Run `python -c code` (a measuring child) and return the report it printed after REPORT_PREFIX."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith(REPORT_PREFIX):
            report: dict[str, Any] = json.loads(line.removeprefix(REPORT_PREFIX))
            return report
    raise RuntimeError(f"{what} reported nothing (exit {done.returncode}): {done.stderr[-3000:]}")
