"""How the async core waits on blocking work (boto3, Powertools Idempotency), in each entry point.

The service is written once, async. The streaming app runs it on its event loop, where blocking work goes to a
worker thread. The handler function serves one call at a time and has nothing else to run meanwhile: there, the
core's blocking steps run in place, and the core is driven without an event loop (`drive`), so a buffered call
pays neither a loop nor a thread hand-off.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Runner(Protocol):
    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """Blocking `work(*args)`, from the core."""
        ...

    def back(self, work: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """The core's `work(*args)`, from inside blocking work that `run` is running."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class Inline:
    """The handler function's runner: each step in place, one call at a time."""

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        return work(*args)

    def back(self, work: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        return drive(work(*args))

    async def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Threads:
    """The streaming app's runner: blocking work in anyio's worker threads, the core on the event loop."""

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        import anyio.to_thread

        return await anyio.to_thread.run_sync(work, *args)

    def back(self, work: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        import anyio.from_thread

        return anyio.from_thread.run(work, *args)

    async def sleep(self, seconds: float) -> None:
        import anyio

        await anyio.sleep(seconds)


class Suspended(RuntimeError):
    """A coroutine driven inline waited on something only an event loop could wake."""


def drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (every await in it ends at once) to its result, with no event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise Suspended("an inline call awaited an event loop's work; its edges must all be blocking")


INLINE = Inline()
THREADS = Threads()
