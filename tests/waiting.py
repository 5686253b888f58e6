"""Waiting in tests: for a condition, with a deadline; never a bare sleep as synchronisation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

PAUSE = 0.01  # seconds between two looks


async def until(
    check: Callable[[], object],
    what: str = "the condition",
    timeout: float = 30.0,
    pause: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Let the event loop run until `check()` holds; fail naming `what` after `timeout` seconds.
    `pause` waits between looks (a Textual Pilot's `pause` lets the app draw meanwhile)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what}")
        await pause(PAUSE)


def until_blocking(check: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """`until` for a test without an event loop (its pipedeck runs in another process)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what}")
        time.sleep(PAUSE)
