"""A local HTTP API without Docker (`sam local start-api` needs Docker): `make serve [PORT=3000]`.

Serves, on 127.0.0.1 through uvicorn:
- /v1 (POST /v1/chat/completions, streamed or not, and GET /v1/models): the very ASGI app that the
  streaming function runs in Lambda behind the Web Adapter (lambda_chat.asgi);
- POST /chat, the envelope contract: each request becomes the API Gateway (REST, v1 proxy) event the
  handler function would get, and the real handler answers it in-process.
Local use only: it binds to loopback, checks no API key and has no TLS; it refuses requests that another
site's page could make (README: Security).

    curl -s localhost:3000/chat -H 'content-type: application/json' -d '{"prompt": "Hello"}'
    curl -N localhost:3000/v1/chat/completions -H 'content-type: application/json' \
      -d '{"messages": [{"role": "user", "content": "Hello"}], "stream": true}'
    OpenAI(base_url="http://127.0.0.1:3000/v1", api_key="unused")
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

from lambda_chat.adapter import JSON_HEADERS
from local.context import FakeLambdaContext

if TYPE_CHECKING:
    import uvicorn

CHAT_TIMEOUT_MS = 30_000  # the handler function's time for /chat (API Gateway's buffered limit is 29 s)


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


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
CHAT_MAX_BYTES = 10 * 1024 * 1024  # API Gateway's own limit; the handler applies its own


async def local_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """/chat through the handler, as the handler function would get it; everything else to the streaming app.

    It holds the developer's real key and checks none of its own, so it refuses what a web page could send: a
    request another site's page made (its `Origin` or `Sec-Fetch-Site` says so, or its `Host` is not loopback), and
    a POST with a body that is not JSON (a page can POST text or a form to any address without asking first; JSON
    needs a preflight it never gets).
    """
    from lambda_chat import asgi

    if scope["type"] != "http":
        return
    call = asgi.HttpCall(scope, receive, send, {})
    refusal = cross_site_refusal(call)
    if refusal is not None:
        status, code, message = refusal
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
        await call.answer(status, json.dumps({"error": error}).encode(), dict(JSON_HEADERS))
        return
    if scope["path"].rstrip("/") == "/chat":
        await chat_through_the_handler(call)
        return
    await asgi.app(scope, receive, send)


def cross_site_refusal(call: Any) -> tuple[int, str, str] | None:
    """Why a request may not reach the key: (status, code, message); None when it is the developer's own."""
    # A page on another name that resolves here (DNS rebinding) sends its own name as Host.
    if _hostname(call.header("host") or "") not in LOOPBACK_HOSTS:
        return 403, "cross_site_request", "refused: make serve answers requests for 127.0.0.1 or localhost only"
    site = (call.header("sec-fetch-site") or "").lower()
    if site not in ("", "same-origin", "none"):
        return 403, "cross_site_request", f"refused: a request from another site (Sec-Fetch-Site: {site[:20]})"
    origin = call.header("origin")
    if origin is not None and not _same_origin(origin, call.scope):
        return 403, "cross_site_request", "refused: a request from another origin; make serve answers its own only"
    has_body = (call.header("content-length") or "0") != "0" or call.header("transfer-encoding") is not None
    if call.method == "POST" and has_body:  # (a body-less POST, such as a cancel, is no form a page could send)
        media = (call.header("content-type") or "").split(";")[0].strip().lower()
        if media != "application/json":
            return 415, "unsupported_media_type", "send the body as JSON, with Content-Type: application/json"
    return None


def _hostname(host: str) -> str:
    """The name in a Host header, without its port ("[::1]:3000" -> "[::1]")."""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0]


def _same_origin(origin: str, scope: dict[str, Any]) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    server = scope.get("server") or (None, None)
    return parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS and port == server[1]


async def chat_through_the_handler(call: Any) -> None:
    """/chat: the API Gateway event the handler function would get, answered by the real handler."""
    import anyio.to_thread

    from lambda_chat import asgi
    from lambda_chat.errors import ChatError
    from lambda_chat.handler import lambda_handler
    from lambda_chat.models import failure_envelope

    try:
        body = await call.body(max_bytes=CHAT_MAX_BYTES)
    except asgi.ClientGone:
        return  # the client left before its request had arrived: nobody to answer
    except ChatError as error:
        await call.answer(error.status, json.dumps(failure_envelope(error.message)).encode(), dict(JSON_HEADERS))
        return
    event = to_api_gateway_event(call.method, "/chat", call.headers(), body)
    context = FakeLambdaContext(timeout_ms=CHAT_TIMEOUT_MS)
    result = await anyio.to_thread.run_sync(lambda_handler, event, context)
    payload = result["body"].encode()
    if result.get("isBase64Encoded"):
        payload = base64.b64decode(payload)
    await call.answer(result["statusCode"], payload, result.get("headers") or {})


def make_server(port: int) -> uvicorn.Server:
    import uvicorn

    config = uvicorn.Config(
        local_app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", timeout_graceful_shutdown=2
    )
    return uvicorn.Server(config)


@contextmanager
def serving_in_background(port: int = 0) -> Iterator[str]:
    """The local API in a thread of this process, for tests; yields its root URL."""
    server = make_server(port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the local API did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 3000))
    args = parser.parse_args(argv)
    from local.run import start_stack, stop_on_sigterm

    # uvicorn shuts down on SIGTERM, then raises the signal again: it must end in SystemExit, so the servers
    # this started (moto_server, the model) are stopped on the way out instead of outliving it.
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    with ExitStack() as stack:
        backend = start_stack(stack)
        server = make_server(args.port)
        print(f"backend: {backend}", flush=True)
        root = f"http://127.0.0.1:{args.port}"
        print(f"local API: POST {root}/chat, and OpenAI clients with base_url={root}/v1", flush=True)
        print("(Ctrl-C stops it and the servers)", flush=True)
        server.run()
        print("stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
