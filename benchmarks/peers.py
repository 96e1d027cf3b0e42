"""The gateway section (benchmarks.gateway) with peers: the LiteLLM proxy and the Portkey gateway, in the same run.

    make bench-peers      # or: PYTHONPATH=src:. .venv/bin/python -m benchmarks.peers

Each peer is installed at a pinned version in its own environment under .local/peers/, once: it is installed again
only when it is missing or its pin changed (the pin is kept in the environment's `.installed`).
    LiteLLM proxy   `litellm[proxy]==1.108.7` in a Python venv (python3.11, else python3); started with a config
                    whose one wildcard route (`*` -> `openai/*`) goes to the fake upstream, a master key (1.108
                    refuses to start without one; the SDK sends it), no database, one worker, logging at ERROR, the
                    bundled model cost map (no fetch).
    Portkey gateway `@portkey-ai/gateway@1.15.2` by npm into its own folder; its server (build/start-server.js
                    --port=N --headless), each request routed by its headers: `x-portkey-provider: openai` and
                    `x-portkey-custom-host: <the fake's /v1>` (127.0.0.1 is among its default trusted custom hosts).
Then direct, OUR app (budgets on and off) and both peers are measured together, interleaved, and one table printed.
A peer that cannot be installed or started gets the reason in its row; the others carry on.
Every process started here is stopped on the way out, also on Ctrl-C and SIGTERM. Not part of `make test`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from benchmarks import gateway
from benchmarks.common import ROOT, Config, machine_report, table
from benchmarks.stack import Stack, run_main, stop_on_sigterm
from local.moto import LOG_DIR, free_port, log_tail

PEERS_DIR = ROOT / ".local" / "peers"
LITELLM_VERSION = "1.108.7"
LITELLM_PIN = f"litellm[proxy]=={LITELLM_VERSION}"
PORTKEY_VERSION = "1.15.2"
PORTKEY_PACKAGE = "@portkey-ai/gateway"
# @hono/node-server from 1.14 on (Portkey asks for ^1.3.3, so npm takes the newest) keeps the fetched upstream
# response's immutable headers when Portkey wraps a stream (`new Response(stream, upstreamResponse)`), and Portkey's
# next `headers.append` throws "TypeError: immutable": every streamed request answers 500 on Node 20. 1.13.8 copies
# the headers; it is the newest release without the fault.
PORTKEY_OVERRIDES = {"@hono/node-server": "1.13.8"}
LITELLM_LABEL = f"LiteLLM proxy {LITELLM_VERSION} (no database)"
PORTKEY_LABEL = f"Portkey gateway {PORTKEY_VERSION}"
START_TIMEOUT_S = 120
POLL_S = 0.05


@dataclass(frozen=True)
class Installed:
    where: Path
    seconds: float  # 0 when it was there already
    size_mib: float


def _size_mib(path: Path) -> float:
    done = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True, check=False)
    return float(done.stdout.split()[0]) if done.returncode == 0 and done.stdout else float("nan")


def _run_logged(commands: list[list[str]], log_path: Path, cwd: Path | None = None) -> None:
    """Run each command, its output appended to `log_path`; RuntimeError with the log's end if one fails."""
    with log_path.open("ab") as log:
        for command in commands:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, check=False, timeout=1800)
            if done.returncode:
                raise RuntimeError(f"`{' '.join(command[:4])} ...` exited {done.returncode}: see {log_path}")


def install(name: str, pin: str, build: Callable[[Path, Path], None]) -> Installed:
    """`.local/peers/<name>`, built by `build(folder, log)` unless its `.installed` names the same pin."""
    where = PEERS_DIR / name
    marker = where / ".installed"
    if marker.is_file() and marker.read_text() == pin:
        return Installed(where, 0.0, _size_mib(where))
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"peers-install-{name}-{os.getpid()}.log"
    print(f"installing {pin} into {where} (log: {log_path}) ...", flush=True)
    started = time.monotonic()
    try:
        build(where, log_path)
    except BaseException:
        shutil.rmtree(where, ignore_errors=True)  # never a half environment taken for a whole one
        raise
    marker.write_text(pin)
    return Installed(where, time.monotonic() - started, _size_mib(where))


def _python() -> str:
    """python3.11 (pyenv's or the system's) where there is one, else python3."""
    for candidate in ("python3.11", "python3"):
        found = shutil.which(candidate)
        if found and subprocess.run([found, "-c", "pass"], capture_output=True, check=False).returncode == 0:
            return found
    raise RuntimeError("no python3 found")


def install_litellm() -> Installed:
    python = _python()
    version = subprocess.run([python, "--version"], capture_output=True, text=True, check=True).stdout.strip()

    def build(where: Path, log: Path) -> None:
        pip = str(where / "bin" / "pip")
        _run_logged(
            [
                [python, "-m", "venv", str(where)],
                [pip, "install", "--quiet", "--upgrade", "pip==26.3"],
                [pip, "install", "--quiet", LITELLM_PIN],
            ],
            log,
        )

    return install("litellm", f"{LITELLM_PIN} ({version})", build)


def install_portkey() -> Installed:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found (Node.js is needed for the Portkey gateway)")
    package = {
        "private": True,
        "dependencies": {PORTKEY_PACKAGE: PORTKEY_VERSION},  # exact: no range
        "overrides": PORTKEY_OVERRIDES,
    }

    def build(where: Path, log: Path) -> None:
        (where / "package.json").write_text(json.dumps(package, indent=2) + "\n")
        _run_logged([[npm, "install", "--prefix", str(where), "--no-audit", "--no-fund", "--loglevel=error"]], log)

    return install("portkey", json.dumps(package, sort_keys=True), build)


class PeerProcess(gateway.Gateway):
    """A peer's server on a free loopback port, in its own session (its whole process group is stopped)."""

    def __init__(
        self,
        label: str,
        name: str,
        command: Callable[[int], list[str]],
        ready_path: str,
        env: Mapping[str, str],
        cwd: Path,
    ) -> None:
        self.label = label
        self.port = free_port()
        self._command = command
        self._ready_path = ready_path
        self._env = dict(env)
        self._cwd = cwd
        self._log_path = LOG_DIR / f"peer-{name}-{os.getpid()}-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def log_path(self) -> Path:
        return self._log_path

    def start(self) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self._command(self.port),
                cwd=self._cwd,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            if self._process.poll() is not None:
                tail = log_tail(self._log_path)
                last = tail.splitlines()[-1].strip() if tail else ""
                raise RuntimeError(
                    f"exited with code {self._process.returncode} before it was ready ({last[:120]})\n"
                    f"the end of its log ({self._log_path}):\n{tail}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready within {START_TIMEOUT_S} s (its log: {self._log_path})")
            time.sleep(POLL_S)

    def _ready(self) -> bool:
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", self._ready_path)
            return connection.getresponse().status < 500
        except OSError:
            return False
        finally:
            connection.close()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        for signum, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            if process.poll() is not None:
                break
            try:
                os.killpg(process.pid, signum)  # the group this process leads (start_new_session)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        if process.poll() is None:
            process.kill()
            process.wait()


def peer_env() -> dict[str, str]:
    """This environment without anything that would point a peer elsewhere (keys, AWS, proxies, a database)."""
    dropped = ("OPENAI_", "AWS_", "LITELLM_", "DATABASE_URL", "PORTKEY_", "HTTP_PROXY", "HTTPS_PROXY", "NODE_OPTIONS")
    return {key: value for key, value in os.environ.items() if not key.upper().startswith(dropped)}


def litellm(where: Path, upstream_base_url: str, scratch: Path) -> PeerProcess:
    master_key = "sk-bench-" + secrets.token_hex(16)
    config = scratch / "litellm-config.yaml"
    config.write_text(
        "model_list:\n"
        '  - model_name: "*"\n'
        "    litellm_params:\n"
        '      model: "openai/*"\n'
        f'      api_base: "{upstream_base_url}"\n'
        '      api_key: "sk-anything"\n'
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  set_verbose: false\n"
    )
    env = {
        **peer_env(),
        "LITELLM_MASTER_KEY": master_key,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list from the internet at start
        "LITELLM_LOG": "ERROR",
        "PYTHONUNBUFFERED": "1",
    }
    peer = PeerProcess(
        LITELLM_LABEL,
        "litellm",
        lambda port: [
            str(where / "bin" / "litellm"),
            *("--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"),
        ],
        "/health/liveliness",
        env,
        scratch,
    )
    peer.api_key = master_key
    return peer


def portkey(where: Path, upstream_base_url: str) -> PeerProcess:
    server = where / "node_modules" / PORTKEY_PACKAGE / "build" / "start-server.js"
    peer = PeerProcess(
        PORTKEY_LABEL,
        "portkey",
        lambda port: ["node", str(server), f"--port={port}", "--headless"],
        "/",
        peer_env(),
        where,
    )
    peer.headers = {"x-portkey-provider": "openai", "x-portkey-custom-host": upstream_base_url}
    return peer


def main() -> int:
    stop_on_sigterm()
    config = Config.from_env()
    print(machine_report(config))
    installers = {LITELLM_LABEL: install_litellm, PORTKEY_LABEL: install_portkey}
    installed: dict[str, Installed] = {}
    unavailable: dict[str, str] = {}
    for label, installer in installers.items():
        try:
            installed[label] = installer()
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            unavailable[label] = gateway.first_line(error)
            print(f"{label}: not installed: {error}")
    rows = [
        (label, str(done.where.relative_to(ROOT)), f"{done.seconds:.0f} s" if done.seconds else "cached", done.size_mib)
        for label, done in installed.items()
    ]
    print(table(("peer", "environment", "install time", "size MiB"), rows, "\nPeer environments"))
    with Stack() as stack, tempfile.TemporaryDirectory(prefix="lambda-chat-peers-") as scratch:
        peers: dict[str, gateway.Gateway] = {}
        if LITELLM_LABEL in installed:
            peers["litellm"] = litellm(installed[LITELLM_LABEL].where, stack.base_url, Path(scratch))
        if PORTKEY_LABEL in installed:
            peers["portkey"] = portkey(installed[PORTKEY_LABEL].where, stack.base_url)
        figures = gateway.run(stack, config, peers, unavailable)
    return 1 if "off_added_call_ms" not in figures else 0


if __name__ == "__main__":
    run_main(main)
