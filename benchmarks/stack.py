"""The loopback servers every benchmark needs: moto_server (Secrets Manager) and the fake OpenAI upstream.

`Stack` starts both, stores a key in a secret, and stops both on exit, on Ctrl-C (KeyboardInterrupt) and on
SIGTERM (turned into SystemExit by `stop_on_sigterm`). `child_env()` is the environment for every process
that is measured: the function's own variables, as the SAM template sets them, pointed at these servers
(with an idempotency table in moto, as the template has one; the benchmark event carries no Idempotency-Key,
so the table costs only at init).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from types import FrameType, TracebackType
from typing import Any, NoReturn

from benchmarks.common import ROOT, Config, machine_report
from local.moto import MotoServer, wait_for_port

SECRET_ID = "lambda-chat/benchmark-openai-api-key"  # noqa: S105 - the secret's name, not its value
IDEMPOTENCY_TABLE = "lambda-chat-benchmark-idempotency"


def idempotency_enabled() -> bool:
    """The SAM template gives the function an idempotency table; BENCH_IDEMPOTENCY=0 leaves it out."""
    return os.environ.get("BENCH_IDEMPOTENCY", "1") != "0"


def stop_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C does, so every `finally` and exit callback runs."""

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise)


def terminate(process: subprocess.Popen[Any], timeout: float = 5) -> None:
    """SIGTERM, then SIGKILL if it is still there after `timeout` s (each waited for)."""
    for signal_it in (process.terminate, process.kill):
        if process.poll() is None:
            signal_it()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout)


class UpstreamProcess:
    """`python -m benchmarks.upstream` in its own process, on a port it picks and reports."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, timeout: float = 15) -> UpstreamProcess:
        command = [sys.executable, "-m", "benchmarks.upstream", "--port", "0", "--parent-pid", str(os.getpid())]
        self._process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()  # the server's first line, once bound; "" if it died
        if not line.startswith("LISTENING "):
            self.stop()
            raise RuntimeError(f"the fake upstream did not start (said {line!r})")
        self.port = int(line.split()[1])
        wait_for_port(self.port, timeout=timeout, process=None)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        terminate(process)
        if process.stdout is not None:
            process.stdout.close()


class Stack:
    """moto_server + fake upstream + a secret holding the (fake) OpenAI key."""

    def __init__(self) -> None:
        self._exit = ExitStack()
        self.moto: MotoServer | None = None
        self.upstream: UpstreamProcess | None = None
        self.api_key = "sk-benchmark-" + secrets.token_hex(8)
        self.idempotency_table: str | None = None

    def _create_idempotency_table(self) -> str | None:
        """The table the template gives the function (set up as local.moto does), unless switched off."""
        create = getattr(self.moto, "create_idempotency_table", None)
        if not idempotency_enabled() or create is None:
            return None
        create(IDEMPOTENCY_TABLE)
        return IDEMPOTENCY_TABLE

    def __enter__(self) -> Stack:
        try:
            self.moto = MotoServer()
            self._exit.callback(self.moto.stop)
            self.moto.start()
            self.upstream = UpstreamProcess()
            self._exit.callback(self.upstream.stop)
            self.upstream.start()
            self.moto.secrets_client().create_secret(Name=SECRET_ID, SecretString=self.api_key)
            self.idempotency_table = self._create_idempotency_table()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit.close()

    @property
    def base_url(self) -> str:
        assert self.upstream is not None
        return self.upstream.base_url

    def child_env(self) -> dict[str, str]:
        """The environment of every measured process (the same for every variant)."""
        assert self.moto is not None
        env = {key: value for key, value in os.environ.items() if not key.startswith(("OPENAI_", "AWS_"))}
        env.update(self.moto.env())
        env.update(
            {
                "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
                "OPENAI_BASE_URL": self.base_url,
                "OPENAI_API_KEY_SECRET_ID": SECRET_ID,
                "POWERTOOLS_SERVICE_NAME": "lambda-chat",
                "POWERTOOLS_LOGGER_LOG_EVENT": "false",
                "LOG_LEVEL": "INFO",  # the template's default: one JSON log line per call, kept on
            }
        )
        if self.idempotency_table:
            env["IDEMPOTENCY_TABLE"] = self.idempotency_table
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env


def standalone(run: Callable[[Stack, Config], object]) -> int:
    """One benchmark on its own: the machine report, a stack, the run; 1 if it reported an error."""
    stop_on_sigterm()
    config = Config.from_env()
    print(machine_report(config))
    with Stack() as stack:
        figures = run(stack, config)
    return 1 if isinstance(figures, dict) and "error" in figures else 0


def run_main(main: Callable[[], int]) -> NoReturn:
    """Run an entry point; Ctrl-C ends it with every process started here stopped."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: every process started here has been stopped", file=sys.stderr)
        sys.exit(130)
