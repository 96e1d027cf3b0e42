"""A fast fake OpenAI upstream on loopback: asyncio, HTTP/1.1 keep-alive, a fixed chat.completion answer.

    python -m benchmarks.upstream --port 0     # prints "LISTENING <port>" once it accepts connections

POST /v1/chat/completions gets a fixed, valid `chat.completion` (with usage) at once, whatever was sent;
anything else gets a 404 JSON error. It runs in its own process so that it does not take the GIL from the
client being measured, and exits by itself when its parent (`--parent-pid`) goes away.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys

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
    "usage": {"prompt_tokens": 24, "completion_tokens": 19, "total_tokens": 43},
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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None and self._answer_one():
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
        del self._buffer[:total]
        found = method == "POST" and path.split("?", 1)[0] == "/v1/chat/completions"
        self._transport.write(OK_RESPONSE if found else NOT_FOUND_RESPONSE)
        if close:
            self._transport.close()
            self._transport = None
            return False
        return True

    def _close_with(self, response: bytes) -> None:
        assert self._transport is not None
        self._transport.write(response)
        self._transport.close()
        self._transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


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
