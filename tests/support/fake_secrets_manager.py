"""A Secrets Manager endpoint on loopback that answers with scripted AWS errors.

moto_server serves the real API but cannot be told to deny access or throttle;
this speaks the same wire protocol (AWS JSON 1.1) for those faults. boto3 talks
to it like to AWS, through AWS_ENDPOINT_URL_SECRETS_MANAGER.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeSecretsManager:
    def __init__(self, error_code: str, status: int = 400) -> None:
        self.error_code = error_code
        self.status = status
        self.calls = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeSecretsManager:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.calls += 1
                body = json.dumps({"__type": fake.error_code, "message": f"{fake.error_code} (fake)"}).encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
