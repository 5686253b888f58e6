"""Run: the scheduler's state machine. Decides what each stage does next and starts its attempts.

A `Run` owns one run id. `execute()` drives stages until nothing more can start; the commands
`cancel`, `cancel_all`, `rerun`, `rerun_failed`, `approve` (and watch mode's `supersede`) change
what it does next and are called from the same event loop (the TUI's key handlers, the CLI's
signal handlers). After a command on a run whose `execute()` has returned, await `execute()`
again: attempt numbers keep counting, so a rerun shows as a new attempt, and the run's duration
counts from its first start.

Roles are split: the stage statuses and their transition table are in `engine.status` (checked on
every move), one attempt (environment, log, timeout) in `engine.attempt`, executors and slots in
`engine.hosts`, the wiring of history, cache and reporters in `engine.session`.

Commands and stage tasks: a stage has at most one task, and a task's bookkeeping runs in its
done-callback, which runs even when the task is cancelled before it starts. A command that
finds a task alive only records what is wanted next (`_next`: run again, or stay cancelled) and
cancels the task; the task's executor kills the attempt's whole tree before the task ends, and
only then does the stage move on. So commands on a stage are serialized by its task, whatever
their order and speed, and at most one attempt of a stage is alive at any time.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol, TypeVar

from engine import graph
from engine.attempt import run_attempt, stage_env
from engine.events import (
    Event,
    HostState,
    HostStatus,
    RunFinished,
    RunStarted,
    StageStatus,
    Subscriber,
)
from engine.executors.base import ExecResult, ReportsJobs
from engine.fserrors import StateError
from engine.gha.commands import JOB_CANCELLED, JOB_SKIPPED, skip_reason
from engine.hosts import Hosts
from engine.logs import LogStore
from engine.services import Services
from engine.spec import LOCAL, Pipeline, Stage
from engine.status import (
    BAD,
    CACHED,
    CANCELLED,
    FAILED,
    FINISHED,
    PENDING,
    QUEUED,
    READY,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    SUPERSEDED,
    WAITING,
    StageState,
    Status,
)

if TYPE_CHECKING:
    from engine.cache import Decision
    from engine.executors.base import Executor

__all__ = ["Run", "StageCache", "StageState", "new_run_id", "stage_env"]

T = TypeVar("T")
ALIVE = frozenset({QUEUED, RUNNING, READY})  # statuses of a stage whose task is at work
ADVANCE_BATCH = 20  # stages decided per turn of the event loop
RERUN = "rerun requested"  # the why of a rerun a person asked for
# The exit code of a run a person cancelled (a stage or all): interrupted, as by Ctrl-C (SPEC
# §3 keeps 1 for a stage that failed, timed out or was lost); SIGTERM's is 143.
EXIT_CANCELLED = 130


class StageCache(Protocol):
    """What the scheduler asks of the cache (engine/cache.py); called from a worker thread,
    but for `decide_now` (None: ask `decide`)."""

    def decide(self, stage: Stage, upstream: Mapping[str, str], no_cache: bool) -> Decision: ...

    def decide_now(
        self, stage: Stage, upstream: Mapping[str, str], no_cache: bool
    ) -> Decision | None: ...

    def keeps(self, stage: Stage) -> bool: ...

    def record_success(self, stage: Stage, fingerprint: str, run_id: str) -> None: ...


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus random hex (os.urandom, as `secrets` uses)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + os.urandom(3).hex()


class Run:
    """One run of a pipeline (or of part of it); see the module docstring."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        jobs: int | None = None,
        hosts: Hosts | None = None,
        targets: Iterable[str] = (),
        approve: Iterable[str] = (),
        manual: str = "skip",
        no_cache: bool = False,
        run_id: str | None = None,
        trigger: str = "manual",
        only: Iterable[str] | None = None,
        carry: Mapping[str, StageState] | None = None,
        cache: StageCache | None = None,
        force: Iterable[str] = (),
        executors: Mapping[str, Executor] | None = None,
    ) -> None:
        """`hosts` (shared by a session's runs) holds executors and slots; without it the run
        makes its own, with `jobs` local slots. `only` runs just those stages, carrying the
        others' states from `carry` (watch mode). `force`: run those whatever the cache says.
        `executors` (tests, benchmarks) replaces the made executor of those hosts."""
        self.pipeline = pipeline
        self.run_id = run_id or new_run_id()
        self.trigger = trigger
        self.no_cache = no_cache
        self.manual = manual
        self.cache = cache
        self.hosts = hosts if hosts is not None else Hosts(pipeline, jobs, executors)
        self._own_hosts = hosts is None
        self.logs = LogStore(pipeline.state_dir / "logs", pipeline.secrets.values())
        self.stage_ids = self._select(targets)
        self._order = {sid: i for i, sid in enumerate(self.stage_ids)}
        self.states: dict[str, StageState] = {
            sid: StageState(host=pipeline.stages[sid].host) for sid in self.stage_ids
        }
        if only is not None:
            for sid in set(self.stage_ids) - self._expand(only):
                if carry and sid in carry:
                    self.states[sid] = replace(carry[sid])
        # Pending stages in topological order: the loop looks at these only, not at every stage.
        self._pending = {sid: None for sid in self.stage_ids if self.states[sid].status == PENDING}
        # Approvals: `approve` (--approve) holds for every start of those stages in this run;
        # `approve()` lets the stage start once: a rerun or a change waits for a new approval.
        self._standing = self._expand(approve)
        self._approved: set[str] = set()
        self._cli_forced = self._expand(force)  # --force: the cache may not skip them
        self._forced: dict[str, str] = {}  # reruns of stages that had started: their why
        self._max_parallel: dict[str, asyncio.Semaphore] = {}  # stage name -> its instances'
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._next: dict[str, Status] = {}  # what a stage does once its task ends
        self._superseded: set[str] = set()  # cancelled by watch mode for a newer run
        self._subscribers: list[Subscriber] = []
        # more variables for an attempt that is starting, by stage and attempt (TRACEPARENT)
        self.env_hooks: list[Callable[[str, int], Mapping[str, str]]] = []
        self._failing: set[int] = set()  # subscribers whose error was reported already
        self._wake = asyncio.Event()
        self._cancelled_run = False
        self._cancel_exit = EXIT_CANCELLED
        self._first_start: float | None = None
        self._cache_thread: ThreadPoolExecutor | None = None  # the cache's work, in order
        self._environ: dict[str, str] = {}  # this process's, as each execution starts
        self._plain_hosts: set[str] = set()  # hosts whose executor reports no jobs of its own
        self.running = False
        self.status: Status = PENDING
        self.host_states: dict[str, HostState] = {}  # SSH host -> its connection state (TUI)
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
        """Give `event` to every subscriber; one that raises is reported (once) and skipped,
        never the others."""
        for fn in list(self._subscribers):
            try:
                fn(event)
            except Exception as exc:
                if id(fn) not in self._failing:
                    self._failing.add(id(fn))
                    print(
                        f"pipedeck: an event subscriber failed ({fn!r}), it gets no more "
                        f"error reports: {type(exc).__name__}: {exc}",
                        file=sys.stderr,
                    )

    def _move(self, sid: str, status: Status, reason: str | None = None) -> None:
        """The one way a stage changes status (along engine.status.TRANSITIONS)."""
        self.states[sid].move(status, reason)
        if status == PENDING:
            self._pending[sid] = None
        else:
            self._pending.pop(sid, None)
        self._wake.set()
        self._announce(sid)

    def _announce(self, sid: str) -> None:
        state, status = self.states[sid], self.states[sid].status
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

    # -- commands ----------------------------------------------------------------------------

    def cancel(self, stage_id: str, reason: str = "by request") -> None:
        """Cancel one stage: kill it if it runs (its whole tree), or keep it from starting."""
        if stage_id in self._tasks:
            self._next[stage_id] = CANCELLED
            self._stop(stage_id, f"cancelled {reason}" if reason.startswith("by ") else reason)
        elif self.states[stage_id].status in (PENDING, WAITING):
            self._move(stage_id, CANCELLED, f"{reason}, before it started")

    def supersede(self, stage_id: str) -> None:
        """Cancel a stage because a newer run (watch mode) will run it again."""
        if stage_id in self._tasks or self.states[stage_id].status in (PENDING, WAITING):
            self._superseded.add(stage_id)
            self.cancel(stage_id, "superseded by a change")

    def cancel_all(self, exit_code: int = EXIT_CANCELLED) -> None:
        """Cancel the whole run in order; the run then finishes as `cancelled` with `exit_code`."""
        self._cancelled_run = True
        self._cancel_exit = exit_code
        for sid in self.stage_ids:
            self.cancel(sid, "run cancelled")

    def rerun(self, stage_id: str, downstream: bool = True, why: str = RERUN) -> None:
        """Run a stage again, and by default everything downstream of it; `why` is its
        attempt's reason (watch mode: the change)."""
        ids = graph.downstream(self.pipeline, {stage_id}) if downstream else {stage_id}
        self._restart((sid for sid in self.stage_ids if sid in ids), why)

    def rerun_failed(self) -> None:
        """Run every failed, timed-out, lost or cancelled stage again, with its downstream."""
        bad = {sid for sid, st in self.states.items() if st.status in BAD | {CANCELLED}}
        ids = graph.downstream(self.pipeline, bad) if bad else set()
        self._restart(sid for sid in self.stage_ids if sid in ids)

    def approve(self, stage_id: str) -> None:
        """Let a manual stage run once (its next start; a later rerun waits for approval)."""
        self._approved.add(stage_id)
        if self.states[stage_id].status == WAITING:
            self._move(stage_id, PENDING)

    def _stop(self, sid: str, why: str) -> None:
        """Cancel a stage's task (its executor kills the attempt). A GitHub Actions job's
        runner is told why first: its steps say so, not just which signal ended them."""
        if self.pipeline.stages[sid].steps:
            from engine.gha.gate import tell_cancel  # workflows only

            tell_cancel(self.pipeline, self.run_id, sid, self.states[sid].attempt, why)
        self._tasks[sid].cancel()

    def _restart(self, ids: Iterable[str], why: str = RERUN) -> None:
        self._cancelled_run = False
        for sid in ids:
            self._superseded.discard(sid)
            if sid in self._tasks:
                self._forced[sid] = why
                self._next[sid] = PENDING
                self._stop(sid, f"restarted ({why})")
            elif self.states[sid].status != PENDING:  # a pending stage has not run: no rerun
                self._forced[sid] = why
                self._move(sid, PENDING)

    # -- the loop ----------------------------------------------------------------------------

    async def execute(self) -> int:
        """Run until no stage can start and none is running; returns the run's exit code."""
        if self.running:
            raise RuntimeError("this run is already executing")
        self.running = True
        self.status = RUNNING
        if self._first_start is None:
            self._first_start = time.time()
        self._environ = dict(os.environ)  # not copied again for each of a thousand stages
        self.hosts.listener = self._host_state
        self._publish(RunStarted(self.run_id, self.pipeline.name, tuple(self.stage_ids)))
        if "engine.gha.gate" not in sys.modules and any(
            s.steps for s in self.pipeline.stages.values()
        ):  # a workflow: its job gate (~10 ms of imports) loads in a thread, not on the loop
            await asyncio.to_thread(importlib.import_module, "engine.gha.gate")
        try:
            while True:
                self._wake.clear()
                for n, sid in enumerate(sorted(self._pending, key=self._order.__getitem__)):
                    if n and not n % ADVANCE_BATCH:
                        await asyncio.sleep(0)  # a thousand stages: let the loop breathe
                    if sid in self._pending and sid not in self._tasks:
                        self._advance(sid)
                self.services.stop_idle()
                if not self._tasks and not self._startable():
                    break
                await self._wake.wait()
        finally:
            for sid, task in self._tasks.items():
                self._next[sid] = CANCELLED
                task.cancel()
            while self._tasks:  # each ends only when its attempt is killed
                try:
                    await asyncio.wait(list(self._tasks.values()))
                except asyncio.CancelledError:  # cancelled again: kill at once, still wait
                    for task in self._tasks.values():
                        task.cancel()
            self.running = False
            if self._cache_thread is not None:
                self._cache_thread.shutdown(wait=False)
                self._cache_thread = None
        self.status, code = self._verdict()
        self._publish(RunFinished(self.run_id, self.status, code, time.time() - self._first_start))
        return code

    def _verdict(self) -> tuple[Status, int]:
        """The run's status and exit code (SPEC §2, §3)."""
        if self._cancelled_run:
            return CANCELLED, self._cancel_exit
        cancelled = set()
        for sid, state in self.states.items():
            if state.status in BAD and not self.pipeline.stages[sid].allow_failure:
                return FAILED, 1
            if state.status == CANCELLED:
                cancelled.add(sid)
        if not cancelled:
            return SUCCEEDED, 0
        if cancelled <= self._superseded:
            return SUPERSEDED, 1
        return CANCELLED, EXIT_CANCELLED

    def _startable(self) -> bool:
        return any(self._needs_done(sid) for sid in self._pending)

    def _needs_done(self, sid: str) -> bool:
        return all(
            self.states[n].status in FINISHED
            or (self.states[n].status == READY and self._next.get(n) != PENDING)  # a service
            for n in self.pipeline.stages[sid].needs
            if n in self.states
        )

    def _advance(self, sid: str) -> None:
        """Decide what a pending stage does once its needs are finished."""
        if not self._needs_done(sid):
            return
        stage = self.pipeline.stages[sid]
        needs = [(n, self.states[n].status) for n in stage.needs if n in self.states]
        failed = [n for n, st in needs if st in BAD and not self.pipeline.stages[n].allow_failure]
        broken = failed + [n for n, st in needs if st in (CANCELLED, SKIPPED)]
        if self._cancelled_run:
            self._move(sid, CANCELLED, "run cancelled, before it started")
        elif stage.when == "on_failure" and not failed:
            self._move(sid, SKIPPED, "no upstream stage failed (when: on_failure)")
        elif stage.when in ("on_success", "manual") and broken:
            self._move(sid, SKIPPED, f"upstream {broken[0]} {self.states[broken[0]].status}")
        elif stage.when == "manual" and sid not in self._approved | self._standing:
            if self.manual == "wait":
                self._move(sid, WAITING, "manual stage: press a to approve")
            else:
                self._move(sid, SKIPPED, "manual stage not approved (--approve)")
        elif stage.steps and (why := _skipped_job(self, stage, dict(needs))) is not None:
            self._move(sid, SKIPPED, why)  # a GitHub Actions job: never `running`
        else:
            approved = stage.when == "manual"
            self._approved.discard(sid)  # used: a rerun of it waits for a new approval
            task = asyncio.create_task(self._run_stage(stage, approved), name=sid)
            self._tasks[sid] = task  # first: a command reacting to `queued` finds the task
            task.add_done_callback(self._task_done)
            self._move(sid, QUEUED)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A stage's task ended (even cancelled before it began): settle the stage's status."""
        sid = task.get_name()
        del self._tasks[sid]
        wanted = self._next.pop(sid, None)
        state = self.states[sid]
        error = None if task.cancelled() else task.exception()
        if error is not None:
            if state.status in ALIVE:
                self._move(sid, FAILED, _fault(error))
        elif state.status in ALIVE:  # cancelled, or ended without a verdict
            self._move(sid, CANCELLED, self._cancel_reason(sid, state, wanted))
        if wanted == PENDING and state.status != PENDING:
            self._move(sid, PENDING)
        self._wake.set()

    def _cancel_reason(self, sid: str, state: StageState, wanted: Status | None) -> str:
        when = f"after {state.duration:.1f}s" if state.started else "before it started"
        if self._cancelled_run:
            return f"run cancelled, {when}"
        if sid in self._superseded:
            return f"superseded by a change, {when}"
        if wanted == PENDING:
            return f"restarted ({self._forced.get(sid, RERUN)}), {when}"
        return f"by request, {when}"

    async def _run_stage(self, stage: Stage, approved: bool) -> None:
        """Ask the cache, wait for a slot, run the attempts: the body of a stage's task."""
        sid = stage.id
        why = self._requested(stage, approved)
        if self.cache is not None and not stage.service:  # a service runs every time
            decision = await self._decide(stage)
            self.states[sid].fingerprint = decision.fingerprint
            if decision.fresh:
                self._move(sid, CACHED, decision.why)
                return
            why = why or decision.why
        self._forced.pop(sid, None)
        service = stage.service and stage.host == LOCAL  # holds no --jobs slot for ever
        async with (
            self._instances(stage),
            contextlib.nullcontext() if service else self.hosts.slots(stage.host),
        ):
            # a workflow matrix instance (its siblings are stages too): fail-fast while queued
            if (
                stage.steps
                and stage.matrix
                and (cut := await asyncio.to_thread(_fail_fast, self, stage))
            ):
                self._move(sid, CANCELLED, cut)
                return
            await self._attempts(stage, why)

    def _instances(self, stage: Stage) -> contextlib.AbstractAsyncContextManager[object]:
        """What a stage holds while it runs to keep its `max_parallel` (a workflow matrix's
        `max-parallel`): the instances over it stay queued."""
        if not stage.max_parallel:
            return contextlib.nullcontext()
        limit = self._max_parallel.setdefault(stage.name, asyncio.Semaphore(stage.max_parallel))
        return limit

    def _requested(self, stage: Stage, approved: bool) -> str | None:
        """Why a stage runs when a person asked for it (None: the cache says why)."""
        if approved:
            return "approved"
        if self.no_cache:
            return None
        if stage.id in self._forced:
            return self._forced[stage.id]
        if stage.id in self._cli_forced:
            return "forced (--force)"
        return None

    async def _decide(self, stage: Stage) -> Decision:
        """The cache's verdict (it hashes files and reads SQLite: off the loop, unless it can
        say at once)."""
        assert self.cache is not None
        upstream = {n: self.states[n].fingerprint or "" for n in stage.needs if n in self.states}
        forced = self.no_cache or stage.id in self._forced or stage.id in self._cli_forced
        decision = self.cache.decide_now(stage, upstream, forced)
        if decision is not None:
            return decision
        return await self._off_loop(self.cache.decide, stage, upstream, forced)

    def _off_loop(self, fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
        """Run `fn(*args)` in the run's cache thread: one thread, so the cache's calls keep
        the order they are made in (a success's bookkeeping before its downstream's verdict)."""
        if self._cache_thread is None:
            self._cache_thread = ThreadPoolExecutor(1, thread_name_prefix="pipedeck-cache")
        return asyncio.get_running_loop().run_in_executor(self._cache_thread, fn, *args)

    async def _attempts(self, stage: Stage, why: str | None) -> None:
        """Run attempts until one succeeds or the retries are used up."""
        sid = stage.id
        state = self.states[sid]
        await self.hosts.load(stage.host)
        for left in range(self.services.retries(stage), -1, -1):
            state.start_attempt()
            self._move(sid, RUNNING, why)
            env = stage_env(self.pipeline, stage, self.run_id, state.attempt, self._environ)
            for hook in self.env_hooks:
                env.update(hook(sid, state.attempt))
            status, result = await run_attempt(
                stage,
                state.attempt,
                self._executor(stage.host),
                env,
                self.logs,
                self.run_id,
                self._publish,
                self.services.attempt if stage.service else None,
            )
            if stage.steps and result.exit_code in (JOB_SKIPPED, JOB_CANCELLED):  # GitHub Actions
                reason = skip_reason(self.pipeline.state_dir, self.run_id, sid)
                status = SKIPPED if result.exit_code == JOB_SKIPPED else CANCELLED
                result = ExecResult(result.exit_code, reason=reason)
            state.exit_code = result.exit_code
            if (
                status == SUCCEEDED
                and self.cache is not None
                and state.fingerprint
                and self.cache.keeps(stage)
            ):
                await self._record_success(stage, state.fingerprint)
                return
            self._move(sid, status, result.reason)
            if status in (SUCCEEDED, SKIPPED):
                return
            if left:
                why = f"retry after {status} (attempt {state.attempt})"

    def _executor(self, host: str) -> Executor:
        """The host's executor, reporting a queue of its own (Slurm) to this run."""
        executor = self.hosts.executor(host)
        if host in self._plain_hosts:  # known: no slow runtime-protocol check per attempt
            return executor
        if isinstance(executor, ReportsJobs):  # shared by watch reruns: to the current run
            executor.on_job = self._job_state
        else:
            self._plain_hosts.add(host)
        return executor

    def _job_state(
        self, sid: str, status: str, reason: str | None, job_id: str | None, node: str | None
    ) -> None:
        """A Slurm attempt's job was queued (with Slurm's reason) or started on a node."""
        state = self.states[sid]
        if sid in self._tasks and state.status in (QUEUED, RUNNING):
            state.job_id, state.node = job_id, node
            if status == state.status:
                state.reason = reason
                self._announce(sid)
            else:
                self._move(sid, Status(status), reason)

    async def _record_success(self, stage: Stage, fingerprint: str) -> None:
        """Keep a success's fingerprint, artifacts and metrics, then mark it succeeded (failed
        if that fails: a full disk). A cancel meanwhile waits for it: the attempt did succeed."""
        assert self.cache is not None
        recording = self._off_loop(self.cache.record_success, stage, fingerprint, self.run_id)
        cancelled = None
        while not recording.done():
            try:
                await asyncio.wait({recording})
            except asyncio.CancelledError as exc:
                cancelled = exc
        error = recording.exception()
        if error is None:
            self._move(stage.id, SUCCEEDED)
        else:
            self._move(stage.id, FAILED, _fault(error))
        if cancelled is not None:
            raise cancelled

    def _host_state(
        self,
        host: str,
        state: str,
        reason: str | None = None,
        synced: dict[str, object] | None = None,
    ) -> None:
        self.host_states[host] = HostState(state, reason)
        self._publish(HostStatus(self.run_id, host, state, reason, synced))

    async def close(self) -> None:
        """Settle the stages left waiting for an approval, as a headless run would have (skipped,
        and what needs them); close the executors, if this run made its own (a session closes
        shared ones)."""
        if not self.running:
            for sid in self.stage_ids:  # topological order: a chain settles in one pass
                status = self.states[sid].status
                if status == WAITING:
                    self._move(sid, PENDING)
                    self._move(sid, SKIPPED, "manual stage not approved")
                elif status == PENDING:
                    needs = self.pipeline.stages[sid].needs
                    held = [
                        n for n in needs if n in self.states and self.states[n].status == SKIPPED
                    ]
                    if held:
                        self._move(sid, SKIPPED, f"upstream {held[0]} skipped")
        if self._own_hosts:
            await self.hosts.close()


def _skipped_job(run: Run, stage: Stage, needs: Mapping[str, Status]) -> str | None:
    """Why a GitHub Actions job is skipped before it starts (None: it starts)."""
    from engine.gha.gate import skip_before_start  # workflows only: not on a pipeline's path

    return skip_before_start(run.pipeline, stage, run.run_id, needs)


def _fail_fast(run: Run, stage: Stage) -> str | None:
    """Why a queued GitHub Actions matrix instance is cancelled before it starts (fail-fast)."""
    from engine.gha.gate import fail_fast_before_start

    return fail_fast_before_start(run.pipeline, stage, run.run_id)


def _fault(exc: BaseException) -> str:
    """A stage's reason when pipedeck itself failed it (a full disk, a log it cannot write)."""
    if isinstance(exc, StateError):  # says the path and the cause itself
        return str(exc)
    return f"pipedeck error: {type(exc).__name__}: {exc}"
