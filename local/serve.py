"""A local HTTP API without Docker (`sam local start-api` needs Docker): `make serve`.

Serves POST /chat (the envelope contract) and the OpenAI-compatible POST
/v1/chat/completions and GET /v1/models on 127.0.0.1, by turning each HTTP request
into an API Gateway (REST, v1 proxy) event for the real handler, in-process. Local
use only: it binds to loopback, checks no API key and has no TLS.

    curl -s localhost:3000/chat -H 'content-type: application/json' -d '{"prompt": "Hello"}'
    OpenAI(base_url="http://127.0.0.1:3000/v1", api_key="unused")
"""

from __future__ import annotations

import argparse
import base64
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from local.context import FakeLambdaContext

ROUTES = {"/chat", "/v1/chat/completions", "/v1/models"}


def to_api_gateway_event(method: str, path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The REST API proxy event API Gateway would send for this request."""
    try:
        text, is_base64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, is_base64 = base64.b64encode(body).decode(), True
    now = time.time()
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": method,
            "path": f"/local{path}",
            "stage": "local",
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(now * 1000),
            "identity": {"sourceIp": "127.0.0.1"},
            "protocol": "HTTP/1.1",
        },
        "body": text if body else None,
        "isBase64Encoded": is_base64,
    }


class LocalApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: don't let Nagle hold the second
    timeout_ms = 30_000

    def do_POST(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        from lambda_chat.handler import lambda_handler

        path = self.path.split("?", 1)[0]
        if path not in ROUTES:
            self._write(404, {"Content-Type": "application/json"}, b'{"message": "Not Found"}')
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        event = to_api_gateway_event(self.command, path, dict(self.headers.items()), body)
        result = lambda_handler(event, FakeLambdaContext(timeout_ms=self.timeout_ms))
        payload = result["body"].encode()
        if result.get("isBase64Encoded"):
            payload = base64.b64decode(payload)
        self._write(result["statusCode"], result.get("headers") or {}, payload)

    def _write(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"local api: {self.command} {self.path} -> {args[1] if len(args) > 1 else ''}\n")


def make_server(port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), LocalApiHandler)
    server.daemon_threads = True
    return server


@contextmanager
def serving_in_background(port: int = 0) -> Iterator[str]:
    """The local API in a thread of this process, for tests; yields its root URL."""
    server = make_server(port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    from local.run import start_stack

    with ExitStack() as stack:
        backend = start_stack(stack)
        server = make_server(args.port)
        stack.callback(server.server_close)
        print(f"backend: {backend}", flush=True)
        print(f"local API: POST http://127.0.0.1:{args.port}/chat   (Ctrl-C stops it and the servers)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("\nstopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
