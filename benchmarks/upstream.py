"""A fast fake OpenAI upstream on loopback: asyncio, HTTP/1.1 keep-alive, a fixed chat.completion answer.

    python -m benchmarks.upstream --port 0     # prints "LISTENING <port>" once it accepts connections

POST /v1/chat/completions gets a fixed, valid `chat.completion` (with usage) at once, whatever was sent;
anything else gets a 404 JSON error. It runs in its own process so that it does not take the GIL from the
client being measured, and exits by itself when its parent (`--parent-pid`) goes away.

A request with `"stream": true` is answered as OpenAI streams: server-sent events over chunked encoding, one
`chat.completion.chunk` per event, then the usage chunk (when `stream_options.include_usage` asks) and
`data: [DONE]`. The model name carries the stream's shape (`StreamPlan`: time to first token, interval,
chunk count), so a relay that passes the model on (our app) gets the same stream as a direct client. Every
chunk carries `"t"`: CLOCK_MONOTONIC (system-wide on Linux) in ns when it was written, for per-chunk latency.
Each chunk is its own write on a TCP_NODELAY socket; with no interval they are written back to back, without
yielding to the event loop, so the fake is not what limits a throughput figure.

POST /v1/responses with `"stream": true` is streamed the same way, as the Responses API streams: typed events
(`event: <type>` and a `data:` object with that "type" and a "sequence_number"), response.created,
response.in_progress, response.output_item.added and response.content_part.added when the plan's time to first
token is up, then one response.output_text.delta per content chunk (stamped with "t"), then
response.output_text.done, response.content_part.done, response.output_item.done and response.completed (with
usage); no [DONE]. Any other /v1/responses request gets the 404.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass

USAGE = {"prompt_tokens": 24, "completion_tokens": 19, "total_tokens": 43}
COMPLETION = {
    "id": "chatcmpl-benchmark",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Functions wake and sleep,\ncold starts fade to warm replies,\nthe bill stays small.",
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": USAGE,
    "system_fingerprint": "fp_benchmark",
}
NOT_FOUND = {"error": {"message": "not found", "type": "invalid_request_error", "param": None, "code": None}}
MAX_HEAD_BYTES = 64 * 1024


def http_response(status: str, document: object) -> bytes:
    body = json.dumps(document).encode()
    head = (
        f"HTTP/1.1 {status}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "x-request-id: req_benchmark\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


OK_RESPONSE = http_response("200 OK", COMPLETION)
NOT_FOUND_RESPONSE = http_response("404 Not Found", NOT_FOUND)
BAD_REQUEST_RESPONSE = http_response("400 Bad Request", NOT_FOUND)


@dataclass(frozen=True)
class StreamPlan:
    """The shape of a streamed answer, carried in the request's model name (see `model`)."""

    ttft_ms: float = 0.0  # from the request to the first chunk (the response head goes out at once)
    interval_ms: float = 0.0  # between chunks; 0 writes them all at once
    chunks: int = 3  # content chunks

    @property
    def model(self) -> str:
        return f"{STREAM_MODEL}:ttft={self.ttft_ms:g}ms:interval={self.interval_ms:g}ms:chunks={self.chunks}"

    @classmethod
    def from_model(cls, model: object) -> StreamPlan:
        """The plan a model name asks for; the default plan for any other name."""
        found = _PLAN.fullmatch(model) if isinstance(model, str) else None
        if found is None:
            return cls()
        return cls(float(found["ttft"]), float(found["interval"]), max(1, int(found["chunks"])))


STREAM_MODEL = "benchmark-stream"
_PLAN = re.compile(
    re.escape(STREAM_MODEL) + r":ttft=(?P<ttft>[\d.]+)ms:interval=(?P<interval>[\d.]+)ms:chunks=(?P<chunks>\d+)"
)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream; charset=utf-8\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"x-request-id: req_benchmark\r\n"
    b"\r\n"
)
STREAM_END = b"0\r\n\r\n"  # the last chunk of the chunked encoding


def _chunk(choices: list[dict[str, object]], **fields: object) -> dict[str, object]:
    return {
        "id": "chatcmpl-benchmark-stream",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": COMPLETION["model"],
        "system_fingerprint": "fp_benchmark",
        "choices": choices,
        **fields,
    }


def _event(document: object, name: str | None = None) -> bytes:
    """One SSE event; `name` gives it an `event:` line (the Responses API's typed events)."""
    data = b"data: " + json.dumps(document, separators=(",", ":")).encode() + b"\n\n"
    return b"event: %b\n%b" % (name.encode(), data) if name else data


def _content_template(first: bool, last: bool) -> tuple[bytes, bytes]:
    """A content chunk's SSE event, split where its send time goes: `head + b"%d" % ns + tail`.

    The first chunk also carries the role, the last one finish_reason "stop" (one chunk can be both).
    """
    delta = {"role": "assistant", "content": "Functions", "refusal": None} if first else {"content": " wake"}
    choice: dict[str, object] = {
        "index": 0,
        "delta": delta,
        "logprobs": None,
        "finish_reason": "stop" if last else None,
    }
    head, tail = _event(_chunk([choice], t=0)).rsplit(b'"t":0', 1)
    return head + b'"t":', tail


CONTENT_TEMPLATES = {(first, last): _content_template(first, last) for first in (False, True) for last in (False, True)}
USAGE_EVENT = _event(_chunk([], usage=USAGE))
DONE_EVENT = b"data: [DONE]\n\n"


def http_chunk(payload: bytes) -> bytes:
    """One piece of a chunked-encoding body."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def stream_event(index: int, plan: StreamPlan) -> bytes:
    """The SSE event of content chunk `index`, stamped with the time it is made (just before it is written)."""
    head, tail = CONTENT_TEMPLATES[index == 0, index == plan.chunks - 1]
    return head + b"%d" % time.monotonic_ns() + tail


class ChatEvents:
    """A chat completion's stream: content chunks, then the usage chunk (if asked for) and [DONE]."""

    def opening(self, plan: StreamPlan) -> list[bytes]:
        return []  # the first content chunk carries the role

    def content(self, index: int, plan: StreamPlan) -> bytes:
        return stream_event(index, plan)

    def closing(self, document: dict[str, object], plan: StreamPlan) -> bytes:
        options = document.get("stream_options")
        wants_usage = isinstance(options, dict) and options.get("include_usage") is True
        return USAGE_EVENT + DONE_EVENT if wants_usage else DONE_EVENT


RESPONSE_ITEM = "msg_benchmark"
RESPONSES_USAGE = {  # the chat answer's usage, in the Responses API's names
    "input_tokens": USAGE["prompt_tokens"],
    "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},  # the SDK (3.57) requires both
    "output_tokens": USAGE["completion_tokens"],
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": USAGE["total_tokens"],
}


def _response(status: str, output: list[object], usage: object = None) -> dict[str, object]:
    """A `response` object, as the Responses API's lifecycle events carry it."""
    return {
        "id": "resp_benchmark",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": status,
        "model": COMPLETION["model"],
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "usage": usage,
    }


def _message(status: str, parts: list[object]) -> dict[str, object]:
    return {"id": RESPONSE_ITEM, "type": "message", "role": "assistant", "status": status, "content": parts}


def _text_part(text: str) -> dict[str, object]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


class ResponsesEvents:
    """A Responses API stream: typed events, each numbered ("sequence_number"); the text deltas are the content."""

    OPENING_EVENTS = 4  # response.created, .in_progress, .output_item.added, .content_part.added

    def opening(self, plan: StreamPlan) -> list[bytes]:
        started = _response("in_progress", [])
        return _numbered(
            0,
            ("response.created", {"response": started}),
            ("response.in_progress", {"response": started}),
            ("response.output_item.added", {"output_index": 0, "item": _message("in_progress", [])}),
            ("response.content_part.added", {**TEXT_PLACE, "part": _text_part("")}),
        )

    def content(self, index: int, plan: StreamPlan) -> bytes:
        delta = {**TEXT_PLACE, "delta": _delta_text(index), "logprobs": [], "t": time.monotonic_ns()}
        return _typed("response.output_text.delta", self.OPENING_EVENTS + index, delta)

    def closing(self, document: dict[str, object], plan: StreamPlan) -> bytes:
        text = "".join(_delta_text(index) for index in range(plan.chunks))
        part = _text_part(text)
        item = _message("completed", [part])
        events = _numbered(
            self.OPENING_EVENTS + plan.chunks,
            ("response.output_text.done", {**TEXT_PLACE, "text": text, "logprobs": []}),
            ("response.content_part.done", {**TEXT_PLACE, "part": part}),
            ("response.output_item.done", {"output_index": 0, "item": item}),
            ("response.completed", {"response": _response("completed", [item], RESPONSES_USAGE)}),
        )
        return b"".join(events)


TEXT_PLACE = {"item_id": RESPONSE_ITEM, "output_index": 0, "content_index": 0}  # where the streamed text goes


def _typed(kind: str, number: int, document: dict[str, object]) -> bytes:
    """A Responses API event: `event: <type>`, its data with that type and its sequence number."""
    return _event({"type": kind, "sequence_number": number, **document}, kind)


def _numbered(first: int, *events: tuple[str, dict[str, object]]) -> list[bytes]:
    return [_typed(kind, first + offset, document) for offset, (kind, document) in enumerate(events)]


def _delta_text(index: int) -> str:
    return " wake" if index else "Functions"  # as the chat stream's content chunks


STREAMS: dict[str, ChatEvents | ResponsesEvents] = {
    "/v1/chat/completions": ChatEvents(),
    "/v1/responses": ResponsesEvents(),
}


def wants_stream(body: bytes) -> dict[str, object] | None:
    """The request document when it asks for a stream; None otherwise (most bodies are not even parsed)."""
    if b'"stream"' not in body:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) and document.get("stream") is True else None


def parse_head(head: bytes) -> tuple[str, str, int, bool]:
    """Method, path, Content-Length and whether the client asked to close, from a request head."""
    lines = head.decode("latin-1").split("\r\n")
    method, path, *_ = lines[0].split(" ")
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "connection":
            close = value.strip().lower() == "close"
    return method, path, length, close


class ChatProtocol(asyncio.Protocol):
    """One keep-alive connection; pipelined requests are answered in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._streaming: asyncio.Task[None] | None = None  # the stream being written; later requests wait

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # asyncio sets it too; said here because every chunk must leave at once
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None and self._streaming is None and self._answer_one():
            pass

    def _answer_one(self) -> bool:
        """Answer the first complete request in the buffer; False when there is none (yet)."""
        assert self._transport is not None
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                self._close_with(BAD_REQUEST_RESPONSE)
            return False
        try:
            method, path, length, close = parse_head(bytes(self._buffer[:end]))
        except ValueError:
            self._close_with(BAD_REQUEST_RESPONSE)
            return False
        total = end + 4 + length
        if len(self._buffer) < total:
            return False
        body = bytes(self._buffer[end + 4 : total])
        del self._buffer[:total]
        route = path.split("?", 1)[0] if method == "POST" else ""
        events = STREAMS.get(route)
        document = wants_stream(body) if events is not None else None
        if events is not None and document is not None:
            self._streaming = asyncio.ensure_future(self._stream(events, document, close))
            self._streaming.add_done_callback(self._stream_done)
            return False
        self._transport.write(OK_RESPONSE if route == "/v1/chat/completions" else NOT_FOUND_RESPONSE)
        if close:
            self._transport.close()
            self._transport = None
            return False
        return True

    async def _stream(self, events: ChatEvents | ResponsesEvents, document: dict[str, object], close: bool) -> None:
        """Write one streamed answer as its plan says, unless the client goes away first."""
        plan = StreamPlan.from_model(document.get("model"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._write(STREAM_HEAD)
        await asyncio.sleep(plan.ttft_ms / 1000)  # nothing but the head before the time to first token
        for event in events.opening(plan):  # each its own write, as a streaming server does
            self._write(http_chunk(event))
        if plan.interval_ms:
            for index in range(plan.chunks):
                due = started + (plan.ttft_ms + index * plan.interval_ms) / 1000  # on a schedule: lags do not add up
                await asyncio.sleep(max(0.0, due - loop.time()))
                self._write(http_chunk(events.content(index, plan)))
        else:  # one write per chunk, as a streaming server does, but no pause between them
            for index in range(plan.chunks):
                self._write(http_chunk(events.content(index, plan)))
        self._write(http_chunk(events.closing(document, plan)) + STREAM_END)
        if close and self._transport is not None:
            self._transport.close()
            self._transport = None

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def _stream_done(self, task: asyncio.Task[None]) -> None:
        self._streaming = None
        if not task.cancelled() and task.exception() is not None and self._transport is not None:
            self._transport.close()  # a broken stream must not look like a finished one
            self._transport = None
        self.data_received(b"")  # answer what arrived meanwhile

    def _close_with(self, response: bytes) -> None:
        assert self._transport is not None
        self._transport.write(response)
        self._transport.close()
        self._transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._streaming is not None:
            self._streaming.cancel()  # the reader went away


async def serve(port: int, parent_pid: int | None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ChatProtocol, "127.0.0.1", port, backlog=128, reuse_address=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bound = server.sockets[0].getsockname()[1]
    print(f"LISTENING {bound}", flush=True)
    async with server:
        while not stop.is_set():
            if parent_pid is not None and os.getppid() != parent_pid:
                break  # orphaned: the benchmark that started us is gone
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is no longer our parent")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.parent_pid))
    return 0


if __name__ == "__main__":
    sys.exit(main())
