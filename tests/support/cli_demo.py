"""Codex CLI and opencode against `make serve`, with the fake upstream as OpenAI: what each prints.

    PYTHONPATH=src .venv/bin/python -m tests.support.cli_demo [--port 3000]

Starts the fake OpenAI server (tests/support/fake_openai.py) on loopback, then `make serve` with
OPENAI_API_KEY set (so it uses no local model) and OPENAI_BASE_URL pointing at the fake; `make serve` has budgets
on (its moto_server's budget table). Runs `codex exec` and `opencode run` once each, configured exactly as
tests/integration/test_cli_clients.py configures them (both take it from tests/support/cli_clients.py), and prints
each one's exit status, time, output, what the upstream received and any attempt to reach the internet; then stops
`make serve` (and the servers it started).
Needs `make test-fast` (or `cd tests/node && npm ci`) to have installed the CLIs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.support.cli_clients import (
    DELTAS,
    OPENCODE_ENV,
    codex_config,
    opencode_config,
    refusing_proxy,
    run_codex,
    run_opencode,
)
from tests.support.fake_openai import FakeOpenAI, Reply

ROOT = Path(__file__).resolve().parents[2]


def wait_until_serving(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=3000)
    port = parser.parse_args().port
    fake = FakeOpenAI(required_key="sk-demo-upstream-key").start()
    fake.script(*[Reply.stream(DELTAS)] * 3)  # Codex's one call, opencode's title and turn
    base_url = f"http://127.0.0.1:{port}/v1"
    environment = {
        **os.environ,
        "OPENAI_API_KEY": "sk-demo-upstream-key",  # what `make serve` puts in its secret, for the fake to check
        "OPENAI_BASE_URL": fake.base_url,
        "ALLOWED_MODELS": "gpt-4o-mini,gpt-4.1-mini",
        "LOG_LEVEL": "INFO",
    }
    log = Path(tempfile.mkdtemp(prefix="cli-demo-")) / "make-serve.log"
    print(f"fake upstream: {fake.base_url}\nmake serve PORT={port} (log: {log})", flush=True)
    with log.open("w") as output:
        serve = subprocess.Popen(
            ["make", "--no-print-directory", "serve", f"PORT={port}"],
            cwd=ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_serving(base_url)
        for name, run, config in (
            ("codex exec", run_codex, codex_config(base_url)),
            ("opencode run", run_opencode, json.dumps(opencode_config(base_url), indent=2) + f"\nenv: {OPENCODE_ENV}"),
        ):
            before = len(fake.received)
            with tempfile.TemporaryDirectory(prefix="cli-demo-") as home, refusing_proxy() as outbound:
                ran = run(base_url, Path(home), outbound.url)
            print(f"\n===== {name}: exit {ran.returncode} after {ran.seconds} s\n--- config\n{config}")
            print(f"--- stdout\n{ran.stdout}--- stderr (last 1500 characters)\n{ran.stderr[-1500:]}")
            for request in fake.received[before:]:
                limit = {key: value for key, value in request.json.items() if key.startswith("max_")}
                print(f"--- upstream received: {request.method} {request.path} {limit}")
            print(f"--- attempts to reach the internet: {outbound.attempts or 'none'}")
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=30)
        fake.stop()
    served = [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"level"')]
    print("\n===== make serve's log lines")
    for line in served:
        fields = ("message", "route", "outcome", "status", "model", "caller", "caller_spend_today_usd")
        print({key: line[key] for key in fields if key in line})
    return 0


if __name__ == "__main__":
    sys.exit(main())
