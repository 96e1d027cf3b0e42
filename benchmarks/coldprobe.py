"""What each cold-start child process runs (one variant per process), then reports on stdout:

    BENCH <ns since BENCH_T0_NS> <VmHWM KiB> <ru_maxrss KiB> <1 if the answer was right else 0>\t<phase>=<ns>;...

The parent takes BENCH_T0_NS from CLOCK_MONOTONIC (system-wide on Linux) just before it spawns the child, so
the figure runs from process start to the answer, exit excluded. Only cheap standard modules are imported at
the top: each variant imports what it needs inside its own function and pays for nothing else.

Peak RSS is reported twice: VmHWM (/proc/self/status, the peak of this process's own address space) and
getrusage's ru_maxrss. On Linux ru_maxrss survives exec: a child spawned by a larger parent reports at least
the parent's RSS at fork time, so only VmHWM is right for small children.

A child run in the built artifact's layout (benchmarks.artifact_cold_start) then calls `layout_report`, which
checks where the modules came from and reports how they were loaded (after the answer, not timed).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Any

EVENT_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "events", "apigateway-rest.json")
MESSAGES = [
    {"role": "system", "content": "You are a concise poet."},
    {"role": "user", "content": "Write a haiku about serverless functions."},
]
# The one-liner for the bare interpreter: the same report, nothing imported beyond os, time and resource.
BARE_CODE = (
    "import os,time,resource;"
    "t=time.monotonic_ns()-int(os.environ['BENCH_T0_NS']);"
    "h=[l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0];"
    "print('BENCH',t,h,resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,1,flush=True)"
)


_MARKS: list[tuple[str, int]] = []
INIT_PHASE = "imported (module init)"  # a handler's init is over


def mark(phase: str) -> None:
    """Note the end of a phase (reported as ns since process start)."""
    _MARKS.append((phase, time.monotonic_ns()))


def vm_hwm_kib(pid: int | str = "self") -> int:
    """Peak resident set of a process's own address space (Linux; this one by default), in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def report(ok: bool) -> None:
    start = int(os.environ["BENCH_T0_NS"])
    elapsed_ns = time.monotonic_ns() - start
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    phases = ";".join(f"{phase}={at - start}" for phase, at in _MARKS)
    sys.stdout.write(f"\nBENCH {elapsed_ns} {vm_hwm_kib()} {maxrss_kib} {int(ok)}\t{phases}\n")
    sys.stdout.flush()


def _ask(client: Any) -> bool:
    """The one request both SDK-only variants make."""
    response = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        temperature=0.7,
        max_tokens=200,
    )
    return bool(response.choices[0].message.content)


def sdk() -> bool:
    """The SDK process: import openai, build a client, one chat.completions.create."""
    import openai

    mark("imported")
    client = openai.OpenAI(api_key="sk-benchmark", base_url=os.environ["OPENAI_BASE_URL"], max_retries=0)
    mark("client built")
    return _ask(client)


def floor() -> bool:
    """The floor: both SDKs, the key from Secrets Manager with boto3, a client, one request."""
    import boto3
    import openai

    mark("imported")
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=os.environ["OPENAI_API_KEY_SECRET_ID"])
    mark("secret read")
    client = openai.OpenAI(api_key=secret["SecretString"], base_url=os.environ["OPENAI_BASE_URL"], max_retries=0)
    mark("client built")
    return _ask(client)


def _first_request(module: str) -> bool:
    """Import a handler module (Lambda's init) and serve the API Gateway event once."""
    import importlib
    import json

    from local.context import FakeLambdaContext

    handler = importlib.import_module(module).lambda_handler
    mark(INIT_PHASE)
    with open(EVENT_FILE, encoding="utf-8") as file:
        event = json.load(file)
    result = handler(event, FakeLambdaContext())
    return bool(result.get("statusCode") == 200 and json.loads(result["body"]).get("success"))


def handler() -> bool:
    return _first_request("lambda_chat.handler")


def naive() -> bool:
    return _first_request("benchmarks.naive_handler")


VARIANTS = {"sdk": sdk, "floor": floor, "handler": handler, "naive": naive}


def main(variant: str) -> None:
    mark("interpreter up")
    report(VARIANTS[variant]())


def _loaded_files() -> dict[str, str]:
    return {name: file for name, module in list(sys.modules.items()) if (file := getattr(module, "__file__", None))}


def _under(path: str, root: str) -> bool:
    return path.startswith(os.path.join(root, ""))


def layout_report(layout: str, runtime: str) -> None:
    """For a child run in an artifact layout (benchmarks.artifact_cold_start), after the answer (not timed).

    Fails (AssertionError, exit 1) unless openai (and lambda_chat, if imported) came from `layout`, boto3 (if
    imported) from `runtime`, and every other module from those two, this probe's own files or the interpreter's
    standard library (never a site-packages). Then reports how the layout's modules were loaded:

        LAYOUT <sourceless .pyc> <from __pycache__> <compiled from source> <native>\t<compiled file>,...

    (the files compiled, relative to the layout).
    """
    files = _loaded_files()
    probe = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert _under(files.get("openai", ""), layout), f"openai is not from {layout}: {files.get('openai')}"
    if "lambda_chat" in files:
        assert _under(files["lambda_chat"], layout), f"lambda_chat is not from {layout}: {files['lambda_chat']}"
    if "boto3" in files:
        assert _under(files["boto3"], runtime), f"boto3 is not from {runtime}: {files['boto3']}"
    stdlib = os.path.join(sys.base_prefix, "lib")
    outside = sorted(
        f"{name} ({file})"
        for name, file in files.items()
        if not any(_under(file, root) for root in (layout, runtime, probe))
        and not (_under(file, stdlib) and "site-packages" not in file)
    )
    assert not outside, f"modules from outside the artifact layout: {outside[:10]}"
    sourceless, cached, native, compiled = 0, 0, 0, []
    for name, file in files.items():
        if not _under(file, layout):
            continue
        if file.endswith(".pyc"):
            sourceless += 1
        elif not file.endswith(".py"):
            native += 1
        elif os.path.exists(getattr(sys.modules[name], "__cached__", None) or ""):
            cached += 1
        else:
            compiled.append(os.path.relpath(file, layout))
    sys.stdout.write(f"LAYOUT {sourceless} {cached} {len(compiled)} {native}\t{','.join(sorted(compiled))}\n")
    sys.stdout.flush()
