"""Codex CLI and opencode (pinned in tests/node), run headless against an OpenAI-compatible base URL.

How each is configured and run, and the loopback proxy that refuses (and records) every attempt to reach the
internet: shared by tests/integration/test_cli_clients.py and tests/support/cli_demo.py, which run them the same way.
"""

from __future__ import annotations

import json
import os
import signal
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

NODE_BIN = Path(__file__).resolve().parent.parent / "node" / "node_modules" / ".bin"
CODEX, OPENCODE = NODE_BIN / "codex", NODE_BIN / "opencode"
DELTAS = ["Hello", " from", " the", " fake", " upstream", " through", " lambda-chat."]

CALLER_KEY = "sk-cli-side-never-forwarded"  # the key each CLI sends; the function sends its own upstream
CLI_SECONDS = 45  # a CLI that hangs fails the test instead


# -- the sentinel for outbound traffic -----------------------------------------------------------------------------


@dataclass
class Outbound:
    """A loopback HTTP proxy that answers every request 403 and records its first line (`CONNECT host:443 ...`)."""

    attempts: list[str] = field(default_factory=list)
    url: str = ""


@contextmanager
def refusing_proxy() -> Iterator[Outbound]:
    seen = Outbound()

    class Refuse(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            seen.attempts.append(self.rfile.readline(4096).decode(errors="replace").strip())
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Refuse)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    seen.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()


# -- running a CLI, isolated -------------------------------------------------------------------------------------------


def isolated_env(home: Path, proxy: str, **more: str) -> dict[str, str]:
    """A CLI's whole environment: a home of its own, XDG directories inside it, every proxy the sentinel."""
    env = {name: os.environ[name] for name in ("PATH", "LANG", "TMPDIR") if name in os.environ}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        NO_COLOR="1",
        TERM="dumb",
    )
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = proxy
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(more)
    return env


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def run_cli(command: list[str], env: dict[str, str], cwd: Path, timeout: float = CLI_SECONDS) -> Ran:
    """Run a CLI to its end, in a process group of its own, killed whole (the npm shim and the native binary it
    starts) if it runs past `timeout`."""
    started = time.monotonic()
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"{command[0]} ran past {timeout} s\nstdout: {stdout[-2000:]}\nstderr: {stderr[-4000:]}")
    return Ran(process.returncode, stdout, stderr, round(time.monotonic() - started, 1))


# -- Codex CLI ---------------------------------------------------------------------------------------------------------

CODEX_MODEL = "gpt-4.1-mini"


def codex_config(base_url: str) -> str:
    """$CODEX_HOME/config.toml: a provider given only a base URL, the Responses API and the key's variable."""
    return f"""\
model = "{CODEX_MODEL}"
model_provider = "lambda-chat"
check_for_update_on_startup = false

[model_providers.lambda-chat]
name = "lambda-chat"
base_url = "{base_url}"
wire_api = "responses"
env_key = "LAMBDA_CHAT_API_KEY"
# fail at once rather than back off and retry: a refusal is what the test must show
request_max_retries = 0
stream_max_retries = 0

[features]
plugins = false  # no curated plugin sync (github.com, api.github.com, chatgpt.com)

[analytics]
enabled = false

[otel]  # no telemetry export (Codex's default metrics go to ab.chatgpt.com)
exporter = "none"
trace_exporter = "none"
metrics_exporter = "none"
"""


def codex_command(prompt: str) -> list[str]:
    # --strict-config: a key this version does not know fails the run instead of being ignored
    return [str(CODEX), "exec", "--strict-config", "--skip-git-repo-check", "--ephemeral", "--color", "never", prompt]


def run_codex(base_url: str, home: Path, proxy: str, prompt: str = "Say hello.") -> Ran:
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text(codex_config(base_url))
    (home / "work").mkdir()
    env = isolated_env(home, proxy, CODEX_HOME=str(home / ".codex"), LAMBDA_CHAT_API_KEY=CALLER_KEY)
    return run_cli(codex_command(prompt), env, home / "work")


# -- opencode ----------------------------------------------------------------------------------------------------------

OPENCODE_MODEL = "gpt-4o-mini"


def opencode_config(base_url: str) -> dict[str, Any]:
    """opencode.json: the docs' minimal OpenAI-compatible provider, one model; plus no auto-update, no sharing."""
    return {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            "lambda-chat": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "lambda-chat",
                "options": {"baseURL": base_url, "apiKey": CALLER_KEY},
                "models": {OPENCODE_MODEL: {}},
            }
        },
        "autoupdate": False,
        "share": "disabled",
    }


# opencode installs `@opencode-ai/plugin` (the SDK for custom tools) into every config directory in the background,
# from the npm registry, unless the directory's package-lock.json lists it and node_modules exists. These runs use
# no custom tool: the temporary config directory says it has it. The provider package needs no install: opencode
# bundles `@ai-sdk/openai-compatible`.
OPENCODE_PLUGIN = {"dependencies": {"@opencode-ai/plugin": "1.18.33"}}

OPENCODE_ENV = {
    "OPENCODE_DISABLE_MODELS_FETCH": "1",  # models.dev's catalogue (models.opencode.ai)
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_PROJECT_CONFIG": "1",  # no opencode.json from the directories above the run's
    "OPENCODE_DISABLE_CLAUDE_CODE": "1",  # no ~/.claude
}


def run_opencode(base_url: str, home: Path, proxy: str, prompt: str = "Say hello.") -> Ran:
    config_dir = home / ".config" / "opencode"
    (config_dir / "node_modules").mkdir(parents=True)
    (config_dir / "package.json").write_text(json.dumps(OPENCODE_PLUGIN))
    (config_dir / "package-lock.json").write_text(json.dumps({"lockfileVersion": 3, "packages": {"": OPENCODE_PLUGIN}}))
    config = home / "opencode.json"
    config.write_text(json.dumps(opencode_config(base_url), indent=2))
    (home / "work").mkdir()
    env = isolated_env(home, proxy, OPENCODE_CONFIG=str(config), **OPENCODE_ENV)
    return run_cli([str(OPENCODE), "run", "--model", f"lambda-chat/{OPENCODE_MODEL}", prompt], env, home / "work")
