"""The JavaScript clients in tests/node (the openai npm package, the Vercel AI SDK): running one, reading its output."""

from __future__ import annotations

import json
import select
import subprocess
from pathlib import Path
from typing import Any

NODE_CLIENTS = Path(__file__).resolve().parent.parent / "node"
PACKAGES = ("openai", "ai", "@ai-sdk/openai-compatible")


def node_command(script: str, base_url: str, *options: str) -> list[str]:
    missing = [name for name in PACKAGES if not (NODE_CLIENTS / "node_modules" / name).is_dir()]
    assert not missing, f"{missing} not installed: run `make test` (it installs tests/node)"
    return ["node", script, base_url, *options]


def first_line(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"the client printed nothing in {timeout} s"
    seen: dict[str, Any] = json.loads(process.stdout.readline())
    return seen
