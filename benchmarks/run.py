"""Run every benchmark once and print the tables:

    cd /work/main && PYTHONPATH=src:. .venv/bin/python -m benchmarks.run

BENCH_ROUNDS (cold-start rounds, default 15) and BENCH_CALLS (warm paired calls, default 1000) set the sizes;
BENCH_IDEMPOTENCY=0 leaves the idempotency table (which the SAM template gives the function) out.
Section 3 (benchmarks.artifact_cold_start) runs the x86_64 twin of the built artifact with python3.13 (through
pyenv, or LAMBDA_PYTHON), building the twin first if it is missing or stale; section 5 (benchmarks.streaming)
runs the streaming app as src/run.sh starts it; section 6 (benchmarks.budgets) adds a budget table in
moto_server; section 7 (benchmarks.gateway) measures what OUR app adds as a gateway, budgets on and off, against
the SDK straight to the upstream (GATEWAY_ROUNDS, GATEWAY_STREAM_ROUNDS, GATEWAY_CONCURRENT_SECONDS set its sizes;
`make bench-peers` runs it with the LiteLLM proxy and the Portkey gateway too). The run exits 1 if section 3 or 5
fails.
Every process started here (moto_server, the fake upstream, the measured children) is stopped on the way out,
also on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from benchmarks import artifact, artifact_cold_start, budgets, cold_start, gateway, streaming, warm
from benchmarks.common import Config, heading, machine_report, table, verdict
from benchmarks.stack import Stack, run_main, stop_on_sigterm

T = TypeVar("T")


def describe_stack(stack: Stack) -> str:
    assert stack.moto is not None
    lines = [
        f"fake OpenAI upstream (benchmarks.upstream, own process, asyncio keep-alive, SSE streams): {stack.base_url}",
        f"moto_server (Secrets Manager{', DynamoDB' if stack.idempotency_table else ''}): {stack.moto.endpoint}",
        f"idempotency table (as in template.yaml): {stack.idempotency_table or 'off (BENCH_IDEMPOTENCY=0)'}",
        "event: events/apigateway-rest.json (no Idempotency-Key header); LOG_LEVEL=INFO, one JSON log line per call",
    ]
    return "\n".join(lines)


def artifact_cold_row(figures: dict[str, float | str]) -> tuple[str, str, str]:
    target = "cold start in the artifact (x86_64 twin, py3.13): handler <= 1.00x floor"
    if "error" in figures:
        return target, f"failed: {figures['error']}", "FAILED"
    over, sources_over = float(figures["handler_over_floor"]), float(figures["sources_over_handler"])
    measured = (
        f"{over:.2f}x ({float(figures['handler_ms']):.0f} vs {float(figures['floor_ms']):.0f} ms);"
        f" without .pyc {sources_over:.2f}x slower ({float(figures['sources_ms']):.0f} ms);"
        f" peak RSS {float(figures['handler_rss_mib']):.1f} vs {float(figures['floor_rss_mib']):.1f} MiB"
    )
    return target, measured, verdict(over <= 1.0)


def summary(
    cold: dict[str, float],
    art_cold: dict[str, float | str],
    hot: dict[str, float],
    stream: dict[str, float | str],
    art: dict[str, float | bool],
    spend: dict[str, float],
    gate: dict[str, float | str] | None = None,
) -> str:
    rows: list[tuple[str, str, str]] = [
        (
            "cold start: handler <= 1.00x floor",
            f"{cold['handler_over_floor']:.2f}x ({cold['handler_ms']:.0f} vs {cold['floor_ms']:.0f} ms)",
            verdict(cold["handler_over_floor"] <= 1.0),
        ),
        artifact_cold_row(art_cold),
        (
            "warm: handler <= 1.0x create",
            f"{hot['handler_over_create']:.2f}x",
            verdict(hot["handler_over_create"] <= 1.0),
        ),
        (
            f"secret reads per {hot['handler_calls']:.0f} handler calls == 1",
            f"{hot['secret_reads']:.0f}",
            verdict(hot["secret_reads"] == 1),
        ),
        (
            f"peak RSS <= {warm.RSS_LIMIT_MIB} MiB (handler-only process)",
            f"{hot['peak_rss_mib']:.1f} MiB (mixed benchmark process: {hot['mixed_peak_rss_mib']:.1f} MiB)",
            verdict(hot["peak_rss_mib"] <= warm.RSS_LIMIT_MIB),
        ),
        *streaming.summary_rows(stream),
        *budgets.summary_rows(spend),
        *(gateway.summary_rows(gate) if gate is not None else []),
    ]
    if art:
        zipped, without = float(art["zipped_mib"]), float(art["zipped_without_mib"])
        rows.append(
            (
                f"zipped artifact <= {artifact.ZIP_LIMIT_MIB} MiB, no aiohttp",
                f"{zipped:.2f} MiB as built, {without:.2f} MiB without boto3 stack; aiohttp "
                + ("inside" if art["aiohttp"] else "absent"),
                verdict(zipped <= artifact.ZIP_LIMIT_MIB and not art["aiohttp"]),
            )
        )
    else:
        rows.append((f"zipped artifact <= {artifact.ZIP_LIMIT_MIB} MiB, no aiohttp", "no build found", "SKIPPED"))
    return table(("target", "measured", "verdict"), rows)


class Sections:
    """Runs the sections one by one and keeps how long each took."""

    def __init__(self) -> None:
        self.timings: list[tuple[str, float]] = []

    def run(self, name: str, section: Callable[[], T]) -> T:
        started = time.monotonic()
        try:
            return section()
        finally:
            self.timings.append((name, time.monotonic() - started))

    def report(self) -> str:
        return ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.timings)


def main() -> int:
    stop_on_sigterm()
    config = Config.from_env()
    started = time.monotonic()
    print(heading("Machine"))
    print(machine_report(config))
    sections = Sections()
    with Stack() as stack:
        print(heading("1. Loopback stack"))
        print(describe_stack(stack), flush=True)
        cold = sections.run("cold start", lambda: cold_start.run(stack, config))
        art_cold = sections.run("artifact cold start", lambda: artifact_cold_start.run(stack, config))
        hot = sections.run("warm calls", lambda: warm.run(stack, config))
        stream = sections.run("streaming", lambda: streaming.run(stack, config))
        spend = sections.run("budgets", lambda: budgets.run(stack, config))
        gate = sections.run("gateway", lambda: gateway.run(stack, config))
    art = sections.run("artifact", artifact.run)
    print(heading("Summary"))
    print(summary(cold, art_cold, hot, stream, art, spend, gate))
    print(f"\nwhole run: {time.monotonic() - started:.0f} s ({sections.report()})")
    return 1 if "error" in art_cold or "error" in stream else 0


if __name__ == "__main__":
    run_main(main)
