"""Fixtures shared by every test folder: pipeline files in tmp dirs and an event recorder."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import sys
import textwrap
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import textual

from engine.events import Event, LogLines, StageStatus

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_pipelines"
TESTS = str(REPO / "tests") + os.sep
TEXTUAL = str(Path(textual.__file__).parent) + os.sep
SLOW_CALLBACK = 0.02  # CPU seconds a callback may hold the event loop (issue 10)
# A step of a Textual task lays out and renders a whole screen (plus whatever messages were
# queued): at 160x48 that is 20-30 ms of Textual's own compositor on this machine (a screen's
# first frame, with its widgets' mount, up to 52 ms), so it fails only past this and is
# reported past SLOW_CALLBACK (docs/benchmarks.md, "event loop").
SLOW_FRAME = 0.08


class SlowFrameWarning(UserWarning):
    """A Textual task's step took longer than SLOW_CALLBACK (but not SLOW_FRAME)."""


class _LoopWatch:
    """Measures every event-loop callback (asyncio's `Handle._run`, which runs task steps,
    `call_soon` and timer callbacks alike, in any loop: pytest-asyncio's, `asyncio.run`'s,
    Textual's) by its thread's CPU time, less the garbage collections that ran within it.
    CPU time rather than asyncio's debug-mode wall time: on a shared 2-core machine wall time
    measures the machine (a callback waiting for a CPU), not the code; a collection is the whole
    process's cost, not the callback's."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, str, bool]] = []  # (CPU seconds, what, a frame?)
        self._local = threading.local()
        self._run = asyncio.events.Handle._run

    def install(self) -> None:
        watch, run = self, self._run

        def timed(handle: asyncio.Handle) -> None:
            local = watch._local
            gc_before = getattr(local, "gc", 0.0)
            start = time.thread_time()
            run(handle)
            spent = time.thread_time() - start - (getattr(local, "gc", 0.0) - gc_before)
            if spent > SLOW_CALLBACK:
                task = getattr(handle._callback, "__self__", None)  # a task's step: which task
                if not _test_code(task):
                    what = task if isinstance(task, asyncio.Task) else handle
                    watch.reports.append((spent, repr(what), _frame(task)))

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]
        gc.callbacks.append(self._collecting)

    def _collecting(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._local.gc_start = time.thread_time()
        else:
            started = getattr(self._local, "gc_start", time.thread_time())
            self._local.gc = getattr(self._local, "gc", 0.0) + time.thread_time() - started


def _code(task: object) -> types.CodeType | None:
    """The code object of a task's coroutine (None: not a task, or not a coroutine's)."""
    return getattr(task.get_coro(), "cr_code", None) if isinstance(task, asyncio.Task) else None


def _test_code(task: object) -> bool:
    """A test function's own task (or a snapshot test's auto pilot): its set-up (writing files,
    loading a 1000-stage pipeline) is the test's, not a callback of pipedeck's; pipedeck's own
    tasks and callbacks all count."""
    code = _code(task)
    if code is None:
        return False
    # Textual's auto pilot runs a snapshot test's script and then exports the SVG screenshot
    return code.co_filename.startswith(TESTS) or code.co_name == "run_auto_pilot"


def _frame(task: object) -> bool:
    """A step of one of Textual's own tasks: a message pump (which runs our handlers too), a
    screen's "screen_update" timer composing the screen, the app's shut-down."""
    if not isinstance(task, asyncio.Task):
        return False
    code = _code(task)
    in_textual = code is not None and code.co_filename.startswith(TEXTUAL)
    return in_textual or task.get_name().startswith("message pump ")


LOOP_WATCH = _LoopWatch()


def pytest_configure(config: pytest.Config) -> None:
    LOOP_WATCH.install()


@pytest.fixture(autouse=True)
def no_slow_callbacks() -> Iterator[None]:
    """Nothing slow on the event loop: a test fails when any callback of any loop it ran held
    its thread for more than SLOW_CALLBACK of CPU time (a Textual task's: SLOW_FRAME)."""
    LOOP_WATCH.reports.clear()
    yield
    reports, LOOP_WATCH.reports[:] = list(LOOP_WATCH.reports), []
    failing = [r for r in reports if not r[2] or r[0] > SLOW_FRAME]
    text = "\n".join(f"{spent * 1000:.0f} ms CPU in {what}" for spent, what, _ in reports)
    if failing:
        pytest.fail("slow callbacks on the event loop:\n" + text)
    if reports:
        warnings.warn(SlowFrameWarning("slow frames:\n" + text), stacklevel=1)


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
