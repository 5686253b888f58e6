"""Watch mode (SPEC §5, §10): file changes -> affected stages -> rerun at once (in the live run,
or in a new run of just those).

`changes(pipeline)` yields sets of changed paths (relative to the workspace, `/`-separated),
ignoring what `engine.ignore.IgnoreRules` ignores; watchfiles runs in a thread, so setting up
the watches of a large tree never blocks the event loop. A burst (a rename-save, a `git checkout`)
is one set: a set is complete once `watch.debounce` (default 100 ms) passes without a further
change, or after `MAX_BURST` seconds of changes without a pause. A file created and gone again
within a set (an editor's temporary file) is left out. When the OS runs out of inotify watches
it says so through `notice`, naming the sysctl to raise, and falls back to watchfiles' polling
(which compares whole-second mtimes: a second save of a file within the same second is missed).

`WatchSession` drives the runs, for `pipedeck run --watch` and for the TUI (`--watch`, `W`)::

    def make_run(*, only, carry, trigger):   # always called with these three keywords
        return Run(pipeline, jobs=jobs, targets=targets, only=only, carry=carry,
                   trigger=trigger, executors=shared_executors, ...)

    session = WatchSession(
        pipeline, make_run,
        on_run=attach,       # (Run) -> None: each new Run, before it executes (subscribe here)
        on_change=sep,       # (set[str]) -> None: the triggering paths, just before each rerun
        on_notice=say,       # (str) -> None: loop pause, polling fallback (default: stderr)
    )
    # WatchSession() raises WatchError (a ValueError, with a message to print) when a
    # `watch.paths` entry does not exist.
    await session.run()              # first run: make_run(only=None, carry=None, "manual")
    await session.run(previous=run)  # or adopt a run (finished, or running elsewhere)

`run()` first sets up the watches (`session.ready` is set then), so no change made after the
first run starts goes unseen. It never returns by itself: cancel its task to stop (SIGINT);
the active run is then cancelled in order (`Run.cancel_all(session.interrupt_code)`: 130
unless set, e.g. 143 for SIGTERM) and awaited; a second cancel kills it at once.
`session.current` is the latest Run. Every callback is called on the event loop. A change to
the pipeline file itself only brings a notice: the session keeps the pipeline it was given.

A change set names the paths that can trigger something (those an `inputs` glob of a stage of
the latest run matches; every path when such a stage has no `inputs`, unless it is
`when: manual`), and `graph.affected` gives the stages it hits, limited to the stages the latest
run covers (a `--stage` run stays within its targets). It is acted on at once:

- while the latest run executes (here, or elsewhere: the TUI), each hit stage is rerun in that
  run (`Run.rerun(sid, downstream=False)`; the hit set holds the downstream already): a running
  one is cancelled (its whole process tree) and started again, a finished one runs again, a
  pending one just starts later. Stages the change does not hit keep running, untouched;
- between runs, a new Run (`trigger="watch"`, a new run id) of only the hit stages starts,
  carrying the others' last states.

Loop guard: a change set is self-triggered when every changed file that still exists was
modified while a stage it hits ran, in an attempt that then ended by itself (not cancelled). A
stage's own writes are caught that way; a person's edit while the stage runs cancels that
attempt, so it never counts (SPEC: a person's edits never pause watching). After `LOOP_LIMIT`
self-triggered reruns in a row by the same stage (whatever files it wrote: a new name each time
is caught too), the session pauses instead of rerunning and tells `on_notice` which stage and
file. That pause ends by itself at the next change that no stage of the latest run made, or
with `resume()`. (Not caught: a long stage that writes its own input early and is still
running when the change arrives restarts each time, as a person's edit would make it.)

`pause()` / `resume()` / `toggle()` are the TUI's `W`: paused by hand, changes are held (the
banner names them), and acted on when watching resumes. `banner` is the TUI's status text
("watching · last change: src/a.py", "watch paused · <why>", "watch paused · held: src/a.py");
`last_change` names the latest change that triggered a rerun.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Protocol, TypeVar

from watchfiles import Change, watch

from engine import globs, graph
from engine.errors import PipedeckError
from engine.events import Event, RunFinished, StageStatus
from engine.ignore import IgnoreRules
from engine.run import Run, StageState
from engine.spec import Pipeline
from engine.status import CANCELLED, FINISHED, RUNNING

STEP_MS = 20  # watchfiles: a quiet gap this long ends a raw batch; it returns this often idle
RAW_CAP_MS = 50  # watchfiles: longest raw batch (our own log writes must not hold it open)
POLL_DELAY_MS = 200  # polling fallback: interval between scans
MAX_BURST = 5.0  # seconds: a change set is yielded even if changes never pause
LOOP_LIMIT = 3  # self-triggered reruns in a row before watching pauses
LOOP_SLACK = 0.05  # seconds of clock slack when comparing mtimes with stage start and end
SYSCTL = "sudo sysctl fs.inotify.max_user_watches=524288"
LIMIT_MESSAGE = (
    "watch: the OS ran out of inotify watches; polling instead (slower). "
    f"To raise the limit: {SYSCTL}"
)

T = TypeVar("T")
_Sorted = tuple[set[str], set[str], list[float]]  # see WatchSession._sort_out


class WatchError(PipedeckError, ValueError):
    """Watch mode cannot start (a `watch.paths` entry does not exist)."""


class MakeRun(Protocol):
    """Builds a Run; the session calls it with `only`, `carry` and `trigger` as keywords."""

    def __call__(
        self, *, only: set[str] | None, carry: Mapping[str, StageState] | None, trigger: str
    ) -> Run: ...


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def out_of_watches(exc: BaseException) -> bool:
    """True when a watchfiles error means the inotify watch (or instance) limit was hit."""
    text = str(exc)
    return "MaxFilesWatch" in text or "watch limit" in text or "Too many open files" in text


def describe(paths: set[str]) -> str:
    """A short name for a change set: `src/a.py`, or `src/a.py and 2 more`."""
    first, *rest = sorted(paths)
    return f"{first} and {len(rest)} more" if rest else first


def watch_roots(pipeline: Pipeline) -> list[Path]:
    """The absolute paths to watch; raises `WatchError` naming a missing one."""
    roots = [pipeline.workspace / p for p in pipeline.watch.paths]
    for root in roots:
        if not root.exists():
            raise WatchError(f"watch path {root} does not exist (watch.paths in {pipeline.path})")
    return roots


class _Pump:
    """Runs watchfiles' `watch` in a thread (setting up thousands of inotify watches takes a
    while, and must not freeze the event loop), filters and gathers its raw batches into change
    sets there, and queues them (or the error that ended it) for the event loop. Switches to
    polling when inotify watches run out, and skips unreadable directories (with a notice)
    rather than failing on them."""

    def __init__(
        self,
        pipeline: Pipeline,
        polling: bool,
        notice: Callable[[str], None],
        ready: asyncio.Event | None,
    ) -> None:
        self.roots = watch_roots(pipeline)
        self.workspace = pipeline.workspace
        self.debounce = pipeline.watch.debounce
        self.rules = IgnoreRules(pipeline)  # used by the thread only
        self.polling = polling
        self.skip_unreadable = False  # set after a PermissionError: it also hides watch limits
        self.notice = notice
        self.ready = ready
        self.queue: asyncio.Queue[set[str] | Exception] = asyncio.Queue()
        self.stop = threading.Event()
        self.loop = asyncio.get_running_loop()

    def _send(self, call: Callable[[T], None], arg: T) -> None:
        """Call `call(arg)` on the event loop, from the thread."""
        self.loop.call_soon_threadsafe(call, arg)

    def pump(self) -> None:
        """The thread's body; returns once `stop` is set."""
        try:
            while True:
                try:
                    self._watch()
                    return
                except PermissionError as exc:
                    if self.skip_unreadable:
                        raise
                    self._send(self.notice, f"watch: skipping what cannot be read ({exc})")
                    self.skip_unreadable = True
                except (OSError, RuntimeError) as exc:
                    if self.polling or not out_of_watches(exc):
                        raise
                    self._send(self.notice, LIMIT_MESSAGE)
                    self.polling = True
        except Exception as exc:  # handed to the consumer, which raises it
            self._send(self.queue.put_nowait, exc)

    def _watch(self) -> None:
        """Gather raw batches until `debounce` passes without one (or for `MAX_BURST`), then
        queue them as one change set. watchfiles returns at least every `STEP_MS`."""
        quiet = self.debounce
        if self.polling:  # a burst may span two scans
            quiet = max(quiet, (POLL_DELAY_MS + 2 * STEP_MS) / 1000)
        gathered: set[tuple[Change, str]] = set()
        first = last = 0.0
        for batch in watch(
            *self.roots,
            watch_filter=self.rules.keep,
            debounce=RAW_CAP_MS,
            step=STEP_MS,
            stop_event=self.stop,
            rust_timeout=STEP_MS,
            yield_on_timeout=True,
            force_polling=self.polling,
            poll_delay_ms=POLL_DELAY_MS,
            ignore_permission_denied=self.skip_unreadable,
        ):
            now = time.monotonic()
            if self.ready is not None:  # the first return: the watches are in place
                self._send(asyncio.Event.set, self.ready)
                self.ready = None
            if batch:
                first = first if gathered else now
                gathered |= batch
                last = now - STEP_MS / 1000  # watchfiles saw STEP_MS of quiet before returning
            if gathered and (now - last >= quiet or now - first >= MAX_BURST):
                paths = _settle(gathered, self.workspace)
                if paths:
                    self._send(self.queue.put_nowait, paths)
                gathered = set()

    async def get(self) -> set[str]:
        item = await self.queue.get()
        if isinstance(item, Exception):
            raise item
        return item


async def changes(
    pipeline: Pipeline,
    *,
    force_polling: bool = False,
    notice: Callable[[str], None] = _stderr,
    ready: asyncio.Event | None = None,
) -> AsyncGenerator[set[str], None]:
    """Yield each burst of relevant changes as a set of workspace-relative paths (see above).

    Watching starts with the first `anext()`; `ready` is set once the watches are in place.
    """
    source = _Pump(pipeline, force_polling, notice, ready)
    task = asyncio.create_task(asyncio.to_thread(source.pump))
    try:
        while True:
            yield await source.get()
    finally:
        source.stop.set()
        await task


def _settle(batch: set[tuple[Change, str]], workspace: Path) -> set[str]:
    """Workspace-relative paths of a batch, minus files that were created and are gone again."""
    added = {path for change, path in batch if change == Change.added}
    return {
        Path(os.path.relpath(path, workspace)).as_posix()
        for _, path in batch
        if path not in added or os.path.lexists(path)
    }


class WatchSession:
    """Reruns what changes affect; see the module docstring for the API and its rules."""

    def __init__(
        self,
        pipeline: Pipeline,
        make_run: MakeRun,
        *,
        on_run: Callable[[Run], None] | None = None,
        on_change: Callable[[set[str]], None] | None = None,
        on_notice: Callable[[str], None] = _stderr,
        force_polling: bool = False,
    ) -> None:
        watch_roots(pipeline)  # a missing watch path fails here, before anything runs
        self.pipeline = pipeline
        self.make_run = make_run
        self.on_run = on_run
        self.on_change = on_change
        self.on_notice = on_notice
        self.force_polling = force_polling
        self.interrupt_code = 130  # the exit code of a run cancelled by cancelling `run()`
        self.current: Run | None = None  # the latest run
        self.paused = False
        self.pause_reason: str | None = None
        self.last_change: str | None = None
        self._pending: set[str] = set()
        self._changed: set[str] = set()
        self._held: set[str] = set()  # changes while paused by hand
        self._starts: dict[str, float] = {}  # stage -> when its running attempt started
        self._spans: dict[str, tuple[float, float]] = {}  # stage -> its last uncancelled attempt
        self._unfollow: Callable[[], None] | None = None
        self._streak: str | None = None  # the stage of the self-triggered reruns in a row
        self._streak_count = 0
        self._task: asyncio.Task[int] | None = None  # our execute() of `current`
        self._wake = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()  # set by `run()` once file changes are being watched

    # -- controls ----------------------------------------------------------------------------

    @property
    def banner(self) -> str:
        """Status text for the TUI header."""
        if self.paused and self.pause_reason:
            return f"watch paused · {self.pause_reason}"
        if self.paused:
            return f"watch paused · held: {describe(self._held)}" if self._held else "watch paused"
        return f"watching · last change: {self.last_change}" if self.last_change else "watching"

    def pause(self, reason: str | None = None) -> None:
        """Stop reacting to changes (a running run goes on)."""
        self.paused = True
        self.pause_reason = reason

    def resume(self) -> None:
        """React to changes again, starting with those made while paused by hand."""
        self.paused = False
        self.pause_reason = None
        self._streak, self._streak_count = None, 0
        held, self._held = self._held, set()
        if held:
            self._on_change(held)
        self._wake.set()

    def toggle(self) -> bool:
        """Pause or resume; returns True when now watching."""
        if self.paused:
            self.resume()
        else:
            self.pause()
        return not self.paused

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, previous: Run | None = None) -> None:
        """Start watching, run (or adopt `previous`, which may be running), then rerun on
        changes until cancelled. A run executed elsewhere (the TUI's rerun keys) is waited for
        before a rerun."""
        stream = changes(
            self.pipeline, force_polling=self.force_polling, notice=self.on_notice, ready=self.ready
        )
        self._listener = asyncio.create_task(self._listen(stream))
        try:
            await self._until(self.ready.wait())  # no change may slip by unseen
            if previous is None:
                await self._execute(self.make_run(only=None, carry=None, trigger="manual"))
            else:
                self._follow(previous)
            while True:
                while self.paused or not self._pending:
                    self._wake.clear()
                    await self._until(self._wake.wait())
                assert self.current is not None
                if self.current.running:  # executed elsewhere (the TUI's rerun keys)
                    await self._finished(self.current)
                    continue
                only, self._pending = self._pending, set()
                changed, self._changed = self._changed, set()
                if self.on_change is not None:
                    self.on_change(changed)
                carry = {sid: st for sid, st in self.current.states.items() if sid not in only}
                await self._execute(self.make_run(only=only, carry=carry, trigger="watch"))
        finally:
            self._listener.cancel()  # first: no change may restart what is being cancelled
            try:
                await self._stop_run()
            finally:
                await asyncio.gather(self._listener, return_exceptions=True)
                await stream.aclose()

    async def _until(self, aw: Awaitable[T]) -> T:
        """Await `aw` without cancelling it when we are cancelled; raise the listener's error if
        it fails first."""
        fut = asyncio.ensure_future(aw)
        assert self._listener is not None
        try:
            await asyncio.wait({fut, self._listener}, return_when=asyncio.FIRST_COMPLETED)
            if not fut.done():
                self._listener.result()
                raise RuntimeError("the change listener stopped")
            return fut.result()
        finally:
            if fut is not self._task:
                fut.cancel()

    async def _execute(self, run: Run) -> None:
        self._follow(run)
        if self.on_run is not None:
            self.on_run(run)
        self._task = asyncio.create_task(run.execute())
        await self._until(self._task)

    async def _finished(self, run: Run) -> None:
        """Wait for the end of a run that someone else executes."""
        done = asyncio.Event()
        stop = run.subscribe(lambda e: done.set() if isinstance(e, RunFinished) else None)
        try:
            await self._until(done.wait())
        finally:
            stop()

    def _follow(self, run: Run) -> None:
        """Make `run` the latest run and record when its stages run (for the loop guard)."""
        if self._unfollow is not None:
            self._unfollow()
        self.current = run
        self._starts, self._spans = {}, {}
        self._unfollow = run.subscribe(self._track)

    def _track(self, event: Event) -> None:
        if not isinstance(event, StageStatus):
            return
        if event.status == RUNNING:
            self._starts[event.stage] = event.ts
        elif event.status in FINISHED and event.stage in self._starts:
            started = self._starts.pop(event.stage)
            if event.status != CANCELLED:
                self._spans[event.stage] = (started, event.ts)

    async def _stop_run(self) -> None:
        """Cancel our active run in order and wait for it; a second cancel kills it at once."""
        task = self._task
        if task is None or task.done() or self.current is None:
            return
        self.current.cancel_all(self.interrupt_code)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()
            await asyncio.wait({task})
            raise

    # -- changes -----------------------------------------------------------------------------

    async def _listen(self, stream: AsyncIterator[set[str]]) -> None:
        async for paths in stream:
            # matching a burst of paths against every stage's globs, and their stats: a thread
            found = await asyncio.to_thread(self._sort_out, paths, self._covered())
            self._on_change(paths, found)

    def _covered(self) -> set[str]:
        run = self.current
        return set(run.states if run is not None else self.pipeline.stages)

    def _sort_out(self, paths: set[str], covered: set[str]) -> _Sorted:
        """The paths of a change set that can trigger a stage of `covered`, the stages they
        hit, and those files' modification times (for the loop guard)."""
        triggering = self._triggering(paths, covered)
        hit = graph.affected(self.pipeline, triggering) & covered
        mtimes = []
        for path in triggering if hit else ():
            with suppress(OSError):
                mtimes.append((self.pipeline.workspace / path).stat().st_mtime)
        return triggering, hit, mtimes

    def _on_change(self, paths: set[str], found: _Sorted | None = None) -> None:
        if self.pipeline.path.name in paths:
            self.on_notice(
                f"watch: {self.pipeline.path.name} changed; restart pipedeck to use the new "
                "version (this session keeps the one it started with)"
            )
        covered = self._covered()
        paths, hit, mtimes = found or self._sort_out(paths, covered)
        if self.paused and self.pause_reason is None:  # paused by hand (W): held for resume
            self._held |= paths
            return
        hit &= covered  # the run may have changed while the change set was sorted out
        if not hit:
            return
        if self.paused:  # by the loop guard: a change no stage made resumes watching
            if self._self_trigger(mtimes, hit) is not None:
                return
            self.resume()
        elif self._is_loop(paths, mtimes, hit):
            return
        self.last_change = describe(paths)
        run = self.current
        if run is not None and run.running:  # rerun in place; the rest keeps running
            if self.on_change is not None:
                self.on_change(paths)
            why = f"a change to {self.last_change}"
            for sid in run.stage_ids:
                if sid in hit:
                    run.rerun(sid, downstream=False, why=why)
            return
        self._pending |= hit
        self._changed |= paths
        self._wake.set()

    def _triggering(self, paths: set[str], covered: Iterable[str]) -> set[str]:
        """The paths that can trigger a stage of `covered` (see the module docstring)."""
        stages = [self.pipeline.stages[sid] for sid in covered]
        if any(not stage.inputs and stage.when != "manual" for stage in stages):
            return paths
        tests = [globs.matcher(stage.inputs) for stage in stages if stage.inputs]
        return {path for path in paths if any(test(path) for test in tests)}

    def _is_loop(self, paths: set[str], mtimes: list[float], hit: set[str]) -> bool:
        """Count self-triggered change sets; pause and return True past the limit."""
        culprit = self._self_trigger(mtimes, hit)
        if culprit is None:
            self._streak, self._streak_count = None, 0
            return False
        self._streak_count = self._streak_count + 1 if culprit == self._streak else 1
        self._streak = culprit
        if self._streak_count <= LOOP_LIMIT:
            return False
        reason = (
            f"stage {culprit} keeps changing its own input {describe(paths)} "
            f"({LOOP_LIMIT} reruns in a row)"
        )
        self.pause(reason)
        self.on_notice(
            f"watch paused: {reason}; declare it in the stage's outputs or in watch.ignore. "
            "Watching resumes at the next change no stage makes (or with W in the TUI)."
        )
        return True

    def _self_trigger(self, mtimes: list[float], hit: set[str]) -> str | None:
        """The hit stage whose last uncancelled attempt wrote every existing changed file
        (`mtimes`: theirs)."""
        if not mtimes:
            return None
        for sid, (started, ended) in self._spans.items():
            if sid in hit and all(started - LOOP_SLACK <= m <= ended + LOOP_SLACK for m in mtimes):
                return sid
        return None
