"""moto_server on loopback as a real Secrets Manager endpoint, for tests and local runs.

Also the helpers both local servers (this one and local.model's llama.cpp) start with: a free
port, a log file for the server's output, a readiness wait, and an error that shows the log.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
LOG_DIR = Path(__file__).resolve().parent.parent / ".local" / "logs"
LOG_TAIL_LINES = 30
PORT_IN_USE = "address already in use"  # uvicorn's and werkzeug's words (errno 98) for a port taken meanwhile


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class ServerExited(RuntimeError):
    """The server process ended before it was ready."""


def wait_until(ready: Callable[[], bool], timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Return once `ready()` is true; ServerExited if `process` ends first, TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerExited(f"exited with code {process.returncode}")
        if ready():
            return
        time.sleep(0.05)
    raise TimeoutError(f"not ready within {timeout} s")


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    try:
        wait_until(lambda: port_open(port), timeout, process)
    except (ServerExited, TimeoutError) as exc:
        raise RuntimeError(f"server on 127.0.0.1:{port} {exc}") from None


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open(errors="replace") as log:
            return "".join(deque(log, maxlen=lines)).rstrip("\n")
    except OSError as exc:
        return f"(no log: {exc})"


class ServerProcess:
    """A local server process on 127.0.0.1; its stdout and stderr go to `log_path`, kept after the run.

    `start` runs `command(port)`, waits until `ready(port)`, and if the server exits first or is
    not ready in time, stops it and raises RuntimeError with the last lines of its log. A server
    that exits because another process took its port meanwhile is started again on a new one.
    """

    def __init__(self, name: str, log_dir: Path | None = None) -> None:
        self.name = name
        self.log_dir = log_dir or LOG_DIR
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.port}.log"

    def start(
        self,
        command: Callable[[int], list[str]],
        ready: Callable[[int], bool],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        attempts: int = 3,
    ) -> None:
        child_env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}  # the whole log, even if killed
        for attempt in range(1, attempts + 1):
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("wb") as log:
                self._process = subprocess.Popen(
                    command(self.port), stdout=log, stderr=subprocess.STDOUT, env=child_env
                )
            try:
                wait_until(lambda: ready(self.port), timeout, self._process)
                return
            except ServerExited as exc:
                if attempt < attempts and PORT_IN_USE in log_tail(self.log_path).lower():
                    self.port = free_port()
                    continue
                problem = str(exc)
            except TimeoutError as exc:
                self.stop()
                problem = str(exc)
            except BaseException:  # Ctrl-C while waiting, or a failing probe: leave no server behind
                self.stop()
                raise
            raise RuntimeError(
                f"{self.name} on 127.0.0.1:{self.port} {problem}; the end of its log ({self.log_path}):\n"
                + log_tail(self.log_path)
            )

    def stop(self, timeout: float = 10) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class MotoServer:
    """A `moto_server` process; `endpoint` is its URL, `log_path` its output."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self._server = ServerProcess("moto_server", log_dir)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self._server.log_path

    def start(self, timeout: float = 30) -> MotoServer:
        # moto_server, one request at a time; -P, so that this file (local/moto.py) is not taken for moto
        server = str(Path(__file__).with_name("moto_atomic.py"))
        self._server.start(
            lambda port: [sys.executable, "-P", server, "-H", "127.0.0.1", "-p", str(port)],
            port_open,
            timeout=timeout,
            env={**os.environ, **FAKE_AWS_ENV},
        )
        return self

    def stop(self) -> None:
        self._server.stop(timeout=5)

    def client(self, service: str):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=FAKE_AWS_ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto accepts any credentials
        )

    def secrets_client(self):  # type: ignore[no-untyped-def]
        return self.client("secretsmanager")

    def create_idempotency_table(self, name: str) -> None:
        """The table template.yaml defines: partition key `id`, TTL on `expiration`."""
        dynamodb = self.client("dynamodb")
        dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"}
        )

    def create_budget_table(self, name: str) -> None:
        """The budget table template.yaml defines: partition key `caller`, sort key `period`, TTL on `expires_at`."""
        dynamodb = self.client("dynamodb")
        dynamodb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "caller", "KeyType": "HASH"}, {"AttributeName": "period", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "caller", "AttributeType": "S"},
                {"AttributeName": "period", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )

    def env(self) -> dict[str, str]:
        """Environment that points boto3 (and so Powertools) at this server."""
        return {
            **FAKE_AWS_ENV,
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": self.endpoint,
            "AWS_ENDPOINT_URL_DYNAMODB": self.endpoint,
        }
