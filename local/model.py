"""A real OpenAI-compatible server on loopback: llama.cpp's server with a small Gemma 3 model.

`make model` builds llama-cpp-python (no wheel on PyPI) into .local/model-venv and
assembles the model file; this module only starts and stops the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from local.moto import free_port

ROOT = Path(__file__).resolve().parent.parent
MODEL_PYTHON = ROOT / ".local" / "model-venv" / "bin" / "python"
DEFAULT_MODEL_FILE = Path.home() / ".cache" / "lambda-chat" / "models" / "gemma-3-270m-q4_k_m.gguf"
MODEL_ALIAS = "gemma-3-270m"


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


class LocalModelServer:
    """`python -m llama_cpp.server` on 127.0.0.1; `base_url` is its OpenAI-compatible root."""

    def __init__(self, *, api_key: str | None = None, alias: str = MODEL_ALIAS) -> None:
        self.api_key = api_key
        self.alias = alias
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> LocalModelServer:
        missing = missing_parts()
        if missing:
            raise RuntimeError("the local model is not set up: " + "; ".join(missing))
        command = [
            str(MODEL_PYTHON), "-m", "llama_cpp.server",
            "--model", str(model_file()),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_threads", "2", "--n_ctx", "1024",
            "--model_alias", self.alias,
            # The .gguf carries no chat template; llama.cpp's fallback makes this model stop at once, and its
            # "gemma" format drops system messages. Alpaca keeps them and gets short, plausible answers.
            "--chat_format", "alpaca",
        ]  # fmt: skip
        if self.api_key:
            command += ["--api_key", self.api_key]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_until_ready(timeout)
        return self

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        request = urllib.request.Request(f"{self.base_url}/models")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with code {self._process.returncode}")
            try:
                with urllib.request.urlopen(request, timeout=1) as response:
                    if json.load(response).get("data"):
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"llama.cpp server not ready on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
