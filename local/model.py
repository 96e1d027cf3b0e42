"""A real OpenAI-compatible server on loopback: llama.cpp's server with a small Gemma 3 model.

`make model` builds llama-cpp-python (no wheel on PyPI) into .local/model-venv and
assembles the model file; this module only starts and stops the server.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.request
from pathlib import Path

from local.moto import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
MODEL_PYTHON = ROOT / ".local" / "model-venv" / "bin" / "python"
DEFAULT_MODEL_FILE = Path.home() / ".cache" / "lambda-chat" / "models" / "gemma-3-270m-q4_k_m.gguf"
MODEL_ALIAS = "gemma-3-270m"
# llama_cpp.server takes every setting from the environment too (pydantic-settings, any case): HOST and PORT
# over its command line, CONFIG_FILE instead of it, and CACHE, VERBOSE, SEED, ... wherever we pass none (so
# `make run CACHE=...`, which exports CACHE, stopped it with "cache: Input should be a valid boolean"). It
# gets only what a process needs to run.
SERVER_ENV_NAMES = frozenset({"PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "TZ", "LANG", "TERM"})
SERVER_ENV_PREFIXES = ("LC_", "PYTHON", "LD_", "OMP_", "GGML_")


def model_file() -> Path:
    return Path(os.environ.get("LAMBDA_CHAT_MODEL_FILE") or DEFAULT_MODEL_FILE)


def missing_parts() -> list[str]:
    """What `make model` has not provided yet (empty when the server can start)."""
    missing = []
    if not MODEL_PYTHON.exists():
        missing.append(f"{MODEL_PYTHON} (run `make model`)")
    if not model_file().exists():
        missing.append(f"{model_file()} (run `make model`)")
    return missing


def server_env() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if name in SERVER_ENV_NAMES or name.startswith(SERVER_ENV_PREFIXES)
    }


class LocalModelServer:
    """`python -m llama_cpp.server` on 127.0.0.1; `base_url` is its OpenAI-compatible root, `log_path` its output."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        alias: str = MODEL_ALIAS,
        log_dir: Path | None = None,
        embedding: bool = False,
    ) -> None:
        self.api_key = api_key
        self.alias = alias
        self.embedding = embedding  # serve /v1/embeddings (llama.cpp's embedding mode)
        self._server = ServerProcess("llama-cpp-server", log_dir)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def log_path(self) -> Path:
        return self._server.log_path

    def command(self, port: int) -> list[str]:
        command = [
            str(MODEL_PYTHON), "-m", "llama_cpp.server",
            "--model", str(model_file()),
            "--host", "127.0.0.1", "--port", str(port),
            "--n_threads", "2", "--n_ctx", "1024",
            "--model_alias", self.alias,
            # The .gguf carries no chat template; llama.cpp's fallback makes this model stop at once, and its
            # "gemma" format drops system messages. Alpaca keeps them and gets short, plausible answers.
            "--chat_format", "alpaca",
        ]  # fmt: skip
        if self.embedding:
            command += ["--embedding", "true"]
        if self.api_key:
            # One argument: as `--api_key KEY`, argparse takes a key that starts with "-" (1 in 64 of
            # secrets.token_urlsafe's) for an option and the server exits with code 2.
            command.append(f"--api_key={self.api_key}")
        return command

    def start(self, timeout: float = 120) -> LocalModelServer:
        missing = missing_parts()
        if missing:
            raise RuntimeError("the local model is not set up: " + "; ".join(missing))
        self._server.start(self.command, self._serves_models, timeout=timeout, env=server_env())
        return self

    def _serves_models(self, port: int) -> bool:
        """GET /v1/models lists the model: it is loaded (the server loads it before it listens) and our key works."""
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return bool(json.load(response).get("data"))
        except (OSError, http.client.HTTPException, ValueError):  # not listening yet, 401, cut off, not JSON
            return False

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
