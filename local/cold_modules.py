"""List the modules a cold start imports, for the build to ship them precompiled: `make cold-modules`.

Runs the real handler in a fresh interpreter (import with tracing on and budgets on, a first API Gateway
request with idempotency, an EventBridge event), then the streaming function's ASGI app under
uvicorn (one streamed and one whole answer), against moto_server and a fake OpenAI server, and
writes the files of every imported module (relative to site-packages or src/) to
src/cold_modules.txt. src/Makefile ships those as .pyc only (sourceless), which keeps
the zipped artifact under 8 MiB while the cold path never compiles; every other module
stays as source. Modules the Lambda runtime provides (boto3, botocore, s3transfer) are
left out, as they are left out of the artifact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "src" / "cold_modules.txt"
PROVIDED_BY_RUNTIME = ("boto3/", "botocore/", "s3transfer/")

PROBE = r"""
import json, sys, sysconfig
from pathlib import Path
from local.invoke import invoke
event = json.load(open("events/apigateway-rest.json"))
event["headers"]["Idempotency-Key"] = "cold-modules"
assert invoke(event)["statusCode"] == 200
assert invoke(json.load(open("events/eventbridge.json")))["success"] is True
import httpx2
from local.serve import serving_in_background
with serving_in_background() as root:
    chat = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx2.stream("POST", f"{root}/v1/chat/completions", json=chat) as streamed:
        assert streamed.status_code == 200 and list(streamed.iter_lines())[-2] == "data: [DONE]"
    assert httpx2.post(f"{root}/v1/chat/completions", json={**chat, "stream": False}).status_code == 200
paths = sysconfig.get_paths()
roots = {str(Path(p).resolve()) + "/" for p in (paths["purelib"], paths["platlib"], "src")}
files = set()
for module in list(sys.modules.values()):
    path = str(Path(module.__file__).resolve()) if getattr(module, "__file__", None) else ""
    for root in roots:
        if path.startswith(root) and path.endswith(".py"):
            files.add(path[len(root):])
print(json.dumps(sorted(files)))
"""


def imported_files() -> list[str]:
    from local.moto import MotoServer
    from tests.support.fake_openai import FakeOpenAI

    moto, upstream = MotoServer().start(), FakeOpenAI().start()
    try:
        moto.secrets_client().create_secret(Name="cold-modules", SecretString="sk-cold")
        moto.create_idempotency_table("cold-modules")
        moto.create_budget_table("cold-modules-budgets")  # budgets on (the default): on the cold path
        upstream.required_key = "sk-cold"
        env = {
            **os.environ,
            **moto.env(),
            "PYTHONPATH": f"src{os.pathsep}.",
            "OPENAI_BASE_URL": upstream.base_url,
            "OPENAI_API_KEY_SECRET_ID": "cold-modules",
            "IDEMPOTENCY_TABLE": "cold-modules",
            "BUDGET_TABLE": "cold-modules-budgets",
            "TRACING_ENABLED": "true",  # optional, but precompiled too: switching it on must not slow cold starts
            "LOG_LEVEL": "WARNING",
        }
        result = subprocess.run(
            [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
    finally:
        moto.stop()
        upstream.stop()
    files: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return [f for f in files if not f.startswith(PROVIDED_BY_RUNTIME)]


def main() -> int:
    files = imported_files()
    OUTPUT.write_text(
        "# Written by `make cold-modules` (local/cold_modules.py): what a cold start imports, shipped as .pyc.\n"
        + "\n".join(files)
        + "\n"
    )
    print(f"{len(files)} modules written to {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
