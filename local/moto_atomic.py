"""moto_server, answering one request at a time: each DynamoDB write is then atomic, as it is in DynamoDB.

moto applies an UpdateItem as a read, a check and a write in Python, and its server runs each request in a
thread of its own: under 50 concurrent conditional updates of one item it let 11 pass a condition with room for
10, and lost writes (seen with moto 5.2.5). DynamoDB applies each write to an item atomically, which the budgets
rely on; this runs moto's own application and server with one lock around each request, so what the tests see
of concurrency is the function's, not moto's. Run as `python -P local/moto_atomic.py -H HOST -p PORT`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


class OneAtATime:
    """A WSGI application that runs the one it wraps for a single request at a time, body included."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            return list(self._app(environ, start_response))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = OneAtATime(DomainDispatcherApplication(create_backend_app))
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
