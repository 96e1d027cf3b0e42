"""How the async core is driven: inline with no event loop (the handler), or on a loop with worker threads (the app)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from lambda_chat import runners
from lambda_chat.runners import INLINE, THREADS, drive


async def doubled(value: int) -> int:
    return value * 2


def test_drive_returns_what_a_coroutine_that_never_suspends_returns() -> None:
    # Given a coroutine whose awaits all end at once
    async def work() -> int:
        return await doubled(await doubled(5))

    # When it is driven inline
    result = drive(work())

    # Then its value comes back, with no event loop running
    assert result == 20


def test_drive_propagates_the_coroutines_exception() -> None:
    # Given a coroutine that fails
    async def failing() -> None:
        await doubled(1)
        raise LookupError("the failure itself")

    # When it is driven, Then its own exception comes out
    with pytest.raises(LookupError, match="the failure itself"):
        drive(failing())


def test_drive_refuses_a_coroutine_that_waits_on_an_event_loop_and_closes_it() -> None:
    # Given a coroutine that awaits something only an event loop can wake
    cleaned_up: list[bool] = []

    async def suspending() -> int:
        try:
            await asyncio.sleep(0)
            return 1
        finally:
            cleaned_up.append(True)

    coroutine = suspending()

    # When it is driven inline
    with pytest.raises(runners.Suspended):
        drive(coroutine)

    # Then it was closed at once (its clean-up ran), not left pending for the garbage collector
    assert cleaned_up == [True]
    assert coroutine.cr_frame is None


def test_inline_run_and_back_nest_inside_a_driven_coroutine() -> None:
    # Given blocking work that calls back into the core, as the idempotency guard does
    threads: list[int] = []

    def blocking(value: int) -> int:
        threads.append(threading.get_ident())
        return INLINE.back(doubled, value) + 1

    async def core() -> int:
        return await INLINE.run(blocking, 20)

    # When the core is driven inline
    result = drive(core())

    # Then the blocking work ran in place, and its call back into the core was driven too
    assert result == 41
    assert threads == [threading.get_ident()]


def test_inline_sleep_does_not_need_an_event_loop() -> None:
    # Given a core step that sleeps with the inline runner
    async def core() -> str:
        await INLINE.sleep(0)
        return "slept"

    # When driven inline, Then it ends (the sleep blocked in place instead of suspending)
    assert drive(core()) == "slept"


def test_threads_run_and_back_round_trip_under_asyncio_run() -> None:
    # Given blocking work that calls back into the core, and a core that runs it with the threads runner
    seen: dict[str, int] = {}

    async def on_the_loop(value: int) -> int:
        seen["back"] = threading.get_ident()
        await asyncio.sleep(0)  # really on the loop: this may suspend
        return value * 3

    def blocking(value: int) -> int:
        seen["work"] = threading.get_ident()
        return THREADS.back(on_the_loop, value) + 1

    async def core() -> int:
        seen["loop"] = threading.get_ident()
        result = await THREADS.run(blocking, 7)
        await THREADS.sleep(0)
        return result

    # When the core runs on an event loop
    result = asyncio.run(core())

    # Then the blocking work ran in a worker thread, and the call back ran on the loop's thread
    assert result == 22
    assert seen["work"] != seen["loop"]
    assert seen["back"] == seen["loop"]
