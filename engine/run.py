"""Run: the scheduler. Plans with `graph`, starts stages through executors, publishes events.

A `Run` owns one run id. `execute()` drives stages until nothing more can start; the commands
`cancel`, `cancel_all`, `rerun`, `rerun_failed` and `approve` change what it does next and are
called from the same event loop (the TUI's key handlers, the CLI's signal handlers). After a
command on a run whose `execute()` has returned, await `execute()` again: attempt numbers keep
counting, so a rerun shows as a new attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets as _random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from engine import graph
from engine.events import (
    BAD,
    CACHED,
    CANCELLED,
    FAILED,
    FINISHED,
    LOST,
    PENDING,
    QUEUED,
    READY,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    TIMED_OUT,
    WAITING,
    Event,
    HostStatus,
    LogLines,
    RunFinished,
    RunStarted,
    StageStatus,
    Subscriber,
)
from engine.executors.base import REMOTE_STAGE_LIMIT, ExecResult, Executor, ReportsJobs
from engine.fserrors import StateError
from engine.gha.commands import JOB_SKIPPED, skip_reason, step_events
from engine.logs import LogStore
from engine.services import Services
from engine.spec import LOCAL, Pipeline, Stage

if TYPE_CHECKING:
    from engine.cache import Decision


@dataclass
class StageState:
    """What the run knows of one stage instance now."""

    status: str = PENDING
    attempt: int = 0
    host: str = LOCAL
    exit_code: int | None = None
    started: float | None = None
    ended: float | None = None
    reason: str | None = None
    fingerprint: str | None = None
    job_id: str | None = None  # a Slurm attempt's job id and node (extension fields)
    node: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds run so far (running) or in all (finished); None before it starts."""
        if self.started is None:
            return None
        return (self.ended or time.time()) - self.started


class StageCache(Protocol):
    """What the scheduler asks of the cache (engine/cache.py)."""

    def decide(self, stage: Stage, upstream: Mapping[str, str], no_cache: bool) -> Decision: ...

    def record_success(self, stage: Stage, fingerprint: str, run_id: str) -> None: ...


def stage_env(pipeline: Pipeline, stage: Stage, run_id: str, attempt: int) -> dict[str, str]:
    """A stage's environment: (this process's, for local stages) + stage + secrets + ids.
    `pipedeck shell` uses it too, so a shell gets exactly what the stage gets."""
    base = dict(os.environ) if stage.host == LOCAL else {}
    return {
        **base,
        **stage.env,
        **pipeline.secrets,
        "PIPEDECK_RUN_ID": run_id,
        "PIPEDECK_STAGE": stage.id,
        "PIPEDECK_ATTEMPT": str(attempt),
    }


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus random hex."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + _random.token_hex(3)


class Run:
    """One run of a pipeline (or of part of it); see the module docstring."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        jobs: int | None = None,
        targets: Iterable[str] = (),
        approve: Iterable[str] = (),
        manual: str = "skip",
        no_cache: bool = False,
        run_id: str | None = None,
        trigger: str = "manual",
        executors: dict[str, Executor] | None = None,
        only: Iterable[str] | None = None,
        carry: Mapping[str, StageState] | None = None,
        cache: StageCache | None = None,
        force: Iterable[str] = (),
    ) -> None:
        self.pipeline = pipeline
        self.run_id = run_id or new_run_id()
        self.trigger = trigger
        self.no_cache = no_cache
        self.manual = manual
        self.cache = cache
        self.logs = LogStore(pipeline.state_dir / "logs", pipeline.secrets.values())
        self.stage_ids = self._select(targets)
        self._order = {sid: i for i, sid in enumerate(self.stage_ids)}
        self.states: dict[str, StageState] = {
            sid: StageState(host=pipeline.stages[sid].host) for sid in self.stage_ids
        }
        if only is not None:
            keep = set(self.stage_ids) - self._expand(only)
            for sid in keep:
                if carry and sid in carry:
                    self.states[sid] = replace(carry[sid])
        # Pending stages in topological order: the loop looks at these only, not at every stage.
        self._pending = {sid: None for sid in self.stage_ids if self.states[sid].status == PENDING}
        self._approved = self._expand(approve)
        self._forced = self._expand(force)  # run whatever the cache says (--force; reruns)
        self._executors = executors if executors is not None else {}  # shared by watch reruns
        self._local_slots = asyncio.Semaphore(jobs or os.cpu_count() or 1)
        self._host_slots: dict[str, asyncio.Semaphore] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._requeue: set[str] = set()
        self._subscribers: list[Subscriber] = []
        self._wake = asyncio.Event()
        self._cancelled_run = False
        self._cancel_exit = 1
        self._started: float | None = None
        self.running = False
        self.status = PENDING
        self.host_states: dict[str, str] = {}  # SSH host -> connection state, for the TUI
        self.services = Services(self)  # service stages (SPEC §10); keep_running in TUI/watch

    # -- selection ---------------------------------------------------------------------------

    def _expand(self, names: Iterable[str]) -> set[str]:
        """Stage names and instance ids -> instance ids (a matrix name means all instances)."""
        ids: set[str] = set()
        for name in names:
            if name in self.pipeline.groups:
                ids.update(self.pipeline.groups[name])
            elif name in self.pipeline.stages:
                ids.add(name)
            else:
                raise KeyError(f"unknown stage {name!r}")
        return ids

    def _select(self, targets: Iterable[str]) -> list[str]:
        wanted = self._expand(targets)
        chosen = graph.upstream(self.pipeline, wanted) if wanted else set(self.pipeline.stages)
        return [sid for sid in self.pipeline.stages if sid in chosen]

    # -- events ------------------------------------------------------------------------------

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call `fn` with every event from now on; returns a function that unsubscribes."""
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn)

    def _publish(self, event: Event) -> None:
        for fn in list(self._subscribers):
            fn(event)

    def _set(self, sid: str, status: str, **changes: object) -> None:
        state = self.states[sid]
        state.status = status
        if status == PENDING:
            self._pending[sid] = None
        else:
            self._pending.pop(sid, None)
        for key, value in changes.items():
            setattr(state, key, value)
        self._publish(
            StageStatus(
                run_id=self.run_id,
                stage=sid,
                status=status,
                attempt=state.attempt,
                host=state.host,
                exit_code=state.exit_code,
                duration=state.duration if status in FINISHED else None,
                reason=state.reason,
                job_id=state.job_id,
                node=state.node,
            )
        )
        self._wake.set()

    # -- commands ----------------------------------------------------------------------------

    def cancel(self, stage_id: str) -> None:
        """Cancel one stage: kill it if running, or keep it from starting."""
        state = self.states[stage_id]
        if stage_id in self._tasks:
            self._requeue.discard(stage_id)
            self._tasks[stage_id].cancel()
        elif state.status in (PENDING, WAITING):
            self._set(stage_id, CANCELLED, reason="cancelled before it started")

    def cancel_all(self, exit_code: int = 1) -> None:
        """Cancel the whole run in order; the run then finishes as `cancelled` with `exit_code`."""
        self._cancelled_run = True
        self._cancel_exit = exit_code
        for sid in self.stage_ids:
            self.cancel(sid)

    def rerun(self, stage_id: str, downstream: bool = True) -> None:
        """Run a stage again, and by default everything downstream of it."""
        ids = graph.downstream(self.pipeline, {stage_id}) if downstream else {stage_id}
        self._restart(sid for sid in self.stage_ids if sid in ids)

    def rerun_failed(self) -> None:
        """Run every failed, timed-out, lost or cancelled stage again, with its downstream."""
        bad = {sid for sid, st in self.states.items() if st.status in BAD | {CANCELLED}}
        ids = graph.downstream(self.pipeline, bad) if bad else set()
        self._restart(sid for sid in self.stage_ids if sid in ids)

    def approve(self, stage_id: str) -> None:
        """Let a manual stage run."""
        self._approved.add(stage_id)
        if self.states[stage_id].status == WAITING:
            self._set(stage_id, PENDING, reason=None)

    def _restart(self, ids: Iterable[str]) -> None:
        self._cancelled_run = False
        for sid in ids:
            self._forced.add(sid)
            if sid in self._tasks:
                self._requeue.add(sid)
                self._tasks[sid].cancel()
            else:
                self._set(sid, PENDING, exit_code=None, started=None, ended=None, reason=None)

    # -- the loop ----------------------------------------------------------------------------

    async def execute(self) -> int:
        """Run until no stage can start and none is running; returns the run's exit code."""
        if self.running:
            raise RuntimeError("this run is already executing")
        self.running = True
        self.status = RUNNING
        self._started = time.time()
        self._publish(RunStarted(self.run_id, self.pipeline.name, tuple(self.stage_ids)))
        try:
            while True:
                self._wake.clear()
                for sid in sorted(self._pending, key=self._order.__getitem__):
                    if sid not in self._tasks:
                        self._advance(sid)
                self.services.stop_idle()
                if not self._tasks and not self._startable():
                    break
                await self._wake.wait()
        finally:
            for task in self._tasks.values():
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            self.running = False
        code = self._exit_code()
        self.status = CANCELLED if self._cancelled_run else (FAILED if code else SUCCEEDED)
        self._publish(RunFinished(self.run_id, self.status, code, time.time() - self._started))
        return code

    def _startable(self) -> bool:
        return any(self._needs_done(sid) for sid in self._pending)

    def _needs_done(self, sid: str) -> bool:
        return all(
            self.states[n].status in FINISHED
            or (self.states[n].status == READY and n not in self._requeue)  # a service
            for n in self.pipeline.stages[sid].needs
            if n in self.states
        )

    def _exit_code(self) -> int:
        if self._cancelled_run:
            return self._cancel_exit
        for sid, state in self.states.items():
            if state.status in BAD and not self.pipeline.stages[sid].allow_failure:
                return 1
        return 0

    def _advance(self, sid: str) -> None:
        """Decide what a pending stage does once its needs are finished."""
        if not self._needs_done(sid):
            return
        stage = self.pipeline.stages[sid]
        needs = [(n, self.states[n].status) for n in stage.needs if n in self.states]
        broken = [
            n
            for n, status in needs
            if (status in BAD and not self.pipeline.stages[n].allow_failure)
            or status in (CANCELLED, SKIPPED)
        ]
        failed = [n for n, st in needs if st in BAD and not self.pipeline.stages[n].allow_failure]
        if self._cancelled_run:
            self._set(sid, CANCELLED, reason="run cancelled")
        elif stage.when == "on_failure" and not failed:
            self._set(sid, SKIPPED, reason="no upstream stage failed (when: on_failure)")
        elif stage.when in ("on_success", "manual") and broken:
            self._set(sid, SKIPPED, reason=f"upstream {broken[0]} {self.states[broken[0]].status}")
        elif stage.when == "manual" and sid not in self._approved:
            if self.manual == "wait":
                self._set(sid, WAITING, reason="manual stage: press a to approve")
            else:
                self._set(sid, SKIPPED, reason="manual stage not approved (--approve)")
        else:
            self._set(sid, QUEUED, exit_code=None, reason=None)
            self._tasks[sid] = asyncio.create_task(self._run_stage(stage), name=sid)

    async def _run_stage(self, stage: Stage) -> None:
        sid = stage.id
        try:
            if self._is_fresh(stage):
                return
            service = stage.service and stage.host == LOCAL  # holds no --jobs slot for ever
            async with contextlib.nullcontext() if service else self._slots(stage.host):
                await self._attempts(stage)
        except asyncio.CancelledError:
            state = self.states[sid]
            if state.status in (QUEUED, RUNNING, READY):
                self._set(
                    sid, CANCELLED, ended=time.time() if state.started else None, reason="cancelled"
                )
        except Exception as exc:  # a fault of ours (disk full, a bad log path): fail the stage
            state = self.states[sid]
            self._set(
                sid,
                FAILED,
                ended=time.time() if state.started else None,
                reason=str(exc)
                if isinstance(exc, StateError)  # says the path and cause itself
                else f"pipedeck error: {type(exc).__name__}: {exc}",
            )
        finally:
            del self._tasks[sid]
            if sid in self._requeue:
                self._requeue.discard(sid)
                self._set(sid, PENDING, exit_code=None, started=None, ended=None, reason=None)
            self._wake.set()

    def _is_fresh(self, stage: Stage) -> bool:
        """Ask the cache; mark the stage cached and return True when its last success holds."""
        if self.cache is None or stage.service:
            return False
        upstream = {n: self.states[n].fingerprint or "" for n in stage.needs if n in self.states}
        forced = self.no_cache or stage.id in self._forced
        decision = self.cache.decide(stage, upstream, forced)
        state = self.states[stage.id]
        state.fingerprint = decision.fingerprint
        state.reason = decision.why
        if stage.id in self._forced and not self.no_cache:
            state.reason = "rerun requested"
        if decision.fresh:
            self._set(stage.id, CACHED, reason=decision.why)
        return decision.fresh

    async def _attempts(self, stage: Stage) -> None:
        """Run attempts until one succeeds or the retries are used up."""
        sid = stage.id
        self._forced.discard(sid)
        why = self.states[sid].reason
        for left in range(self.services.retries(stage), -1, -1):
            state = self.states[sid]
            state.attempt += 1
            self._set(
                sid,
                RUNNING,
                started=time.time(),
                ended=None,
                exit_code=None,
                reason=why,
                job_id=None,
                node=None,
            )
            status, result = await self._attempt(stage, state.attempt)
            self._set(
                sid, status, ended=time.time(), exit_code=result.exit_code, reason=result.reason
            )
            if status == SUCCEEDED:
                if self.cache is not None and state.fingerprint:
                    self.cache.record_success(stage, state.fingerprint, self.run_id)
                return
            if left:
                why = f"retry after {status} (attempt {state.attempt})"

    async def _attempt(self, stage: Stage, attempt: int) -> tuple[str, ExecResult]:
        writer = self.logs.writer(self.run_id, stage.id, attempt)

        def sink(stream: str, data: bytes) -> None:
            lines = writer.feed(stream, data)
            if lines:
                self._publish(LogLines(self.run_id, stage.id, attempt, stream, tuple(lines)))
                if stage.steps:  # a GitHub Actions job: its step markers become events
                    for event in step_events(self.run_id, stage.id, attempt, lines):
                        self._publish(event)

        try:
            executor = self._executor(stage.host)
            async with asyncio.timeout(stage.timeout):
                running = executor.execute(stage, self._env(stage, attempt), sink)
                if stage.service:
                    return await self.services.attempt(stage, attempt, running)
                result = await running
        except TimeoutError:
            result = ExecResult(None, reason=f"timed out after {stage.timeout:g}s")
            return TIMED_OUT, result
        finally:
            by_stream: dict[str, list[str]] = {}
            for stream, text in writer.finish():
                by_stream.setdefault(stream, []).append(text)
            for stream, texts in by_stream.items():
                self._publish(LogLines(self.run_id, stage.id, attempt, stream, tuple(texts)))
        if result.status is not None:
            return result.status, result
        if result.lost:
            return LOST, result
        if stage.steps and result.exit_code == JOB_SKIPPED:  # a GitHub Actions job it skipped
            reason = skip_reason(self.pipeline.state_dir, self.run_id, stage.id)
            return SKIPPED, ExecResult(result.exit_code, reason=reason)
        if result.exit_code == 0:
            return SUCCEEDED, result
        if result.reason is None and result.exit_code is not None:
            result = ExecResult(result.exit_code, reason=f"exit code {result.exit_code}")
        return FAILED, result

    def _env(self, stage: Stage, attempt: int) -> dict[str, str]:
        return stage_env(self.pipeline, stage, self.run_id, attempt)

    def _job_state(
        self, sid: str, status: str, reason: str | None, job_id: str | None, node: str | None
    ) -> None:
        """A Slurm attempt's job was queued (with Slurm's reason) or started on a node."""
        if sid in self._tasks and self.states[sid].status in (QUEUED, RUNNING):
            self._set(sid, status, reason=reason, job_id=job_id, node=node)

    def _host_state(self, host: str, state: str) -> None:
        self.host_states[host] = state
        self._publish(HostStatus(self.run_id, host, state))

    def _slots(self, host: str) -> asyncio.Semaphore:
        """`--jobs` bounds local stages; each remote host's `slots` bounds its own."""
        if host == LOCAL:
            return self._local_slots
        if host not in self._host_slots:
            spec = self.pipeline.hosts.get(host)
            slots = min(spec.slots if spec else 4, REMOTE_STAGE_LIMIT)
            if spec is not None and spec.executor == "slurm":  # jobs hold no SSH channel
                slots = spec.slots
            self._host_slots[host] = asyncio.Semaphore(slots)
        return self._host_slots[host]

    def _executor(self, host: str) -> Executor:
        if host not in self._executors:
            if host == LOCAL:
                from engine.executors.local import LocalExecutor

                self._executors[host] = LocalExecutor(self.pipeline.workspace)
            elif self.pipeline.hosts.get(host) and self.pipeline.hosts[host].executor == "slurm":
                from engine.executors.slurm import SlurmExecutor

                self._executors[host] = SlurmExecutor(self.pipeline, host, self._host_state)
            else:
                from engine.executors.ssh import SshExecutor

                self._executors[host] = SshExecutor(self.pipeline, host, self._host_state)
        executor = self._executors[host]
        if isinstance(executor, ReportsJobs):  # executors shared by watch reruns: to this run
            executor.on_job = self._job_state
        return executor

    async def close(self) -> None:
        """Close every executor (SSH connections); call when done with the run."""
        for executor in self._executors.values():
            await executor.close()
        self._executors.clear()
