"""A real HTTP server on loopback posing as OpenAI's Chat Completions API.

Tests script what it answers (a status and body, a hang, a connection reset,
bad JSON, a truncated body...) and read back what it received. With nothing
scripted it answers like OpenAI: a completion whose token count honours the
request's `max_tokens` / `max_completion_tokens`, with `finish_reason` "length"
when that limit cut it short.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NATURAL_COMPLETION_TOKENS = 7


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    `action`: "respond" (status and JSON body), "raw" (bytes body), "hang" (answer nothing for `seconds`),
    "reset" (RST instead of an answer), "truncate" (half the body, then RST), "cut" (half, then a clean close).
    """

    action: str = "respond"
    status: int = 200
    body: Any = None  # a JSON-able document, or bytes for "raw"
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # for "hang": how long to wait before answering; for others: delay first byte

    @classmethod
    def error(
        cls,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
        return cls(status=status, body={"error": error}, headers=headers or {})


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    json: Any


class FakeOpenAI:
    def __init__(self, *, required_key: str | None = None) -> None:
        self.required_key = required_key
        self.received: list[Received] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.received.clear()
        self.required_key = None

    def next_reply(self, request: Received) -> Reply:
        with self._lock:
            self.received.append(request)
            if self._script:
                return self._script.popleft()
        if self.required_key is not None and request.headers.get("authorization") != f"Bearer {self.required_key}":
            return Reply.error(401, "Incorrect API key provided: sk-...xxxx.", code="invalid_api_key")
        return Reply(body=natural_completion(request.json))


def natural_completion(request: Any) -> dict[str, Any]:
    """What OpenAI would answer: token counts from the request, "length" when cut short."""
    messages = request.get("messages", []) if isinstance(request, dict) else []
    prompt_tokens = sum(len(str(m.get("content", "")).split()) + 4 for m in messages if isinstance(m, dict))
    limit = None
    if isinstance(request, dict):
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
    completion_tokens = min(limit or NATURAL_COMPLETION_TOKENS, NATURAL_COMPLETION_TOKENS)
    finish_reason = "length" if limit is not None and limit < NATURAL_COMPLETION_TOKENS else "stop"
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "unknown") if isinstance(request, dict) else "unknown",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " ".join(["word"] * completion_tokens)},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _handler_for(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as two writes: don't let Nagle hold the second

        def log_message(self, format: str, *args: Any) -> None:  # silence stderr
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, json.dumps({"object": "list", "data": []}).encode(), {})
            else:
                self._send(404, b'{"error": {"message": "not found"}}', {})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                document = json.loads(raw)
            except ValueError:
                document = None
            headers = {name.lower(): value for name, value in self.headers.items()}
            reply = fake.next_reply(Received(self.path, headers, document))
            if reply.action == "hang":
                time.sleep(reply.seconds)
                self.close_connection = True
                return
            if reply.seconds:
                time.sleep(reply.seconds)
            if reply.action == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                return
            body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            if reply.action == "cut":  # promise the whole body, send half, close cleanly
                self.send_response(reply.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            if reply.action == "truncate":
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                return
            self._send(reply.status, body, reply.headers)

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler
