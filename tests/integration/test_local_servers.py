"""Starting the local servers (local.moto, local.model): log files, readiness, and what a failure says.

Fake servers are small `python -c` programs on loopback; the tests marked e2e use the real llama.cpp
server (and `make model`'s environment), as tests/e2e does.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.model import MODEL_PYTHON, LocalModelServer
from local.moto import MotoServer, ServerProcess, port_open

ROOT = Path(__file__).resolve().parents[2]

# A fake server: prints a line to each stream, then listens on the port it is given.
LISTENS = (
    "import socket, sys, time\n"
    "print('fake server starting'); print('a line on stderr', file=sys.stderr)\n"
    "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
    "print('listening', flush=True); time.sleep(60)\n"
)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def listens(port: int) -> list[str]:
    return [*python(LISTENS), str(port)]


@pytest.fixture
def taken_port() -> Iterator[socket.socket]:
    """A port another process took (bound, without SO_REUSEADDR): binding it fails with "address already in use"."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


def test_a_server_that_exits_at_once_raises_with_the_tail_of_its_log(tmp_path: Path) -> None:
    # Given a server that writes 40 lines and exits with code 3 before it listens
    server = ServerProcess("quitter", tmp_path)
    code = "import sys\nfor i in range(40): print(f'line {i}')\nsys.exit(3)"
    # When it is started
    with pytest.raises(RuntimeError) as raised:
        server.start(lambda port: python(code), port_open, timeout=30)
    # Then the error says so, where the log is, and shows its last 30 lines only
    message = str(raised.value)
    assert f"quitter on 127.0.0.1:{server.port} exited with code 3" in message
    assert str(tmp_path / f"quitter-{server.port}.log") in message
    assert "line 39" in message and "line 10" in message
    assert "line 9\n" not in message
    # And the log keeps the whole output
    assert server.log_path.read_text().splitlines() == [f"line {i}" for i in range(40)]


def test_a_server_that_is_never_ready_is_stopped_and_the_error_shows_its_log(tmp_path: Path) -> None:
    # Given a server that says it is loading and then never listens
    server = ServerProcess("sleeper", tmp_path)
    code = "import time\nprint('loading the model...')\ntime.sleep(60)"
    # When it is started with a 1 s timeout
    with pytest.raises(RuntimeError) as raised:
        server.start(lambda port: python(code), port_open, timeout=1)
    # Then the error is a timeout that shows what the server printed, and the server is gone
    message = str(raised.value)
    assert f"sleeper on 127.0.0.1:{server.port} not ready within 1 s" in message
    assert "loading the model..." in message
    assert server._process is not None and server._process.poll() is not None


def test_the_log_file_holds_stdout_and_stderr_and_is_kept_after_stop(tmp_path: Path) -> None:
    # Given a server that writes to both streams and then listens
    server = ServerProcess("chatty", tmp_path / "logs")  # the directory is created as needed
    # When it is started and stopped
    server.start(listens, port_open, timeout=30)
    assert port_open(server.port)
    server.stop()
    # Then its log, named after it and its port, holds both streams
    assert server.log_path == tmp_path / "logs" / f"chatty-{server.port}.log"
    assert server.log_path.read_text().splitlines() == ["fake server starting", "a line on stderr", "listening"]


def test_a_port_taken_meanwhile_is_retried_on_a_new_port(tmp_path: Path, taken_port: socket.socket) -> None:
    # Given a server whose port another process takes before the server binds it
    server = ServerProcess("racer", tmp_path)
    taken = taken_port.getsockname()[1]
    server.port = taken
    # When it is started
    server.start(listens, port_open, timeout=30)
    try:
        # Then it listens on another port, and the first attempt's log says why it moved
        assert server.port != taken and port_open(server.port)
        assert "address already in use" in (tmp_path / f"racer-{taken}.log").read_text().lower()
    finally:
        server.stop()


def test_a_taken_port_is_reported_with_the_log_once_the_attempts_run_out(
    tmp_path: Path, taken_port: socket.socket
) -> None:
    # Given a server whose port is taken, and a single attempt
    server = ServerProcess("racer", tmp_path)
    server.port = taken_port.getsockname()[1]
    # When it is started
    with pytest.raises(RuntimeError) as raised:
        server.start(listens, port_open, timeout=30, attempts=1)
    # Then the error carries the server's own words
    assert "exited with code 1" in str(raised.value)
    assert "address already in use" in str(raised.value).lower()


def test_moto_server_writes_its_requests_to_its_log(tmp_path: Path) -> None:
    # Given moto_server started with its log in a directory of ours
    moto = MotoServer(log_dir=tmp_path).start()
    try:
        # When it serves a request
        moto.secrets_client().list_secrets()
    finally:
        moto.stop()
    # Then its log holds the request
    assert moto.log_path == tmp_path / f"moto_server-{moto.port}.log"
    assert "POST / HTTP/1.1" in moto.log_path.read_text()


def test_the_model_server_gets_a_key_that_starts_with_a_dash_as_its_key() -> None:
    # Given a key such as secrets.token_urlsafe returns 1 time in 64 (make run's key)
    key = "-" + secrets.token_urlsafe(24)
    # When the server's command line is parsed as llama_cpp.server's argparse parser does
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--api_key", type=str)
    parser.add_argument("--port", type=str)
    args, _ = parser.parse_known_args(LocalModelServer(api_key=key).command(1234)[3:])
    # Then the key is the key, not an unknown option that leaves --api_key without a value
    assert args.api_key == key and args.port == "1234"


def model_is_set_up() -> None:
    if not (MODEL_PYTHON.parent.parent / ".installed").exists():
        pytest.fail("the local model's environment is not set up (run `make model`)")


@pytest.mark.e2e
def test_the_real_model_server_starts_with_a_key_that_starts_with_a_dash(tmp_path: Path) -> None:
    # Given the real llama.cpp server and a key that starts with "-"
    model_is_set_up()
    key = "-" + secrets.token_urlsafe(24)
    # When it is started with that key (before the fix: "exited with code 2", nothing else)
    with LocalModelServer(api_key=key, log_dir=tmp_path) as server:
        # Then it serves the model to that key
        assert server._serves_models(server.port)
    assert "Uvicorn running" in server.log_path.read_text()


@pytest.mark.e2e
def test_the_real_model_server_ignores_its_settings_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken_port: socket.socket
) -> None:
    # Given llama_cpp.server settings in the environment, which it reads over (PORT, HOST) or besides its
    # command line: PORT naming a port that is taken, and CACHE as `make run CACHE=...` exports it
    model_is_set_up()
    monkeypatch.setenv("PORT", str(taken_port.getsockname()[1]))
    monkeypatch.setenv("HOST", "0.0.0.0")  # what the server must not bind to
    monkeypatch.setenv("CACHE", str(tmp_path / "cache"))
    # When the server is started
    with LocalModelServer(api_key="local-key", log_dir=tmp_path) as server:
        # Then it serves on its own port on loopback
        assert server._serves_models(server.port)
    assert f"127.0.0.1:{server.port}" in server.log_path.read_text()


@pytest.mark.e2e
def test_a_failed_model_assembly_leaves_nothing_make_takes_for_the_model(tmp_path: Path) -> None:
    # Given `make model` into an empty cache, with files limited to 100 MB so the 253 MB assembly fails midway
    model_is_set_up()

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000_000, resource.RLIM_INFINITY))

    make = ["make", "-s", "-C", str(ROOT), f"CACHE={tmp_path}"]
    env = {**os.environ, "MAKEFLAGS": ""}
    # When it runs
    failed = subprocess.run([*make, "model"], env=env, preexec_fn=limit_file_size, capture_output=True, check=False)
    # Then it fails, leaves no file behind, and the next `make model` knows the model is still to be made
    assert failed.returncode != 0, failed.stdout + failed.stderr
    assert list((tmp_path / "models").iterdir()) == []
    assert subprocess.run([*make, "-q", "model"], env=env, check=False).returncode == 1
