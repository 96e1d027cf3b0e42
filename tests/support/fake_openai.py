"""A real HTTP server on loopback posing as OpenAI's Chat Completions API.

Tests script what it answers (a status and body, a hang, a connection reset,
bad JSON, a truncated body, a slow stream...) and read back what it received.
With nothing scripted it answers like OpenAI: a completion whose token count
honours the request's `max_tokens` / `max_completion_tokens`, with
`finish_reason` "length" when that limit cut it short; streamed as server-sent
chunks (one word each, `stream_interval` apart) when the request says
`stream: true`, with the usage chunk when `stream_options.include_usage` asks.
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

from tests.support.fake_responses import embeddings_document, natural_response, response_events, words_of

NATURAL_COMPLETION_TOKENS = 7


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    `action`: "respond" (status and JSON body), "raw" (bytes body), "hang" (answer nothing for `seconds`),
    "reset" (RST instead of an answer), "truncate" (half the body, then RST), "cut" (half, then a clean close).
    """

    action: str = "respond"
    status: int = 200
    body: Any = None  # a JSON-able document, or bytes for "raw"; for "stream": the content deltas
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # for "hang": how long to wait before answering; for others: delay first byte
    interval: float = 0.0  # for "stream": the pause before each chunk
    pauses: dict[int, float] = field(default_factory=dict)  # for "stream": a longer pause before chunk N
    break_after: int | None = None  # for "stream": fail after this many chunks...
    failure: str = "reset"  # ...by a connection reset, or an "error" event (as OpenAI reports mid-stream errors)

    @classmethod
    def stream(cls, deltas: list[str], **options: Any) -> Reply:
        return cls(action="stream", body=deltas, **options)

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
    method: str = "POST"


class FakeOpenAI:
    def __init__(self, *, required_key: str | None = None, host: str = "127.0.0.1") -> None:
        self.required_key = required_key
        self.received: list[Received] = []
        self.stream_interval = 0.0  # pause before each chunk of an unscripted stream
        self.streams_abandoned: list[int] = []  # chunks written by each stream whose reader went away
        self.stored: dict[str, dict[str, Any]] = {}  # responses kept for retrieval, by id
        self.gate: threading.Event | None = None  # when set up, every answer waits until the test opens it
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), _handler_for(self))  # host: e.g. the Docker bridge's address
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
            self.streams_abandoned.clear()
            self.stored.clear()
        self.required_key = None
        self.stream_interval = 0.0
        self.gate = None

    def next_reply(self, request: Received) -> Reply:
        with self._lock:
            self.received.append(request)
            if self._script:
                return self._script.popleft()
        if self.required_key is not None and request.headers.get("authorization") != f"Bearer {self.required_key}":
            return Reply.error(401, "Incorrect API key provided: sk-...xxxx.", code="invalid_api_key")
        body = request.json if isinstance(request.json, dict) else {}
        route = request.path.split("?", 1)[0].removeprefix("/v1")
        if route.startswith("/responses/"):
            return self._stored_response(request.method, route.split("/")[2], route.split("/")[3:])
        if route == "/embeddings":
            return Reply(body=embeddings_document(body))
        if route == "/responses" and body.get("stream") is not True:
            return self._kept(Reply(body=natural_response(body)))
        if body.get("stream") is True:
            count = words_of(body) if route == "/responses" else natural_completion(body)["usage"]["completion_tokens"]
            return Reply.stream([" word"] * count, interval=self.stream_interval)
        return Reply(body=natural_completion(request.json))

    def _kept(self, reply: Reply) -> Reply:
        if reply.body.get("store") is not False:
            self.stored[reply.body["id"]] = reply.body
        return reply

    def _kept_events(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self._kept(Reply(body=events[-1]["response"]))
        return events

    def _stored_response(self, method: str, response_id: str, rest: list[str]) -> Reply:
        stored = self.stored.get(response_id)
        if stored is None:
            return Reply.error(404, f"No response found with id '{response_id}'.")
        if method == "DELETE":
            del self.stored[response_id]
            return Reply(body={"id": response_id, "object": "response.deleted", "deleted": True})
        if rest == ["cancel"]:
            stored["status"] = "cancelled"
        if rest == ["input_items"]:
            return Reply(body={"object": "list", "data": [], "has_more": False})
        return Reply(body=stored)


def stream_chunks(request: Any, deltas: list[str]) -> list[dict[str, Any]]:
    """The chunks OpenAI streams for these content deltas: role, deltas, finish, then usage when asked."""
    request = request if isinstance(request, dict) else {}
    model = request.get("model", "unknown")
    wants_usage = (request.get("stream_options") or {}).get("include_usage") is True

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": "chatcmpl-fake-stream",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if wants_usage:
            document["usage"] = None
        return document

    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": delta}) for delta in deltas]
    chunks.append(chunk({}, "length" if limit is not None and limit <= len(deltas) else "stop"))
    if wants_usage:
        prompt_tokens = natural_completion(request)["usage"]["prompt_tokens"]
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(deltas)}
        chunks.append({**chunk({}), "choices": [], "usage": {**usage, "total_tokens": prompt_tokens + len(deltas)}})
    return chunks


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
                self.do_POST()

        def do_DELETE(self) -> None:
            self.do_POST()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                document = json.loads(raw)
            except ValueError:
                document = None
            headers = {name.lower(): value for name, value in self.headers.items()}
            reply = fake.next_reply(Received(self.path, headers, document, self.command))
            if fake.gate is not None:
                fake.gate.wait(30)
            if reply.action == "hang":
                time.sleep(reply.seconds)
                self.close_connection = True
                return
            if reply.seconds:
                time.sleep(reply.seconds)
            if reply.action == "stream":
                if self.path.endswith("/responses"):  # typed events, and no [DONE]
                    events = response_events(document if isinstance(document, dict) else {}, list(reply.body))
                    self._stream(reply, fake._kept_events(events), done=b"")
                else:
                    self._stream(reply, stream_chunks(document, list(reply.body)))
                return
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

        def _stream(self, reply: Reply, chunks: list[dict[str, Any]], done: bytes = b"data: [DONE]\n\n") -> None:
            """Server-sent events, each written as soon as its pause is over; a gone reader is noted."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            sent = 0
            try:
                for index, chunk in enumerate(chunks):
                    time.sleep(reply.pauses.get(index, reply.interval))
                    if reply.break_after is not None and index == reply.break_after:
                        self._fail_stream(reply.failure)
                        return
                    event = f"event: {chunk['type']}\n".encode() if "type" in chunk else b""
                    self.wfile.write(event + b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    sent += 1
                self.wfile.write(done)
            except (BrokenPipeError, ConnectionResetError):
                fake.streams_abandoned.append(sent)

        def _fail_stream(self, failure: str) -> None:
            if failure == "error":
                error = {"message": "The server had an error while processing your request.", "type": "server_error"}
                self.wfile.write(b"data: " + json.dumps({"error": error}).encode() + b"\n\n")
                return
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler
