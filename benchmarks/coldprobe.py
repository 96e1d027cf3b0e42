"""What each cold-start child process runs (one variant per process), then reports on stdout:

    BENCH <ns since BENCH_T0_NS> <VmHWM KiB> <ru_maxrss KiB> <1 if the answer was right else 0>\t<phase>=<ns>;...

The parent takes BENCH_T0_NS from CLOCK_MONOTONIC (system-wide on Linux) just before it spawns the child, so
the figure runs from process start to the answer, exit excluded. Only cheap standard modules are imported at
the top: each variant imports what it needs inside its own function and pays for nothing else.

Peak RSS is reported twice: VmHWM (/proc/self/status, the peak of this process's own address space) and
getrusage's ru_maxrss. On Linux ru_maxrss survives exec: a child spawned by a larger parent reports at least
the parent's RSS at fork time, so only VmHWM is right for small children.
"""

from __future__ import annotations

import os
import resource
import sys
import time

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


def mark(phase: str) -> None:
    """Note the end of a phase (reported as ns since process start)."""
    _MARKS.append((phase, time.monotonic_ns()))


def vm_hwm_kib() -> int:
    """Peak resident set of this process's own address space (Linux), in KiB."""
    with open("/proc/self/status", encoding="ascii") as status:
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


def sdk() -> bool:
    """The SDK process: import openai, build a client, one chat.completions.create."""
    import openai

    mark("imported")
    client = openai.OpenAI(api_key="sk-benchmark", base_url=os.environ["OPENAI_BASE_URL"], max_retries=0)
    mark("client built")
    response = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
        temperature=0.7,
        max_tokens=200,
    )
    return bool(response.choices[0].message.content)


def floor() -> bool:
    """The floor: both SDKs, the key from Secrets Manager with boto3, a client, one request."""
    import boto3
    import openai

    mark("imported")
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=os.environ["OPENAI_API_KEY_SECRET_ID"])
    mark("secret read")
    client = openai.OpenAI(api_key=secret["SecretString"], base_url=os.environ["OPENAI_BASE_URL"], max_retries=0)
    mark("client built")
    response = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
        temperature=0.7,
        max_tokens=200,
    )
    return bool(response.choices[0].message.content)


def _first_request(module: str) -> bool:
    """Import a handler module (Lambda's init) and serve the API Gateway event once."""
    import importlib
    import json

    from local.context import FakeLambdaContext

    handler = importlib.import_module(module).lambda_handler
    mark("imported (module init)")
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
