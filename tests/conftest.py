"""Fixtures shared by every test folder: pipeline files in tmp dirs and an event recorder."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from pytest_asyncio import is_async_test

from engine.events import Event, LogLines, StageStatus

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_pipelines"
SLOW_CALLBACK = 0.02  # seconds a callback may hold the event loop (issue 10): reported
FAILING_CALLBACK = 0.1  # in STRICT_LOOP files, a report over this fails the test: past a garbage
# collection or a busy disk on a shared 2-core machine, only a real fault of ours takes that long
# Where a slow engine callback fails the test (the scheduler's own tests); elsewhere it warns:
# remote executors (asyncssh key loading, Slurm commands) and the TUI still have some.
STRICT_LOOP = tuple(
    f"tests/engine/test_{name}.py"
    for name in ("run", "scheduler", "status_truth", "stress", "local_executor", "process_tree")
)
ENGINE = str(REPO / "engine") + os.sep


class SlowCallbackWarning(UserWarning):
    """A callback held the event loop longer than SLOW_CALLBACK."""


class _SlowCallbacks(logging.Handler):
    """Collects asyncio's debug-mode reports of callbacks that held the loop too long."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reports: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing ") and " took " in message:
            self.reports.append(message)


class _DebugLoops(asyncio.DefaultEventLoopPolicy):
    """Event loops in asyncio's debug mode, reporting callbacks slower than SLOW_CALLBACK."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        _debug(loop)
        return loop


def _debug(loop: asyncio.AbstractEventLoop) -> None:
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK


@pytest_asyncio.fixture
async def _debug_test_loop() -> None:
    """pytest-asyncio's loop for this test, in debug mode (its runner resets what the policy
    set): given to every async test by `pytest_collection_modifyitems`."""
    _debug(asyncio.get_running_loop())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if is_async_test(item):
            item.fixturenames.append("_debug_test_loop")  # type: ignore[attr-defined]


def _took(report: str) -> float:
    """The seconds in asyncio's "... took 0.080 seconds" report."""
    found = re.search(r"took ([0-9.]+) seconds", report)
    return float(found.group(1)) if found else 0.0


def _overloaded() -> bool:
    """More runnable processes than CPUs: asyncio measures wall time, which then measures the
    machine (a callback waiting for a CPU) rather than the code."""
    return os.getloadavg()[0] > (os.cpu_count() or 1)


@pytest.fixture(autouse=True)
def no_slow_callbacks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Nothing slow on the event loop: every loop a test makes (pytest-asyncio's, asyncio.run's)
    reports callbacks over SLOW_CALLBACK. In STRICT_LOOP files a report of a task running
    engine code for over FAILING_CALLBACK fails the test, unless the machine is overloaded; any
    other report is a SlowCallbackWarning."""
    handler = _SlowCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_DebugLoops())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(previous)
        logger.removeHandler(handler)
    if not handler.reports:
        return
    text = "slow callbacks on the event loop:\n" + "\n".join(handler.reports)
    where = Path(str(request.node.fspath)).relative_to(REPO).as_posix()
    engine = [  # not a test's own blocking code
        r for r in handler.reports if f"running at {ENGINE}" in r and _took(r) > FAILING_CALLBACK
    ]
    if engine and where.startswith(STRICT_LOOP) and not _overloaded():
        pytest.fail(text)
    warnings.warn(SlowCallbackWarning(text), stacklevel=1)


class Recorder:
    """A subscriber keeping every event, with helpers to ask what happened."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def statuses(self, stage: str) -> list[str]:
        """Every status the stage went through, in order."""
        return [e.status for e in self.events if isinstance(e, StageStatus) and e.stage == stage]

    def final(self, stage: str) -> StageStatus:
        """The stage's last status event."""
        return [e for e in self.events if isinstance(e, StageStatus) and e.stage == stage][-1]

    def lines(self, stage: str, stream: str | None = None) -> list[str]:
        """Every log line the stage printed (on one stream, or both)."""
        return [
            line
            for e in self.events
            if isinstance(e, LogLines) and e.stage == stage and stream in (None, e.stream)
            for line in e.lines
        ]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def write_pipeline(tmp_path: Path) -> Callable[[str], Path]:
    """Write a pipeline file (dedented) into a fresh workspace; returns its path."""

    def write(text: str, name: str = "pipedeck.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


def pipedeck_bin() -> str:
    """The installed `pipedeck` script of the interpreter running the tests."""
    beside = Path(sys.executable).parent / "pipedeck"
    found = str(beside) if beside.exists() else shutil.which("pipedeck")
    assert found, "pipedeck is not installed: run `make test`"
    return found


def marked_pids(run_id: str) -> list[int]:
    """Processes (other than zombies) whose environment carries PIPEDECK_RUN_ID=run_id."""
    needle = f"PIPEDECK_RUN_ID={run_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env.split(b"\0") and state != "Z":
            found.append(int(entry))
    return found
