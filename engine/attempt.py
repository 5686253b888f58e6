"""One stage attempt, from the scheduler's side: its environment, its log, its time limit.

`run_attempt` starts the attempt on an executor, writes its output to the log store, publishes it
as `LogLines`, applies the stage's `timeout` and classifies the end (succeeded, failed, timed out,
lost). A timeout is measured on the attempt's wall time, and an attempt whose process already
exited is never declared timed out: if this process was stopped (SIGSTOP, a suspended laptop)
past the deadline, an exit that happened meanwhile gets as long to arrive as the deadline was
missed by before the attempt is killed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TypeVar

from engine.events import Event, Lines, LogLines
from engine.executors.base import ExecResult, Executor
from engine.gha.commands import StepEvents
from engine.logs import LogStore
from engine.spec import LOCAL, Pipeline, Stage
from engine.status import FAILED, LOST, SUCCEEDED, TIMED_OUT, Status

SETTLE = 0.05  # seconds an exit racing the deadline gets to arrive, plus how late the loop was
SETTLE_MAX = 2.0
T = TypeVar("T")
Service = Callable[[Stage, int, Awaitable[ExecResult]], Awaitable[tuple[str, ExecResult]]]


def stage_env(
    pipeline: Pipeline,
    stage: Stage,
    run_id: str,
    attempt: int,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """An attempt's environment: (this process's, for local stages) + stage + secrets + ids.
    `environ`: this process's, when the caller has it already (a run, once per execution)."""
    base = (os.environ if environ is None else environ) if stage.host == LOCAL else {}
    return {
        **base,
        **stage.env,
        **pipeline.secrets,
        "PIPEDECK_RUN_ID": run_id,
        "PIPEDECK_STAGE": stage.id,
        "PIPEDECK_ATTEMPT": str(attempt),
    }


async def run_attempt(
    stage: Stage,
    attempt: int,
    executor: Executor,
    env: dict[str, str],
    logs: LogStore,
    run_id: str,
    publish: Callable[[Event], None],
    service: Service | None = None,
) -> tuple[Status, ExecResult]:
    """Run one attempt to its end; returns its status and the executor's result.

    `service` (engine.services) runs a service's attempt beside its readiness probe."""
    writer = logs.writer(run_id, stage.id, attempt)
    steps = StepEvents(run_id, stage.id, attempt) if stage.steps else None
    result: ExecResult | None = None

    def sink(stream: str, data: bytes) -> None:
        lines = writer.feed(stream, data)
        if lines:
            publish(LogLines(run_id, stage.id, attempt, stream, lines))
            if steps is not None:  # a GitHub Actions job: its step markers become events
                for event in steps.events(lines):
                    publish(event)

    try:
        running = executor.execute(stage, env, sink)
        if service is not None:
            outcome = await _within_timeout(service(stage, attempt, running), stage.timeout)
            return (Status(outcome[0]), outcome[1]) if outcome else _timed_out(stage)
        result = await _within_timeout(running, stage.timeout)
    finally:
        if steps is not None and steps.running:  # its runner was killed: cancel or timeout
            sink("stdout", steps.unfinished("cancelled" if result is None else "lost"))
        by_stream: dict[str, list[str]] = {}
        for stream, text in writer.finish():
            by_stream.setdefault(stream, []).append(text)
        for stream, texts in by_stream.items():
            publish(LogLines(run_id, stage.id, attempt, stream, Lines.of(texts)))
    if result is None:
        return _timed_out(stage)
    if result.status is not None:  # an executor that knows better (Slurm)
        return Status(result.status), result
    if result.lost:
        return LOST, result
    if result.exit_code == 0:
        return SUCCEEDED, result
    if result.reason is None and result.exit_code is not None:
        why = steps.failure if steps is not None and steps.failure else None  # a workflow job
        result = ExecResult(result.exit_code, reason=why or f"exit code {result.exit_code}")
    return FAILED, result


def _timed_out(stage: Stage) -> tuple[Status, ExecResult]:
    return TIMED_OUT, ExecResult(None, reason=f"timed out after {stage.timeout:g}s")


async def _within_timeout(execute: Awaitable[T], timeout: float | None) -> T | None:
    """Await the executor's coroutine; past `timeout` cancel it (the executor kills the
    attempt) and return None, unless it ended in the meantime. Cancelling us cancels it."""
    if timeout is None and asyncio.iscoroutine(execute):
        return await _to_the_end(execute)
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(execute)
    try:
        if timeout is None:
            return await asyncio.shield(task)
        deadline = loop.time() + timeout
        await asyncio.wait({task}, timeout=timeout)
        if not task.done():  # an exit noticed late (we were stopped) still counts
            late = loop.time() - deadline
            await asyncio.wait({task}, timeout=min(SETTLE + late, SETTLE_MAX))
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.wait({task})
        return None if task.cancelled() else task.result()
    except asyncio.CancelledError:
        task.cancel()
        await _finish(task)
        raise


async def _to_the_end(execute: Coroutine[object, object, T]) -> T:
    """Await an executor's coroutine without a time limit, in the caller's task: no task, no
    shield and one loop turn fewer per attempt than `_within_timeout`'s way, with the same
    outcome. A cancel reaches the executor where it waits (as `task.cancel()` would; a second
    one too, which makes it kill at once); once cancelled, the attempt ends cancelled whatever
    the executor then returns or raises, as `_finish` has it."""
    task = asyncio.current_task()
    try:
        result = await execute
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        if task is not None and task.cancelling():
            raise asyncio.CancelledError from exc  # its error is moot once it is cancelled
        raise
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    return result


async def _finish(task: asyncio.Future[T]) -> None:
    """Wait for a cancelled executor task to finish killing, however often we are cancelled
    meanwhile: each further cancel asks it to kill at once. Never leaves it running."""
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
    if not task.cancelled():
        task.exception()  # retrieved: its error is moot once the attempt is cancelled
