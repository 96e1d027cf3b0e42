"""Issue 20, item 2: no call's metrics outlive it, whatever POWERTOOLS_METRICS_DISABLED says.

Powertools' flush neither prints nor clears the metric set when metrics are disabled, so a warm container (or
`make serve`, which disables them) kept every call's metrics: memory grew with every request and so did the time
of each flush. 10,000 calls through the handler and 10,000 through the app, with metrics disabled: the metric set
is empty after each, and resident memory and per-call time stay flat.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.events import load_event
from tests.support.stack import Stack

CALLS = 10_000


def flat(run_one: Callable[[], None], stack: Stack) -> tuple[list[float], list[int]]:
    """Time each call; the process's resident memory after each thousand."""
    times, memory = [], []
    for index in range(CALLS):
        started = time.perf_counter()
        run_one()
        times.append(time.perf_counter() - started)
        stack.openai.received.clear()  # the fake upstream's own record of each request is the test's, not ours
        if index % 1000 == 999:
            memory.append(resident_bytes())
    return times, memory


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def assert_flat(times: list[float], memory: list[int]) -> None:
    # The last thousand calls are no slower than the second thousand (the first warms caches), give or take noise
    early, late = statistics.median(times[1000:2000]), statistics.median(times[-1000:])
    assert late < early * 1.5 + 0.0005, (early, late)
    # And resident memory after 10,000 calls is within 4 MiB of what it was after 2,000
    assert memory[-1] - memory[1] < 4 * 1024 * 1024, [m // 1024 for m in memory]


@pytest.fixture
def disabled_metrics(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    # Log lines off: pytest keeps every record it captures, which would be the test's growth, not the function's
    logging.disable(logging.INFO)
    yield stack
    logging.disable(logging.NOTSET)


def test_ten_thousand_handler_calls_keep_no_metrics(disabled_metrics: Stack) -> None:
    # Given the handler with metrics disabled, and an API Gateway event
    event = load_event("apigateway-rest.json")
    # When it is called 10,000 times
    times, memory = flat(lambda: disabled_metrics.invoke(event), disabled_metrics)
    # Then no call's metrics were kept, and neither time nor memory grew
    assert_flat(times, memory)


def test_ten_thousand_app_calls_keep_no_metrics(disabled_metrics: Stack) -> None:
    # Given the streaming app with metrics disabled
    from lambda_chat import asgi

    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
    loop = asyncio.new_event_loop()

    async def call() -> int:
        sent: list[dict[str, Any]] = []
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"",
                 "headers": [(b"content-type", b"application/json")]}  # fmt: skip
        await asgi.app(scope, receive, send)
        return int(sent[0]["status"])

    statuses: list[int] = []
    try:
        # When it is called 10,000 times
        times, memory = flat(lambda: statuses.append(loop.run_until_complete(call())), disabled_metrics)
    finally:
        loop.close()
    # Then every call was answered, none kept its metrics, and neither time nor memory grew
    assert set(statuses) == {200}
    assert_flat(times, memory)
