"""Check the artifact `sam build` made: `make check-artifact` (part of `make test`).

The deployed artifact is for arm64, which this x86_64 machine cannot run. So:
1. the arm64 artifact (.aws-sam/build/ChatFunction) is checked for what it holds: zipped
   size (target: at most 8 MiB), native modules all built for CPython 3.13 on aarch64,
   .pyc for every cold-start module, no aiohttp, no boto3 (the runtime provides it);
2. the same build recipe (src/Makefile) makes an x86_64 twin, which python3.13 then runs
   as Lambda would (the artifact first on sys.path, then boto3 as the runtime provides
   it): import, an API Gateway request with idempotency and tracing switched on, and an
   EventBridge event, against moto_server and a fake OpenAI server. It must answer 200,
   and import nothing from source that a cold start needs;
3. StreamingFunction's arm64 artifact (same recipe) gets the checks of 1, and must hold run.sh,
   executable, and the ASGI server: uvicorn (h11 protocol, asyncio loop) and click,
   imported from the artifact by python3.13 (all pure Python, so this machine can);
4. KeyAuthorizerFunction's artifact is its one module (standard library only), and answers a
   REQUEST authorizer event when python3.13 runs it;
5. StreamingFunction's x86_64 twin, built by the same recipe, starts on python3.13 as run.sh starts it
   (`-m lambda_chat.asgi`), answers its readiness check and streams a completion from the fake upstream.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ARM_ARTIFACT = ROOT / ".aws-sam" / "build" / "ChatFunction"
STREAMING_ARTIFACT = ROOT / ".aws-sam" / "build" / "StreamingFunction"
AUTHORIZER_ARTIFACT = ROOT / ".aws-sam" / "build" / "KeyAuthorizerFunction"
# Only StreamingFunction serves HTTP itself (src/Makefile: ASGI_SERVER).
ASGI_SERVER = ("uvicorn", "click")
TWIN = ROOT / ".aws-sam" / "x86-twin"
STREAMING_TWIN = ROOT / ".aws-sam" / "x86-streaming-twin"
RUNTIME_SIM = ROOT / ".aws-sam" / "runtime-sim"
PYTHON = os.environ.get("LAMBDA_PYTHON", "python3.13")
RUNTIME_BOTO3 = "boto3==1.44.8"
MAX_ZIPPED_MIB = 8.0

PROBE = r"""
import json, sys, time
started = time.perf_counter()
sys.path[:0] = [sys.argv[1]]
sys.path.append(sys.argv[2])
from local.context import FakeLambdaContext
import lambda_chat.handler as handler
event = json.load(open("events/apigateway-rest.json"))
event["headers"]["Idempotency-Key"] = "artifact-check"
first = handler.lambda_handler(event, FakeLambdaContext())
cold_ms = (time.perf_counter() - started) * 1000
second = handler.lambda_handler(event, FakeLambdaContext())
bridge = handler.lambda_handler(json.load(open("events/eventbridge.json")), FakeLambdaContext())
artifact = sys.argv[1] + "/"
from_source = sorted(
    m.__name__ for m in list(sys.modules.values())
    if (getattr(m, "__file__", None) or "").startswith(artifact) and m.__file__.endswith(".py")
    and not (getattr(m, "__cached__", None) and __import__("os").path.exists(m.__cached__))
)
print(json.dumps({
    "python": sys.version.split()[0],
    "first": first["statusCode"],
    "replayed": second["headers"].get("Idempotent-Replayed"),
    "eventbridge": bridge["success"],
    "cold_ms": round(cold_ms),
    "tracer": handler._service_at_init.tracing.tracer is not None,
    "from_source": from_source,
}))
"""


def zipped_mib(directory: Path) -> float:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(directory))
    return buffer.tell() / 1048576


def check_arm_artifact(artifact: Path = ARM_ARTIFACT, unwanted: tuple[str, ...] = ASGI_SERVER) -> list[str]:
    problems = []
    if not artifact.is_dir():
        return [f"{artifact} is missing: run `make build` first"]
    size = zipped_mib(artifact)
    native = sorted(p.name for p in artifact.rglob("*.so"))
    wrong = [name for name in native if "cpython-313-aarch64" not in name and "abi3" not in name]
    pyc = len(list(artifact.rglob("*.pyc")))
    print(f"arm64 {artifact.name}: {size:.2f} MiB zipped, {pyc} .pyc, native modules: {', '.join(native)}")
    if size > MAX_ZIPPED_MIB:
        problems.append(f"{artifact.name}: zipped artifact is {size:.2f} MiB, over {MAX_ZIPPED_MIB} MiB")
    if wrong:
        problems.append(f"{artifact.name}: native modules not built for cp313 aarch64: {wrong}")
    for package in ("aiohttp", "boto3", "botocore", *unwanted):
        if (artifact / package).exists():
            problems.append(f"{package} is inside the {artifact.name} artifact")
    return problems


STREAMING_PROBE = r"""
import importlib, json, sys
artifact = sys.argv[1]
sys.path.insert(0, artifact)
names = ["uvicorn", "uvicorn.main", "uvicorn.protocols.http.h11_impl", "uvicorn.loops.asyncio", "click", "h11"]
print(json.dumps({name: getattr(importlib.import_module(name), "__file__", "") or "" for name in names}))
"""


def check_streaming_artifact() -> list[str]:
    problems = check_arm_artifact(STREAMING_ARTIFACT, unwanted=())
    if not STREAMING_ARTIFACT.is_dir():
        return problems
    run_sh = STREAMING_ARTIFACT / "run.sh"
    if not run_sh.is_file():
        return [*problems, "run.sh (StreamingFunction's handler) is not in its artifact"]
    if run_sh.stat().st_mode & 0o111 != 0o111:
        problems.append(f"run.sh is not executable in the artifact (mode {run_sh.stat().st_mode & 0o777:o})")
    app = re.search(r"exec python3 -m ([\w.]+)\s*$", run_sh.read_text())
    if not run_sh.read_text().startswith("#!/bin/bash\n") or app is None:
        problems.append("run.sh does not exec the ASGI app's module (python3 -m ...) under #!/bin/bash")
    elif not (STREAMING_ARTIFACT / (app[1].replace(".", "/") + ".py")).is_file():
        problems.append(f"{app[1]}, the module run.sh runs, is not in the StreamingFunction artifact")
    result = subprocess.run(
        [PYTHON, "-I", "-B", "-c", STREAMING_PROBE, str(STREAMING_ARTIFACT)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        return [*problems, f"the ASGI server does not import from its artifact:\n{result.stderr[-2000:]}"]
    files: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    outside = sorted(name for name, path in files.items() if not path.startswith(f"{STREAMING_ARTIFACT}/"))
    print(f"StreamingFunction: run.sh executable, {len(files) - len(outside)} of {len(files)} ASGI server modules "
          "import from the artifact")  # fmt: skip
    if outside:
        problems.append(f"ASGI server modules imported from outside the StreamingFunction artifact: {outside}")
    return problems


AUTHORIZER_PROBE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import lambda_chat.authorizer as authorizer
event = {"type": "REQUEST", "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abc/Prod/POST/chat",
         "headers": {"Authorization": "Bearer artifact-check"}}
answer = authorizer.handler(event, None)
print(json.dumps({"key": answer["usageIdentifierKey"], "file": authorizer.__file__}))
"""


def check_authorizer_artifact() -> list[str]:
    if not AUTHORIZER_ARTIFACT.is_dir():
        return [f"{AUTHORIZER_ARTIFACT} is missing: run `make build` first"]
    sources = sorted(str(p.relative_to(AUTHORIZER_ARTIFACT)) for p in AUTHORIZER_ARTIFACT.rglob("*.py"))
    problems = []
    if sources != ["lambda_chat/__init__.py", "lambda_chat/authorizer.py"]:
        problems.append(f"KeyAuthorizerFunction should ship lambda_chat/authorizer.py alone, not {sources}")
    result = subprocess.run(
        [PYTHON, "-I", "-B", "-c", AUTHORIZER_PROBE, str(AUTHORIZER_ARTIFACT)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        return [*problems, f"the authorizer does not run from its artifact:\n{result.stderr[-2000:]}"]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"KeyAuthorizerFunction: {zipped_mib(AUTHORIZER_ARTIFACT) * 1024:.1f} KiB zipped, {len(sources)} modules")
    if report["key"] != "artifact-check" or not report["file"].startswith(f"{AUTHORIZER_ARTIFACT}/"):
        problems.append(f"the authorizer in its artifact did not answer as expected: {report}")
    return problems


def build_twin(function: str = "ChatFunction", twin: Path = TWIN) -> None:
    shutil.rmtree(twin, ignore_errors=True)
    twin.mkdir(parents=True)
    subprocess.run(
        ["make", "--no-print-directory", "-C", "src", f"build-{function}", f"ARTIFACTS_DIR={twin}",
         "PLATFORM=manylinux2014_x86_64", f"PYTHON={PYTHON}"],
        cwd=ROOT, check=True,
    )  # fmt: skip
    if not (RUNTIME_SIM / "boto3").exists():
        subprocess.run(
            [PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--root-user-action=ignore",
             "--target", str(RUNTIME_SIM), RUNTIME_BOTO3],
            check=True, stderr=subprocess.DEVNULL,
        )  # fmt: skip


@contextmanager
def twin_backends() -> Iterator[tuple[dict[str, str], Any]]:
    """moto_server and the fake upstream, and the environment a twin runs in against them."""
    from local.moto import MotoServer
    from tests.support.fake_openai import FakeOpenAI

    moto, upstream = MotoServer().start(), FakeOpenAI().start()
    try:
        moto.secrets_client().create_secret(Name="artifact-check", SecretString="sk-artifact")
        moto.create_idempotency_table("artifact-check")
        moto.create_budget_table("artifact-check-budgets")  # budgets on (the default): on the cold path
        upstream.required_key = "sk-artifact"
        yield (
            {
                "PATH": os.environ["PATH"],
                "HOME": os.environ.get("HOME", "/tmp"),
                "PYENV_VERSION": os.environ.get("PYENV_VERSION", ""),
                **moto.env(),
                "PYTHONPATH": str(ROOT),  # for local.context only; the function comes from the twin
                "OPENAI_BASE_URL": upstream.base_url,
                "OPENAI_API_KEY_SECRET_ID": "artifact-check",
                "IDEMPOTENCY_TABLE": "artifact-check",
                "BUDGET_TABLE": "artifact-check-budgets",
                "TRACING_ENABLED": "true",
                "POWERTOOLS_SERVICE_NAME": "lambda-chat",
                "LOG_LEVEL": "WARNING",
            },
            upstream,
        )
    finally:
        moto.stop()
        upstream.stop()


def run_twin() -> dict[str, object]:
    with twin_backends() as (env, _):
        result = subprocess.run(
            # -B: write no cache into the twin (Lambda's code directory is read-only), so a module the build
            # failed to precompile shows up as compiled from source on every run
            [PYTHON, "-I", "-B", "-c", "import sys; sys.path.insert(0, '.'); exec(sys.argv[3])",
             str(TWIN), str(RUNTIME_SIM), PROBE],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"the x86_64 twin failed:\n{result.stderr[-3000:]}")
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def run_streaming_twin() -> list[str]:
    """StreamingFunction's x86_64 twin, started as run.sh starts it (python3.13 -m lambda_chat.asgi), streams."""
    import httpx2

    from local.moto import free_port

    build_twin("StreamingFunction", STREAMING_TWIN)
    port = free_port()
    launcher = (
        "import runpy, sys; sys.path[:0] = sys.argv[1:3]; runpy.run_module('lambda_chat.asgi', run_name='__main__')"
    )
    with twin_backends() as (env, upstream):
        started = time.monotonic()
        app = subprocess.Popen(
            [PYTHON, "-I", "-B", "-c", launcher, str(STREAMING_TWIN), str(RUNTIME_SIM)],
            cwd=ROOT, env={**env, "PORT": str(port), "TRACING_ENABLED": "false"},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            lines = _stream_once(httpx2, f"http://127.0.0.1:{port}", app)
            first_chunk_ms = (time.monotonic() - started) * 1000
        finally:
            app.terminate()
            _, stderr = app.communicate(timeout=10)
        chunks = [line for line in lines if line.startswith("data: {")]
    print(f"StreamingFunction x86_64 twin on python3.13: {len(chunks)} chunks then {lines[-1] if lines else None!r}, "
          f"{first_chunk_ms:.0f} ms from spawn to the whole stream")  # fmt: skip
    if not lines or lines[-1] != "data: [DONE]" or len(chunks) < 3 or upstream.received[-1].json["stream"] is not True:
        return [f"the streaming twin did not stream as expected: {lines[-3:]}\n{stderr[-2000:]}"]
    return []


def _stream_once(httpx2: Any, root: str, app: subprocess.Popen[str]) -> list[str]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and app.poll() is None:
        try:
            if httpx2.get(f"{root}/healthz", timeout=1).status_code == 200:
                break
        except httpx2.TransportError:
            time.sleep(0.02)
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx2.stream("POST", f"{root}/v1/chat/completions", json=body, timeout=30) as response:
        return [line for line in response.iter_lines() if line]


def main() -> int:
    problems = check_arm_artifact() + check_streaming_artifact() + check_authorizer_artifact()
    build_twin()
    problems += run_streaming_twin()
    report = run_twin()
    print(
        f"x86_64 twin on Python {report['python']}: " + json.dumps({k: v for k, v in report.items() if k != "python"})
    )
    if report["first"] != 200 or report["replayed"] != "true" or report["eventbridge"] is not True:
        problems.append(f"the twin did not answer as expected: {report}")
    if not report["tracer"]:
        problems.append("tracing was switched on but no tracer was built")
    if report["from_source"]:
        problems.append(f"cold start compiled modules from source (run `make cold-modules`): {report['from_source']}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("artifact check: " + ("passed" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
