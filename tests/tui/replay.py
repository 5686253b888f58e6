"""A deterministic event source for snapshot tests: recorded events over logs written beforehand.

`ReplayRun` has the interface of `engine.run.Run` that the run screen uses; its `execute()`
publishes a fixed list of events (with fixed timestamps) and, for a run caught mid-way, then
stays running. With a fixed clock the screen is the same on every machine.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

from engine.events import (
    FAILED,
    QUEUED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    WAITING,
    Event,
    HostState,
    HostStatus,
    LogLines,
    RunFinished,
    RunStarted,
    StageStatus,
    StepStatus,
)
from engine.gha.commands import step_marker
from engine.loader import load
from engine.logs import LogStore
from engine.run import StageState
from engine.spec import Pipeline

T0 = 1_764_000_000.0  # every event's ts is T0 + a fixed offset
RUN_ID = "20251124-160000-snap01"

PIPELINE = """\
version: 1
name: shop-ci
hosts:
  buildbox:
    address: 127.0.0.1
stages:
  lint:
    run: ruff check .
  test:
    needs: [lint]
    matrix:
      python: ["3.11", "3.12"]
    retries: 2
    run: pytest -q
  build:
    needs: [test]
    host: buildbox
    run: python -m build
  deploy:
    needs: [build]
    when: manual
    run: ./deploy.sh
"""
# `remote`: a second SSH host and a stage on it (an end-to-end suite on a GPU box)
REMOTE_PIPELINE = PIPELINE.replace(
    "stages:\n", "  gpu1:\n    address: 10.0.0.7\nstages:\n"
).replace(
    "  deploy:\n",
    "  e2e:\n    needs: [test]\n    host: gpu1\n    run: pytest -q tests/e2e\n  deploy:\n",
)
HOSTS = {"build": "buildbox", "e2e": "gpu1"}  # stage -> host (the others run locally)
GPU1_DOWN = "host gpu1: 10.0.0.7:22 unreachable: no answer within 15s"  # as the engine says

LINT_LOG = [
    ("stdout", "\x1b[1mruff\x1b[0m check . (412 files)"),
    *(("stdout", f"src/shop/module_{i:02d}.py: ok") for i in range(1, 40)),
    ("stderr", "src/shop/cart.py:12:5: \x1b[31mE501\x1b[0m error: line too long (104 > 100)"),
    ("stdout", "src/shop/cart.py: 1 warning"),
    ("stderr", "src/shop/orders.py:88:1: \x1b[31mF401\x1b[0m error: `os` imported but unused"),
    ("stdout", "Found 2 errors (fixed 2)."),
    ("stdout", "All checks passed!"),
]
TEST_LOG = [
    ("stdout", "============ test session starts ============"),
    ("stdout", "collected 128 items"),
    *(
        ("stdout", f"tests/test_{name}.py \x1b[32m........\x1b[0m [{pct:3d}%]")
        for name, pct in (
            ("cart", 12),
            ("orders", 25),
            ("payments", 37),
            ("users", 50),
            ("search", 62),
            ("catalog", 75),
        )
    ),
    ("stdout", "downloading fixtures 10%\rdownloading fixtures 55%\rdownloading fixtures 100%"),
]
BUILD_LOG = [
    ("stdout", "* Creating isolated environment: venv+pip..."),
    ("stdout", "* Building sdist..."),
    ("stdout", "* Building wheel from sdist"),
]
FAIL_LOG = [
    *TEST_LOG,
    ("stdout", "tests/test_checkout.py \x1b[31mF\x1b[0m"),
    ("stdout", "================ FAILURES ================"),
    ("stdout", "___________ test_checkout_total ___________"),
    ("stderr", "AssertionError: assert 41.99 == 42.0"),
    ("stdout", "\x1b[31m1 failed\x1b[0m, 127 passed in 3.41s"),
]


def status(stage: str, state: str, at: float, attempt: int = 1, **extra: object) -> StageStatus:
    """A recorded `stage_status` event at T0 + `at`."""
    host = HOSTS.get(stage, "local")
    return StageStatus(RUN_ID, stage, state, attempt, host, ts=T0 + at, **extra)  # type: ignore[arg-type]


@dataclass
class ReplayRun:
    """Replays `events`; stays running after them unless they end with `run_finished`."""

    pipeline: Pipeline
    logs: LogStore
    events: list[Event]
    run_id: str = RUN_ID
    running: bool = False
    states: dict[str, StageState] = field(default_factory=dict)  # all pending at first
    host_states: dict[str, HostState] = field(default_factory=dict)
    _subscribers: list[Callable[[Event], None]] = field(default_factory=list)

    def subscribe(self, fn: Callable[[Event], None]) -> Callable[[], None]:
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn)

    async def execute(self) -> int:
        self.running = True
        for event in self.events:
            if isinstance(event, HostStatus):
                self.host_states[event.host] = HostState(event.state, event.reason)
            for fn in self._subscribers:
                fn(event)
        last = self.events[-1]
        if isinstance(last, RunFinished):
            self.running = False
            return last.exit_code
        await asyncio.Event().wait()  # mid-run: never finishes by itself
        return 0

    async def close(self) -> None:
        return None

    # A replay takes no commands: the snapshots never send any.
    def cancel(self, stage_id: str) -> None: ...
    def cancel_all(self) -> None: ...
    def rerun(self, stage_id: str) -> None: ...
    def rerun_failed(self) -> None: ...
    def approve(self, stage_id: str) -> None: ...


def write_log(
    store: LogStore, stage: str, attempt: int, lines: list[tuple[str, str]], at: float = 0.0
) -> list[LogLines]:
    """Store a log the way the engine does, through a `LogWriter`; return the `LogLines`
    events the engine would have published (one per line, `at` seconds after T0)."""
    writer = store.writer(RUN_ID, stage, attempt)
    events = []
    for stream, text in lines:
        stored = writer.feed(stream, text.encode() + b"\n")
        events.append(LogLines(RUN_ID, stage, attempt, stream, tuple(stored), ts=T0 + at))
    writer.finish()
    return events


def interleave(*streams: list[LogLines]) -> list[LogLines]:
    """The events of several stages, alternating as concurrent stages' output arrives."""
    out: list[LogLines] = []
    for group in zip_longest(*streams):
        out += [event for event in group if event is not None]
    return out


def scenario(root: Path, name: str) -> ReplayRun:
    """One of the recorded runs: `mid_run`, `failed`, `manual_waiting` or `remote`."""
    path = root / "pipedeck.yaml"
    path.write_text(REMOTE_PIPELINE if name == "remote" else PIPELINE)
    pipeline = load(path)
    store = LogStore(pipeline.state_dir / "logs")
    t311, t312 = "test[python=3.11]", "test[python=3.12]"
    lint = write_log(store, "lint", 1, LINT_LOG, 1.0)
    events: list[Event] = [
        RunStarted(RUN_ID, "shop-ci", tuple(pipeline.stages), ts=T0),
        status("lint", QUEUED, 0.0),
        status("lint", RUNNING, 0.1),
        *lint,
        status("lint", SUCCEEDED, 1.3, exit_code=0, duration=1.2),
        status(t311, RUNNING, 1.4),
        status(t312, RUNNING, 1.4),
    ]
    if name == "mid_run":
        events += interleave(
            write_log(store, t311, 1, TEST_LOG, 3.0), write_log(store, t312, 1, FAIL_LOG, 3.0)
        )
        events += write_log(store, t312, 2, TEST_LOG[:4], 6.0)
        events += [
            status(t312, FAILED, 4.9, exit_code=1, duration=3.5, reason="exit code 1"),
            status(t312, QUEUED, 5.0, attempt=2),
            status(t312, RUNNING, 5.1, attempt=2),
        ]
    elif name == "failed":
        events += interleave(
            write_log(store, t311, 1, TEST_LOG, 3.0), write_log(store, t312, 1, FAIL_LOG, 3.0)
        )
        for attempt in (2, 3):
            events += write_log(store, t312, attempt, FAIL_LOG, 10.0)
        events += [
            status(t311, SUCCEEDED, 5.2, exit_code=0, duration=3.8),
            status(t312, FAILED, 12.9, attempt=3, exit_code=1, duration=3.6, reason="exit code 1"),
            status("build", SKIPPED, 13.0, reason="an upstream stage failed"),
            status("deploy", SKIPPED, 13.0, reason="an upstream stage failed"),
            RunFinished(RUN_ID, "failed", 1, 13.0, ts=T0 + 13.0),
        ]
    elif name == "manual_waiting":
        write_log(store, t311, 1, TEST_LOG)
        write_log(store, t312, 1, TEST_LOG)
        write_log(store, "build", 1, [("stdout", "Successfully built shop-1.4.0.whl")])
        events += [
            status(t311, SUCCEEDED, 5.2, exit_code=0, duration=3.8),
            status(t312, SUCCEEDED, 5.4, exit_code=0, duration=4.0),
            status("build", RUNNING, 5.5),
            status("build", SUCCEEDED, 19.5, exit_code=0, duration=14.0),
            status("deploy", WAITING, 19.6),
            RunFinished(RUN_ID, "succeeded", 0, 19.6, ts=T0 + 19.6),
        ]
    elif name == "remote":
        write_log(store, t311, 1, TEST_LOG)
        write_log(store, t312, 1, TEST_LOG)
        write_log(store, "build", 1, BUILD_LOG)
        write_log(store, "e2e", 1, [])
        events += [
            status(t311, SUCCEEDED, 5.2, exit_code=0, duration=3.8),
            status(t312, SUCCEEDED, 5.4, exit_code=0, duration=4.0),
            status("build", RUNNING, 5.5),
            status("e2e", RUNNING, 5.5),
            HostStatus(RUN_ID, "buildbox", "connecting", ts=T0 + 5.5),
            HostStatus(RUN_ID, "gpu1", "connecting", ts=T0 + 5.5),
            HostStatus(RUN_ID, "buildbox", "connected", ts=T0 + 5.8),
            HostStatus(RUN_ID, "buildbox", "syncing", ts=T0 + 5.9),
            HostStatus(RUN_ID, "buildbox", "connected", ts=T0 + 6.4),
            HostStatus(RUN_ID, "gpu1", "failed", ts=T0 + 8.5, reason=GPU1_DOWN),
            status("e2e", FAILED, 8.5, reason=GPU1_DOWN),
        ]
    else:
        raise ValueError(name)
    return ReplayRun(pipeline, store, events)


JOB_PIPELINE = """\
version: 1
name: ci
stages:
  build:
    run: echo build
  test:
    matrix: {py: [a, b]}
    run: echo test
"""
# The job `build`'s log as the job runner writes it: 80 lines of checkout output, then the tests'.
JOB_LOG = [
    ("stdout", step_marker(step=0, name="Checkout", status=RUNNING)),
    ("stdout", "##[group]Checkout"),
    *[("stdout", f"checkout line {i}") for i in range(80)],
    ("stdout", "##[endgroup]"),
    ("stdout", step_marker(step=0, name="Checkout", status=SUCCEEDED, duration=1.5, exit_code=0)),
    ("stdout", step_marker(step=1, name="Run tests", status=RUNNING)),
    ("stdout", "##[group]Run tests"),
    ("stdout", "collected 12 items"),
    ("stdout", "tests/test_cart.py ............"),
]


def step(index: int, name: str, state: str, at: float, **extra: object) -> StepStatus:
    """A recorded `step_status` of the job `build` at T0 + `at`."""
    return StepStatus(RUN_ID, "build", 1, index, name, state, ts=T0 + at, **extra)  # type: ignore[arg-type]


def job_scenario(root: Path, *more: Event, text: str = JOB_PIPELINE) -> ReplayRun:
    """A GitHub Actions job `build` mid-run: its first step succeeded, its second is running
    (the engine's order: a marker's `LogLines`, then its `step_status`); then `more`. `text`:
    the pipeline (its job `build` is the one replayed)."""
    path = root / "pipedeck.yaml"
    path.write_text(text)
    pipeline = load(path)
    for sid, stage in pipeline.stages.items():  # jobs, as a workflow's loader makes them
        pipeline.stages[sid] = dataclasses.replace(stage, steps=True)
    store = LogStore(pipeline.state_dir / "logs")
    lines = write_log(store, "build", 1, JOB_LOG, at=2.0)
    return ReplayRun(
        pipeline,
        store,
        [
            RunStarted(RUN_ID, "ci", tuple(pipeline.stages), ts=T0),
            status("build", RUNNING, 0.1),
            *lines[:1],
            step(0, "Checkout", RUNNING, 0.2),
            *lines[1:84],
            step(0, "Checkout", SUCCEEDED, 1.7, duration=1.5, exit_code=0),
            *lines[84:85],
            step(1, "Run tests", RUNNING, 2.0),
            *lines[85:],
            *more,
        ],
    )
