"""A smoke test of a deployed stack after `sam deploy` (`make smoke STACK=<name>`), or of `make serve` (URL=...).

    make smoke STACK=lambda-chat                  # the stack's outputs and its API key, with your AWS credentials
    make smoke URL=http://127.0.0.1:3000          # a running `make serve` (it checks no API key)
    make smoke STACK=lambda-chat SKIP=responses   # leave a check out (chat, stream, responses, wrong-key)

With STACK it reads the stack's outputs (CloudFormation DescribeStacks): ChatApiUrl, OpenAICompatibleBaseUrl and
ApiKeyId, and the key's value from API Gateway (GetApiKey with includeValue, as `aws apigateway get-api-key
--include-value` does); SMOKE_API_KEY in the environment gives the key instead. Then it sends four calls:

- POST /chat, the envelope contract, with the key as `x-api-key`;
- POST /v1/chat/completions streamed, with the key as `Authorization: Bearer`: the chunks must arrive spread in
  time (several bursts, at least --min-spread-ms between the first and the last), not all at once;
- POST /v1/responses with `store: false` (`make serve` on the local model has no Responses API: SKIP=responses);
- GET /v1/models with a wrong key: API Gateway must refuse it (401 or 403). Not applicable where no key is
  checked (URL without SMOKE_API_KEY, as for `make serve`).

It prints a table of statuses and timings and exits 1 if any check failed (2 if the target cannot be read).
It creates nothing (no stored response, no idempotency record) and asks for a few dozen tokens per call, on the
stack's default model unless --model names another; each call is metered and counted in the budget table like
any other.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx2

NAMES = {  # each check, by the name SKIP takes, and its line in the table
    "chat": "POST /chat",
    "stream": "POST /v1/chat/completions (stream)",
    "responses": "POST /v1/responses",
    "wrong-key": "GET /v1/models (wrong key)",
}
CHECKS = tuple(NAMES)
CHAT_MAX_TOKENS = 16
STREAM_MAX_TOKENS = 48
RESPONSES_MAX_TOKENS = 16  # OpenAI's smallest max_output_tokens
MIN_CHUNKS = 3  # a stream of fewer chunks says nothing about spread
MIN_BURSTS = 3  # arrivals more than BURST_GAP_S apart; a buffered answer arrives in one or two
BURST_GAP_S = 0.005
MIN_SPREAD_MS = 50.0
TIMEOUT_S = 60.0
REFUSED = (401, 403)


@dataclass(frozen=True)
class Target:
    """Where the calls go: the /chat URL, the /v1 base URL, and the API key (None where no key is checked)."""

    name: str
    chat_url: str
    v1_url: str
    api_key: str | None = None


@dataclass(frozen=True)
class Row:
    """One check's line of the table; `result` is "ok", "FAIL", "n/a" or "skipped"."""

    check: str
    result: str
    status: int | None = None
    seconds: float | None = None
    detail: str = ""
    tokens: int | None = None
    first_chunk: float | None = None  # the stream only: seconds to its first chunk,
    chunks: int | None = None  # its number of chunks,
    spread: float | None = None  # and seconds between its first and last chunk

    @property
    def failed(self) -> bool:
        return self.result == "FAIL"


# -- the target ------------------------------------------------------------------------------------------------


def stack_outputs(stack: str, cloudformation: Any = None) -> dict[str, str]:
    """The stack's outputs by key (DescribeStacks); SystemExit when the stack cannot be read."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = cloudformation or boto3.client("cloudformation")
    try:
        described = client.describe_stacks(StackName=stack)["Stacks"][0]
    except (ClientError, BotoCoreError) as exc:
        raise SystemExit(f"cannot read stack {stack}: {exc}") from None
    return {output["OutputKey"]: output["OutputValue"] for output in described.get("Outputs", [])}


def api_key_value(key_id: str, apigateway: Any = None) -> str:
    """The API key's value (GetApiKey with includeValue), as `aws apigateway get-api-key --include-value`."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = apigateway or boto3.client("apigateway")
    try:
        return str(client.get_api_key(apiKey=key_id, includeValue=True)["value"])
    except (ClientError, BotoCoreError, KeyError) as exc:
        raise SystemExit(f"cannot read the value of API key {key_id} (or set SMOKE_API_KEY): {exc}") from None


def target_from_stack(
    stack: str, *, api_key: str | None = None, cloudformation: Any = None, apigateway: Any = None
) -> Target:
    """The deployed API of `stack`: its ChatApiUrl and OpenAICompatibleBaseUrl outputs, and its key's value."""
    outputs = stack_outputs(stack, cloudformation)
    missing = [key for key in ("ChatApiUrl", "OpenAICompatibleBaseUrl", "ApiKeyId") if key not in outputs]
    if missing:
        raise SystemExit(f"stack {stack} has no output {', '.join(missing)}: is it a lambda-chat stack?")
    key = api_key or api_key_value(outputs["ApiKeyId"], apigateway)
    return Target(f"stack {stack}", outputs["ChatApiUrl"], outputs["OpenAICompatibleBaseUrl"].rstrip("/"), key)


def target_from_url(url: str, *, api_key: str | None = None) -> Target:
    """An API at a root URL (`make serve`'s, or a stage's): /chat and /v1 under it."""
    root = url.rstrip("/")
    return Target(root, f"{root}/chat", f"{root}/v1", api_key)


# -- the checks ------------------------------------------------------------------------------------------------


def error_text(response: httpx2.Response) -> str:
    """The error a response carries: OpenAI's `error.message`, the envelope's `error`, or API Gateway's `message`."""
    try:
        document = response.json()
    except ValueError:
        return response.text[:120]
    if isinstance(document, dict):
        error = document.get("error")
        if isinstance(error, dict):
            return str(error.get("message"))[:120]
        if error:
            return str(error)[:120]
        if "message" in document:
            return str(document["message"])[:120]
    return json.dumps(document)[:120]


def preview(text: str | None, length: int = 40) -> str:
    """A short, one-line quote of what the model wrote."""
    flat = " ".join((text or "").split())
    return json.dumps(flat if len(flat) <= length else flat[: length - 3] + "...", ensure_ascii=False)


def timed(call: Callable[[], httpx2.Response]) -> tuple[httpx2.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def key_headers(target: Target, style: str) -> dict[str, str]:
    """The key as API Gateway takes it: `x-api-key`, or `Authorization: Bearer` (what OpenAI clients send)."""
    if target.api_key is None:
        return {}
    if style == "x-api-key":
        return {"x-api-key": target.api_key}
    return {"authorization": f"Bearer {target.api_key}"}


def with_model(body: dict[str, Any], model: str | None) -> dict[str, Any]:
    return {**body, "model": model} if model else body


def check_chat(client: httpx2.Client, target: Target, model: str | None = None) -> Row:
    """POST /chat: a 200 envelope with `success: true`."""
    name = NAMES["chat"]
    body = with_model({"prompt": "Say hello in five words.", "max_tokens": CHAT_MAX_TOKENS}, model)
    response, seconds = timed(lambda: client.post(target.chat_url, json=body, headers=key_headers(target, "x-api-key")))
    if response.status_code != 200:
        return Row(name, "FAIL", response.status_code, seconds, f"expected 200: {error_text(response)}")
    envelope = response.json()
    tokens = (envelope.get("usage") or {}).get("total_tokens")
    if envelope.get("success") is not True:
        return Row(name, "FAIL", 200, seconds, f"success is not true: {envelope.get('error')}", tokens)
    return Row(name, "ok", 200, seconds, f"completion {preview(envelope.get('completion'))}", tokens)


@dataclass
class Stream:
    """What a server-sent stream delivered: each chunk's arrival (seconds from the request), and its text."""

    arrivals: list[float]
    text: str = ""
    tokens: int | None = None
    done: bool = False
    error: str | None = None

    @property
    def spread(self) -> float:
        return self.arrivals[-1] - self.arrivals[0] if self.arrivals else 0.0

    @property
    def bursts(self) -> int:
        """How many times chunks arrived after a pause: 1 when they all came together."""
        gaps = (later - earlier for earlier, later in zip(self.arrivals, self.arrivals[1:], strict=False))
        return (1 if self.arrivals else 0) + sum(gap > BURST_GAP_S for gap in gaps)


def read_stream(lines: Iterable[str], started: float) -> Stream:
    """The chunks of a chat completion stream (`data:` lines up to `[DONE]`), timed as they arrive."""
    stream = Stream([])
    for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            stream.done = True
            break
        stream.arrivals.append(time.monotonic() - started)
        chunk = json.loads(payload)
        if "error" in chunk:
            stream.error = str((chunk["error"] or {}).get("message"))
            break
        for choice in chunk.get("choices") or []:
            stream.text += (choice.get("delta") or {}).get("content") or ""
        if chunk.get("usage"):
            stream.tokens = chunk["usage"].get("total_tokens")
    return stream


def stream_verdict(stream: Stream, min_spread_ms: float) -> str | None:
    """Why the stream fails the check, or None: it must end, and its chunks must arrive spread in time."""
    if stream.error is not None:
        return f"error event mid-stream: {stream.error}"
    if not stream.done:
        return "the stream ended without [DONE]"
    if len(stream.arrivals) < MIN_CHUNKS:
        return f"only {len(stream.arrivals)} chunks: too few to judge (at least {MIN_CHUNKS})"
    if stream.bursts < MIN_BURSTS or stream.spread * 1000 < min_spread_ms:
        return (
            f"not streamed: {len(stream.arrivals)} chunks arrived in {stream.bursts} burst(s) within "
            f"{stream.spread * 1000:.0f} ms (want {MIN_BURSTS}+ bursts over {min_spread_ms:.0f}+ ms)"
        )
    return None


def check_stream(
    client: httpx2.Client, target: Target, model: str | None = None, min_spread_ms: float = MIN_SPREAD_MS
) -> Row:
    """POST /v1/chat/completions with `stream: true` and a Bearer key: chunks that arrive spread in time."""
    name = NAMES["stream"]
    body = with_model(
        {
            "messages": [{"role": "user", "content": "Count from 1 to 20, separated by spaces."}],
            "max_tokens": STREAM_MAX_TOKENS,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        model,
    )
    headers = key_headers(target, "bearer")
    started = time.monotonic()
    with client.stream("POST", f"{target.v1_url}/chat/completions", json=body, headers=headers) as response:
        if response.status_code != 200:
            response.read()
            seconds = time.monotonic() - started
            return Row(name, "FAIL", response.status_code, seconds, f"expected 200: {error_text(response)}")
        stream = read_stream(response.iter_lines(), started)
    seconds = time.monotonic() - started
    figures = {
        "tokens": stream.tokens,
        "first_chunk": stream.arrivals[0] if stream.arrivals else None,
        "chunks": len(stream.arrivals),
        "spread": stream.spread,
    }
    problem = stream_verdict(stream, min_spread_ms)
    if problem is not None:
        return Row(name, "FAIL", 200, seconds, problem, **figures)
    detail = f"{stream.bursts} bursts; text {preview(stream.text)}"
    return Row(name, "ok", 200, seconds, detail, **figures)


def check_responses(client: httpx2.Client, target: Target, model: str | None = None) -> Row:
    """POST /v1/responses, not stored: a 200 response object."""
    name = NAMES["responses"]
    body = with_model(
        {"input": "Say hello in five words.", "max_output_tokens": RESPONSES_MAX_TOKENS, "store": False}, model
    )
    url = f"{target.v1_url}/responses"
    response, seconds = timed(lambda: client.post(url, json=body, headers=key_headers(target, "bearer")))
    if response.status_code != 200:
        return Row(name, "FAIL", response.status_code, seconds, f"expected 200: {error_text(response)}")
    document = response.json()
    tokens = (document.get("usage") or {}).get("total_tokens")
    if document.get("object") != "response":
        return Row(name, "FAIL", 200, seconds, f"not a response object: {json.dumps(document)[:80]}", tokens)
    texts = [
        part.get("text", "")
        for item in document.get("output") or []
        for part in item.get("content") or []
        if isinstance(part, dict)
    ]
    return Row(name, "ok", 200, seconds, f"{document.get('status')}; text {preview(''.join(texts))}", tokens)


def check_wrong_key(client: httpx2.Client, target: Target) -> Row:
    """GET /v1/models with a key nobody has: refused (401 or 403). It costs nothing even if it were let in."""
    name = NAMES["wrong-key"]
    if target.api_key is None:
        return Row(name, "n/a", detail="no key to check (make serve checks none; for a stage URL set SMOKE_API_KEY)")
    wrong = f"smoke-wrong-{secrets.token_urlsafe(16)}"
    url = f"{target.v1_url}/models"
    response, seconds = timed(lambda: client.get(url, headers={"authorization": f"Bearer {wrong}"}))
    if response.status_code not in REFUSED:
        return Row(name, "FAIL", response.status_code, seconds, "a wrong key was not refused (want 401 or 403)")
    return Row(name, "ok", response.status_code, seconds, f"refused: {error_text(response)}")


def guarded(name: str, check: Callable[[httpx2.Client], Row], client: httpx2.Client) -> Row:
    """The check's row; a call that could not be made (connection refused, timeout...) is a failed row."""
    started = time.monotonic()
    try:
        return check(client)
    except (httpx2.HTTPError, ValueError) as exc:
        return Row(name, "FAIL", None, time.monotonic() - started, f"{type(exc).__name__}: {exc}"[:120])


def run(
    target: Target,
    *,
    skip: Iterable[str] = (),
    model: str | None = None,
    min_spread_ms: float = MIN_SPREAD_MS,
    timeout: float = TIMEOUT_S,
) -> list[Row]:
    """Every check against the target, in order; a skipped one gets a "skipped" row."""
    checks: dict[str, Callable[[httpx2.Client], Row]] = {
        "chat": lambda client: check_chat(client, target, model),
        "stream": lambda client: check_stream(client, target, model, min_spread_ms),
        "responses": lambda client: check_responses(client, target, model),
        "wrong-key": lambda client: check_wrong_key(client, target),
    }
    skipped = set(skip)
    rows = []
    with httpx2.Client(timeout=timeout, headers={"user-agent": "lambda-chat-smoke"}) as client:
        for key, check in checks.items():
            if key in skipped:
                rows.append(Row(NAMES[key], "skipped", detail="left out (SKIP)"))
            else:
                rows.append(guarded(NAMES[key], check, client))
    return rows


# -- the table -------------------------------------------------------------------------------------------------

COLUMNS = ("check", "status", "time", "1st chunk", "chunks", "spread", "tokens", "result", "detail")


def seconds_text(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def cells(row: Row) -> tuple[str, ...]:
    """The row's cells, in COLUMNS' order; "-" where a figure does not apply."""
    return (
        row.check,
        "-" if row.status is None else str(row.status),
        seconds_text(row.seconds),
        seconds_text(row.first_chunk),
        "-" if row.chunks is None else str(row.chunks),
        seconds_text(row.spread),
        "-" if row.tokens is None else str(row.tokens),
        row.result,
        row.detail,
    )


def render(rows: list[Row]) -> str:
    """The table, one line per check, columns aligned (the detail last, unpadded)."""
    table = [COLUMNS, *(cells(row) for row in rows)]
    widths = [max(len(line[index]) for line in table) for index in range(len(COLUMNS) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(line, widths, strict=False)), line[-1]]).rstrip()
        for line in table
    )


def summary(rows: list[Row]) -> str:
    failed = sum(row.failed for row in rows)
    tokens = sum(row.tokens or 0 for row in rows)
    verdict = f"{failed} of {len(rows)} checks FAILED" if failed else "all checks passed"
    unreported = [row for row in rows if row.status == 200 and row.tokens is None and row.check != NAMES["wrong-key"]]
    return f"{verdict}; {tokens} tokens spent" + (" (and some the upstream did not report)" if unreported else "")


# -- the command -----------------------------------------------------------------------------------------------


def skip_list(text: str) -> list[str]:
    """`--skip responses,wrong-key`: the checks to leave out."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CHECKS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown check {', '.join(unknown)}; the checks are {', '.join(CHECKS)}")
    return names


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", help="a deployed stack's name: its outputs and API key are read with boto3")
    where.add_argument("--url", help="an API's root URL, e.g. make serve's http://127.0.0.1:3000")
    parser.add_argument("--model", default=None, help="the model to ask (default: the stack's default model)")
    parser.add_argument("--skip", type=skip_list, default=[], help=f"checks to leave out, of {', '.join(CHECKS)}")
    parser.add_argument("--min-spread-ms", type=float, default=MIN_SPREAD_MS, help="first to last chunk, at least")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per call")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Read the target, run the checks, print the table; 0 when every check passed, 1 otherwise."""
    args = parse(argv)
    api_key = os.environ.get("SMOKE_API_KEY") or None
    try:
        target = (
            target_from_stack(args.stack, api_key=api_key) if args.stack else target_from_url(args.url, api_key=api_key)
        )
    except SystemExit as exc:
        print(f"smoke: {exc}", file=sys.stderr)
        return 2
    print(f"smoke test of {target.name}: {target.chat_url} and {target.v1_url}", flush=True)
    rows = run(target, skip=args.skip, model=args.model, min_spread_ms=args.min_spread_ms, timeout=args.timeout)
    print(render(rows))
    print(summary(rows))
    return 1 if any(row.failed for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
