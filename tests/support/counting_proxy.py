"""A pass-through to moto_server's Secrets Manager that notes every secret read on the wire.

Tests count the function's reads of its key (one per container, however many calls) where AWS would: at the
endpoint, by the request's `X-Amz-Target`, not by patching Powertools' provider.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

READ = "secretsmanager.GetSecretValue"


class SecretReadCounter:
    def __init__(self, upstream: str) -> None:
        self.reads: list[str] = []  # the SecretId of each GetSecretValue, in order
        self._upstream = urlsplit(upstream)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> SecretReadCounter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        counter = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("x-amz-target") == READ:
                    counter.reads.append(str(json.loads(body).get("SecretId")))
                upstream = http.client.HTTPConnection(counter._upstream.hostname, counter._upstream.port, timeout=10)
                try:
                    upstream.request("POST", self.path, body, dict(self.headers.items()))
                    answer = upstream.getresponse()
                    payload = answer.read()
                finally:
                    upstream.close()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
