"""Reading what the function metered (the figures `tests/conftest.py`'s `metered` fixture collects)."""

from __future__ import annotations

import time

from lambda_chat import telemetry


def the_call(metered: list[telemetry.CallFigures], timeout: float = 3.0) -> telemetry.CallFigures:
    """The one call's figures: a stream's are recorded when it ends, which may be just after the client is done."""
    deadline = time.monotonic() + timeout
    while not metered:
        assert time.monotonic() < deadline, f"no figures recorded in {timeout} s"
        time.sleep(0.02)
    assert len(metered) == 1, metered
    return metered[0]


def last(metered: list[telemetry.CallFigures], count: int = 1, timeout: float = 3.0) -> telemetry.CallFigures:
    """The latest call's figures, once `count` calls have been recorded: the streaming app records a call when its
    books close, just after the client has had its whole answer."""
    deadline = time.monotonic() + timeout
    while len(metered) < count:
        assert time.monotonic() < deadline, f"{len(metered)} of {count} calls recorded in {timeout} s"
        time.sleep(0.02)
    return metered[-1]
