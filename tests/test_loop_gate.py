"""The suite's own gate (tests/conftest.py): a callback holding the event loop is caught."""

from __future__ import annotations

import asyncio
import gc
import time

from tests.conftest import LOOP_WATCH, SLOW_CALLBACK


def burn(seconds: float) -> None:
    """Hold the CPU (not just the clock) for `seconds`."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_callback_burning_the_cpu_is_reported_and_a_collection_is_not() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(burn, SLOW_CALLBACK * 2)
        loop.call_soon(gc.collect)  # a collection is the process's cost, not the callback's
        loop.call_soon(time.sleep, SLOW_CALLBACK * 2)  # sleeping holds the loop but no CPU
        await asyncio.sleep(0.01)

    asyncio.run(main())
    reports, LOOP_WATCH.reports[:] = list(LOOP_WATCH.reports), []  # not this test's failure
    assert len(reports) == 1, reports
    spent, what, frame = reports[0]
    assert "burn" in what and spent >= SLOW_CALLBACK * 2 and not frame


def test_a_textual_message_pump_step_is_a_frame_whatever_quotes_its_name_is_printed_with() -> None:
    async def pump() -> None:
        burn(SLOW_CALLBACK * 2)

    async def main() -> None:
        # repr() prints this name in double quotes, for the single quotes inside it; wait_for
        # wraps pump() in a coroutine not of tests/, whose steps the gate would leave out
        step = asyncio.wait_for(pump(), None)
        await asyncio.create_task(step, name="message pump StageTree(id='tree')")

    asyncio.run(main())
    reports, LOOP_WATCH.reports[:] = list(LOOP_WATCH.reports), []
    assert [frame for _, _, frame in reports] == [True], reports


def test_a_step_of_any_of_textuals_own_tasks_is_a_frame_too() -> None:
    """Not only message pumps: a timer's callback runs in a Textual task (here the app's own
    under run_test; a screen's "screen_update" timer in its Timer task) and is a frame."""
    from textual.app import App

    async def main() -> None:
        app: App[None] = App()
        async with app.run_test() as pilot:
            app.set_timer(0.01, lambda: burn(SLOW_CALLBACK * 2))
            await pilot.pause(0.1)

    asyncio.run(main())
    reports, LOOP_WATCH.reports[:] = list(LOOP_WATCH.reports), []
    assert [frame for spent, _, frame in reports if spent >= SLOW_CALLBACK * 2] == [True], reports
