"""The gateway section's floor: the least an OpenAI-compatible gateway in Python does, of the same parts as OUR app.

    PORT=8081 OPENAI_BASE_URL=http://127.0.0.1:9000/v1 python -m benchmarks.floor

uvicorn (h11, run as lambda_chat.asgi runs it) and the official `openai` SDK's async client, and nothing else:
POST /v1/chat/completions is read, parsed and sent on with `client.post` (as OUR app sends it), and its answer
relayed: a whole one as the upstream's bytes, a stream event by event, each re-encoded as the SDK parsed it. No
validation, limits, budgets, logs or metrics. Its added latency in the gateway section is what serving HTTP and
calling through the SDK cost on the machine; what OUR app adds above it is OUR code's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import openai
import uvicorn

Message = dict[str, Any]
UPSTREAM_KEY = "sk-floor"  # the fake upstream takes any key
JSON = [(b"content-type", b"application/json")]
SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]

client = openai.AsyncOpenAI(api_key=UPSTREAM_KEY, base_url=os.environ.get("OPENAI_BASE_URL"), max_retries=0)


Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] != "/v1/chat/completions" or scope["method"] != "POST":
        status = 200 if scope["path"] == "/healthz" else 404
        await send({"type": "http.response.start", "status": status, "headers": JSON})
        await send({"type": "http.response.body", "body": b"{}"})
        return
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    data = json.loads(body)
    if not data.get("stream"):
        answer = await client.post("/chat/completions", cast_to=httpx2.Response, body=data)
        await send({"type": "http.response.start", "status": answer.status_code, "headers": JSON})
        await send({"type": "http.response.body", "body": answer.content})
        return
    stream = await client.post(
        "/chat/completions", cast_to=object, body=data, stream=True, stream_cls=openai.AsyncStream[object]
    )
    await send({"type": "http.response.start", "status": 200, "headers": SSE})
    async for event in stream:
        frame = b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def main() -> None:
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        http="h11",
        loop="asyncio",
        ws="none",
        lifespan="off",
        access_log=False,
        log_config=None,
    )


if __name__ == "__main__":
    main()
