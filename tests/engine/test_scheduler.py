"""The scheduler's state machine with a fake executor: orderings real processes can't pin down.

`FakeExecutor` runs no process: each attempt is a script the test controls (finish with an
exit code, hang until cancelled, take a while to be killed), and it records what happened in
order, including how many attempts of a stage were alive at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import pytest

from engine.events import RunFinished, StageStatus
from engine.executors.base import ExecResult, OutputSink
from engine.hosts import Hosts
from engine.loader import load
from engine.run import Run
from engine.spec import Stage
from engine.status import PENDING, RUNNING, TRANSITIONS, StageState, TransitionError
from tests.conftest import Recorder
from tests.waiting import until

Write = Callable[..., Path]
A_THEN_B = """
    version: 1
    stages:
      a: {run: x}
      b: {needs: [a], run: x}
"""
Script = Callable[[int], Awaitable[int]]  # attempt number -> exit code


class FakeExecutor:
    """An Executor whose attempts run `scripts[stage](attempt)` instead of a process."""

    def __init__(self, scripts: Mapping[str, Script], kill_time: float = 0.0) -> None:
        self.scripts = scripts
        self.kill_time = kill_time  # how long a cancelled attempt takes to die
        self.log: list[str] = []  # "a#1 start", "a#1 end", "a#1 killed"
        self.alive: dict[str, int] = {}
        self.most_alive: dict[str, int] = {}

    async def execute(self, stage: Stage, env: Mapping[str, str], sink: OutputSink) -> ExecResult:
        name = f"{stage.id}#{env['PIPEDECK_ATTEMPT']}"
        self.alive[stage.id] = self.alive.get(stage.id, 0) + 1
        self.most_alive[stage.id] = max(self.most_alive.get(stage.id, 0), self.alive[stage.id])
        self.log.append(f"{name} start")
        try:
            code = await self.scripts[stage.id](int(env["PIPEDECK_ATTEMPT"]))
        except asyncio.CancelledError:
            try:  # the kill takes its time, unless cancelled again (kill at once)
                await asyncio.shield(asyncio.sleep(self.kill_time))
            finally:
                self.log.append(f"{name} killed")
            raise
        finally:
            self.alive[stage.id] -= 1
        self.log.append(f"{name} end")
        return ExecResult(code)

    async def close(self) -> None:
        return None


async def exits(code: int, after: float = 0.0) -> int:
    await asyncio.sleep(after)
    return code


async def hangs(_: int) -> int:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def fake_run(path: Path, fake: FakeExecutor, recorder: Recorder, **options: object) -> Run:
    pipeline = load(path)
    run = Run(pipeline, hosts=Hosts(pipeline, options.pop("jobs", None), {"local": fake}))  # type: ignore[arg-type]
    run.subscribe(recorder)
    return run


async def test_cancel_while_queued_before_the_task_ever_ran(
    write_pipeline: Write, recorder: Recorder
) -> None:
    """The bug behind "queued forever": a task cancelled before its first step never ran its
    own cleanup; the stage stayed queued and the run never ended."""
    path = write_pipeline(A_THEN_B)
    fake = FakeExecutor({"a": lambda n: exits(0), "b": lambda n: exits(0)})
    run = fake_run(path, fake, recorder)

    def cancel_on_queue(event: object) -> None:
        if isinstance(event, StageStatus) and event.stage == "a" and event.status == "queued":
            run.cancel("a")  # from inside the move to queued: the task has not started

    run.subscribe(cancel_on_queue)
    assert await asyncio.wait_for(run.execute(), 5) == 130  # cancelled by request: interrupted
    assert recorder.statuses("a") == ["queued", "cancelled"]
    assert recorder.final("a").reason == "by request, before it started"
    assert recorder.final("b").status == "skipped"
    assert fake.log == []


async def test_cancel_while_waiting_for_a_slot(write_pipeline: Write, recorder: Recorder) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          a: {run: x}
          b: {run: x}
    """)
    release = asyncio.Event()

    async def a(_: int) -> int:
        await release.wait()
        return 0

    fake = FakeExecutor({"a": a, "b": lambda n: exits(0)})
    run = fake_run(path, fake, recorder, jobs=1)
    task = asyncio.create_task(run.execute())
    await until(
        lambda: fake.log == ["a#1 start"] and recorder.statuses("b") == ["queued"], "b queued"
    )
    run.cancel("b")
    await until(lambda: recorder.final("b").status == "cancelled", "b cancelled")
    release.set()
    assert await asyncio.wait_for(task, 5) == 130
    assert fake.log == ["a#1 start", "a#1 end"]  # b never started


async def test_retry_after_a_timeout_starts_only_once_the_first_attempt_is_dead(
    write_pipeline: Write, recorder: Recorder
) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          a: {run: x, timeout: 0.1s, retries: 1}
    """)
    fake = FakeExecutor({"a": lambda n: hangs(n) if n == 1 else exits(0)}, kill_time=0.2)
    run = fake_run(path, fake, recorder)
    assert await asyncio.wait_for(run.execute(), 5) == 0
    assert recorder.statuses("a") == ["queued", "running", "timed_out", "running", "succeeded"]
    assert fake.log == ["a#1 start", "a#1 killed", "a#2 start", "a#2 end"]
    assert fake.most_alive["a"] == 1


async def test_an_exit_noticed_late_is_not_a_timeout(
    write_pipeline: Write, recorder: Recorder
) -> None:
    """The process ended within its time, but the loop was stalled (SIGSTOP, a suspended
    laptop) until after the deadline, so the exit is noticed only after the timer fired."""
    path = write_pipeline("""
        version: 1
        stages:
          a: {run: x, timeout: 0.2s}
    """)
    loop = asyncio.get_running_loop()

    async def a(_: int) -> int:
        exited = loop.create_future()

        def stall_then_exit() -> None:
            time.sleep(0.4)  # the whole process is stopped past the deadline
            # the exit arrives from a watcher thread a moment after the deadline's timer ran
            notice = threading.Timer(0.03, loop.call_soon_threadsafe, (exited.set_result, 0))
            notice.start()

        loop.call_later(0.1, stall_then_exit)
        return await exited

    fake = FakeExecutor({"a": a})
    run = fake_run(path, fake, recorder)
    loop.slow_callback_duration = 1.0  # the stall is the point of this test
    assert await asyncio.wait_for(run.execute(), 5) == 0
    assert recorder.statuses("a") == ["queued", "running", "succeeded"]
    assert fake.log == ["a#1 start", "a#1 end"]


async def test_commands_during_a_kill_keep_one_attempt_alive(
    write_pipeline: Write, recorder: Recorder
) -> None:
    """rerun, cancel, rerun while the first attempt is being killed: the next attempt starts
    once, after the first is dead; the last command wins."""
    path = write_pipeline(A_THEN_B)
    fake = FakeExecutor({"a": lambda n: hangs(n) if n == 1 else exits(0), "b": lambda n: exits(0)})
    fake.kill_time = 0.3
    run = fake_run(path, fake, recorder)
    task = asyncio.create_task(run.execute())
    await until(lambda: fake.log == ["a#1 start"], "a running")
    run.rerun("a")
    await asyncio.sleep(0.05)  # the kill is under way (it takes 0.3 s)
    assert run.states["a"].status == RUNNING and fake.alive["a"] == 1
    run.cancel("a")
    run.rerun("a")
    run.rerun("a")
    assert await asyncio.wait_for(task, 5) == 0
    assert fake.log == ["a#1 start", "a#1 killed", "a#2 start", "a#2 end", "b#1 start", "b#1 end"]
    assert fake.most_alive["a"] == 1
    assert recorder.statuses("a")[2:] == [
        "cancelled",  # attempt 1, killed for the rerun
        "pending",
        "queued",
        "running",
        "succeeded",
    ]
    assert recorder.final("a").attempt == 2


async def test_cancel_during_a_kill_for_a_rerun_stays_cancelled(
    write_pipeline: Write, recorder: Recorder
) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          a: {run: x}
    """)
    fake = FakeExecutor({"a": hangs}, kill_time=0.2)
    run = fake_run(path, fake, recorder)
    task = asyncio.create_task(run.execute())
    await until(lambda: fake.log == ["a#1 start"], "a running")
    run.rerun("a")
    run.cancel("a")
    assert await asyncio.wait_for(task, 5) == 130
    assert fake.log == ["a#1 start", "a#1 killed"]
    assert recorder.statuses("a") == ["queued", "running", "cancelled"]
    finished = recorder.events[-1]
    assert isinstance(finished, RunFinished) and finished.status == "cancelled"


async def test_a_failing_subscriber_is_reported_once_and_skips_nobody(
    write_pipeline: Write, recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_pipeline(A_THEN_B)
    fake = FakeExecutor({"a": lambda n: exits(0), "b": lambda n: exits(0)})
    pipeline = load(path)
    run = Run(pipeline, hosts=Hosts(pipeline, None, {"local": fake}))

    def broken(event: object) -> None:
        raise ValueError("subscriber bug")

    run.subscribe(broken)  # before the recorder: it must not keep events from it
    run.subscribe(recorder)
    assert await asyncio.wait_for(run.execute(), 5) == 0
    assert recorder.final("b").status == "succeeded"
    assert capsys.readouterr().err.count("subscriber bug") == 1


def test_state_machine_refuses_moves_outside_the_table() -> None:
    state = StageState()
    with pytest.raises(TransitionError, match="from pending to running"):
        state.move(RUNNING, None)
    assert RUNNING not in TRANSITIONS[PENDING]
    with pytest.raises(AttributeError):
        state.stauts = RUNNING  # type: ignore[attr-defined]  # a misspelt field fails
