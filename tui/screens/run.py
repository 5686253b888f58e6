"""The run screen: stage tree on the left, log panes on the right, header and footer.

State flows one way: the run's events update `views` (plain data) and mark what changed; a timer
at `FRAME_RATE` applies the changes to the widgets, so a flood of log events costs one poll per
frame, never one message per line. Commands flow back as calls on the run.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import suppress
from functools import cached_property, partial
from typing import TYPE_CHECKING, ClassVar, Protocol

from textual import on, work
from textual.app import ComposeResult, SuspendNotSupported, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.widget import Widget
from textual.widgets import Tree
from textual.worker import Worker, WorkerCancelled, WorkerFailed, WorkerState

from engine.events import (
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
from engine.gha.commands import safe_name
from engine.ptyproc import TERMINALS
from engine.resources import ResourceMonitor, Usage
from engine.shell import ShellError, open_shell
from engine.watch import WatchSession
from tui.screens.dag import DagScreen
from tui.screens.help import ConfirmScreen, HelpScreen
from tui.screens.history import HistoryScreen
from tui.screens.log_screen import LogScreen, SearchBar
from tui.screens.merged import MergedScreen
from tui.screens.summary import SummaryScreen
from tui.screens.timeline import TimelineScreen
from tui.screens.tty_input import TypeInto
from tui.widgets.estimates import run_estimate, stage_medians
from tui.widgets.header import RunHeader
from tui.widgets.hosts import HostsBar
from tui.widgets.keybar import KeyBar
from tui.widgets.log_view import ERRORS, LineReader, LogSource, LogView
from tui.widgets.merged import Arrivals
from tui.widgets.stage_tree import StageTree
from tui.widgets.status import LIVE, StageView, summary_status
from tui.widgets.steps import JobReader, StepMarks, StepReader
from tui.widgets.timeline import Spans

if TYPE_CHECKING:
    from engine.logs import LogStore
    from engine.run import StageState
    from engine.spec import Pipeline

FRAME_RATE = 15  # log panes and labels are refreshed at most this often


class RunLike(Protocol):
    """What the screen uses of `engine.run.Run`."""

    run_id: str
    pipeline: Pipeline
    logs: LogStore
    running: bool

    @property
    def states(self) -> Mapping[str, StageState]: ...
    @property
    def host_states(self) -> Mapping[str, HostState]: ...

    def subscribe(self, fn: Callable[[Event], None]) -> Callable[[], None]: ...
    def execute(self) -> Awaitable[int]: ...
    def close(self) -> Awaitable[None]: ...
    def cancel(self, stage_id: str) -> None: ...
    def cancel_all(self) -> None: ...
    def rerun(self, stage_id: str) -> None: ...
    def rerun_failed(self) -> None: ...
    def approve(self, stage_id: str) -> None: ...


def _placeholder(sid: str, view: StageView, started: bool) -> str:
    """What the log pane says when a stage has no output to show (`started`: the run has)."""
    status = view.status
    if status == WAITING:
        return f"{sid} is waiting for approval: press a to run it"
    if status == PENDING and not started:
        return f"{sid} is pending: press s to start the run"
    if status == PENDING:
        return f"{sid} is pending: it starts when what it needs is done"
    if status == QUEUED:
        return f"{sid} is queued: it starts when a slot is free"
    if status in (SKIPPED, CACHED, CANCELLED) and not view.has_log:
        return f"{sid} {status}" + (f": {view.reason}" if view.reason else "")
    if status == RUNNING:
        return "no output yet"
    return "no output"


class RunScreen(LogScreen):
    """Shows one `Run` and drives it with keys."""

    DEFAULT_CSS = """
    RunScreen #body { height: 1fr; }
    RunScreen HostsBar { display: none; }
    RunScreen.-hosts HostsBar { display: block; }
    RunScreen StageTree {
        width: 36%; min-width: 24; max-width: 56; height: 1fr;
        border: round $foreground 30%; background: $surface;
    }
    RunScreen StageTree:focus { border: round $border; }
    RunScreen #logs { width: 1fr; height: 1fr; }
    RunScreen LogView { height: 1fr; }
    RunScreen #pinned { display: none; }
    RunScreen.-pinned #pinned { display: block; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "start", "Start", tooltip="start the run (after --no-start)"),
        Binding("r", "rerun", "Rerun", tooltip="rerun the selected stage and its downstream"),
        Binding(
            "R",
            "rerun_failed",
            "Rerun failed",
            show=False,
            tooltip="rerun every failed stage and its downstream",
        ),
        Binding("c", "cancel", "Cancel", tooltip="cancel the selected stage"),
        Binding("C", "cancel_all", "Cancel all", show=False, tooltip="cancel the whole run"),
        Binding("a", "approve", "Approve", tooltip="approve the selected manual stage"),
        Binding(
            "p", "pin", "Pin", show=False, tooltip="pin the selected stage's log in a second pane"
        ),
        Binding("y", "copy", "Copy", show=False, tooltip="copy the visible log lines (OSC 52)"),
        Binding(
            "Y",
            "copy_hit",
            "Copy match",
            show=False,
            tooltip="copy the line of the current search match (OSC 52)",
        ),
        Binding("W", "watch", "Watch", show=False, tooltip="toggle watch mode"),
        Binding(
            "u",
            "resources",
            "Resources",
            show=False,
            tooltip="CPU% and memory of each running stage's process tree in the tree",
        ),
        Binding(
            "M",
            "mouse",
            "Mouse",
            show=False,
            tooltip="give the mouse to the terminal (its selection and scroll), or take it back",
        ),
        Binding("D", "dag", "DAG", show=False, tooltip="the stages as a graph, live"),
        Binding(
            "m", "merged", "Merged log", show=False, tooltip="every stage's output interleaved"
        ),
        Binding(
            "T",
            "timeline",
            "Timeline",
            show=False,
            tooltip="the timeline: a bar per stage attempt, critical path marked",
        ),
        Binding("h", "history", "History", show=False, tooltip="show the run history"),
        Binding(
            "S",
            "summary",
            "Summary",
            show=False,
            tooltip="the selected GitHub Actions job's step summary, as Markdown",
        ),
        Binding("t", "shell", "Shell", show=False, tooltip="a shell in the stage's directory"),
        Binding("i", "type_into", "Type", show=False, tooltip="type into a tty: true stage"),
        Binding(
            "H",
            "hosts",
            "Hosts",
            show=False,
            tooltip="show each SSH host's connection state in full",
        ),
        Binding("question_mark", "help", "Help", key_display="?", tooltip="show every key"),
        Binding("q", "quit", "Quit", tooltip="quit (a running run is cancelled first)"),
        Binding(
            "escape",
            "clear_search",
            "Clear search",
            show=False,
            tooltip="close the search and clear its highlights",
        ),
    ]
    NAVIGATION: ClassVar[list[tuple[str, str]]] = [
        ("up/down, j/k", "select a stage (tree) or scroll (log)"),
        ("enter, tab", "move focus between the tree and the log"),
        ("end", "jump to the log's end and follow"),
        ("click", "select a stage"),
    ]

    def __init__(
        self,
        run: RunLike,
        *,
        start: bool = True,
        watch: bool = False,
        clock: Callable[[], float] = time.time,
        make_run: Callable[..., RunLike] | None = None,
    ) -> None:
        """`make_run(only=, carry=, trigger=)` makes the runs of watch mode (None: no watch)."""
        super().__init__()
        self.run = run
        self.pipeline = run.pipeline
        self.clock = clock
        self.start = start
        self.watch_at_start = watch
        self.make_run = make_run
        self.session: WatchSession | None = None
        self.exit_code = 0
        self.views: dict[str, StageView] = {
            sid: StageView(host=stage.host) for sid, stage in run.pipeline.stages.items()
        }
        for sid, state in run.states.items():
            self.views[sid] = StageView(
                status=state.status, attempt=state.attempt, host=state.host, reason=state.reason
            )
        self.host_states: dict[str, HostState] = {}  # SSH host -> its state, in pipeline order
        self._dirty_hosts = False
        remote = dict.fromkeys(s.host for s in run.pipeline.stages.values() if s.is_remote)
        self._host_rank = {host: rank for rank, host in enumerate(remote)}  # display order
        self._record_hosts(run.host_states)
        self._dirty_status: set[str] = set()
        self._dirty_steps: list[StepStatus] = []
        self._dirty_logs: set[str] = set()
        self._run_status = "not started"
        self._run_started: float | None = None  # when the run first started (SPEC: wall time)
        self._started_run: str | None = None  # the run `_run_started` is of (watch: a new one)
        self._run_ended: float | None = None
        self._header_key: tuple[object, ...] = ()
        self._pinned: str | None = None
        self._active_log = "log"
        self._log_run: dict[str, str] = {}  # stage -> run id of its current attempt (watch)
        self._quitting = False
        self._finishing = False
        self._failure_first = False  # the run ended failed: show the first failure (in sync)
        self._unsubscribe: Callable[[], None] | None = None
        self.estimate: float | None = None  # the run's usual length, from the history
        self.resource_columns = False  # `u`: CPU and memory of running stages in the tree
        self.mouse_captured = True  # `M` lets the terminal have the mouse
        self.spans = Spans()  # every attempt's queued / running times, for the timeline
        self.arrivals = Arrivals()  # the order log lines arrived in, for the merged log
        self.needs = {sid: stage.needs for sid, stage in run.pipeline.stages.items()}
        self.jobs = {sid for sid, stage in run.pipeline.stages.items() if stage.steps}
        self.marks = StepMarks()  # where each GitHub Actions step's lines are in its job's log

    def compose(self) -> ComposeResult:
        yield RunHeader()
        yield HostsBar()
        with Horizontal(id="body"):
            yield StageTree(self.pipeline, self.views, id="tree")
            with Vertical(id="logs"):
                yield LogView(id="log")
                yield LogView(id="pinned")
                yield SearchBar()
        yield KeyBar()

    def on_mount(self) -> None:
        tree = self.query_one(StageTree)
        tree.refresh_all(self.clock())
        tree.focus()
        tree.move_cursor_to_line(0)
        self._unsubscribe = self.run.subscribe(self._on_event)
        self.set_interval(1 / FRAME_RATE, self.sync)
        self.watch(self.app, "theme", lambda: tree.refresh_all(self.clock()), init=False)
        self._show_selected()
        self.sync()
        self._load_estimates()
        if self.start:
            self._execute()  # --watch: the session starts once this run has (see _on_event)
        elif self.watch_at_start:
            self.action_watch()

    @work(thread=True, group="estimates", exit_on_error=False)
    def _load_estimates(self) -> None:
        """Each stage's median duration from the history (SQLite: in a thread)."""
        medians = stage_medians(self.pipeline.path, self.pipeline.state_dir, self.pipeline.stages)
        self.app.call_from_thread(self._estimates_loaded, medians)

    def _estimates_loaded(self, medians: dict[str, float]) -> None:
        tree = self.query_one(StageTree)
        tree.estimates = medians
        tree.refresh_all(self.clock())
        stages = self.pipeline.stages
        starts = [sid for sid in self.run.stage_ids if stages[sid].when != "manual"]
        self.estimate = run_estimate(self.needs, medians, starts)
        self._header_key = ()  # redraw the header with the estimate

    @property
    def watching(self) -> bool:
        """True while watch mode reacts to changes."""
        return self.session is not None and not self.session.paused

    def _follow_run(self, run: RunLike) -> None:
        """Show `run` from now on (watch mode makes a new run per change set)."""
        if run is self.run:
            return
        if self._unsubscribe is not None:
            self._unsubscribe()
        old, self.run = self.run, run
        self._unsubscribe = run.subscribe(self._on_event)
        self.run_worker(old.close(), group="close", exit_on_error=False)

    # -- events in ------------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        """Called by the run on this loop: record what changed; `sync` draws it."""
        if isinstance(event, LogLines):
            self._dirty_logs.add(event.stage)
            self.arrivals.add(event)
            if event.stage in self.jobs:
                self.marks.add(event)
        elif isinstance(event, StageStatus):
            if event.stage in self.views:
                self.spans.apply(event)
                self.views[event.stage].apply(event)
                self._dirty_status.add(event.stage)
                if event.status == RUNNING:
                    self._log_run[event.stage] = event.run_id
        elif isinstance(event, RunStarted):
            if self._run_started is None:
                self.refresh_bindings()  # `s` goes away
                self._dirty_status.update(self.query_one(StageTree).selected_ids)  # "press s"
                if self.watch_at_start and self.session is None:
                    self.call_later(self.action_watch)  # adopts this run, then watches
            if event.run_id != self._started_run:  # the wall time is from its first start
                self._started_run, self._run_started = event.run_id, event.ts
            self._run_status, self._run_ended = RUNNING, None
        elif isinstance(event, RunFinished):
            self._run_status, self._run_ended = event.status, event.ts
            self.exit_code = event.exit_code
            self._failure_first = event.status == FAILED
        elif isinstance(event, StepStatus):
            self._dirty_steps.append(event)
        elif isinstance(event, HostStatus):
            self._record_hosts({event.host: HostState(event.state, event.reason)})
        # any other event (a newer engine's) is ignored

    def _record_hosts(self, states: Mapping[str, HostState]) -> None:
        """Note new host states; `sync` draws them."""
        if not states:
            return
        merged = {**self.host_states, **states}
        order = sorted(merged, key=lambda host: self._host_rank.get(host, len(self._host_rank)))
        self.host_states = {host: merged[host] for host in order}
        self._dirty_hosts = True

    def sync(self) -> None:
        """Apply recorded changes to the widgets (called at the frame rate)."""
        tree = self.query_one(StageTree)
        if self.resource_columns:
            tree.usage = self._usage()
        tree.tick(self.clock())
        dirty, self._dirty_status = self._dirty_status, set()
        for sid in dirty:
            tree.refresh_stage(sid)
        steps, self._dirty_steps = self._dirty_steps, []
        for step in steps:
            tree.update_step(step)
        logs, self._dirty_logs = self._dirty_logs, set()
        main, pinned = self.query_one("#log", LogView), self.query_one("#pinned", LogView)
        if dirty.union(step.stage for step in steps).intersection(tree.selected_ids):
            self._show_selected()
        elif main.stage_id in logs or self._is_running(main.stage_id):
            main.poll()  # a running stage's unterminated line changes without a log event
        if self._pinned in dirty:
            self._show(pinned, self._pinned)
        elif self._pinned in logs or self._is_running(self._pinned):
            pinned.poll()
        self._update_header()
        if self._failure_first:
            self._failure_first = False
            self._open_first_failure()
        if self._dirty_hosts:
            self._dirty_hosts = False
            self.query_one(HostsBar).update_hosts(self.host_states)
            self.set_class(self.pipeline.uses_remote and bool(self.host_states), "-hosts")
        if self._quitting and not self.run.running and not self._finishing:
            self._finishing = True
            self._finish()

    def _is_running(self, sid: str | None) -> bool:
        return sid is not None and self.views[sid].status == RUNNING

    def _open_first_failure(self) -> None:
        """Select the stage that failed first and open its log at its first error line."""
        ends = {
            sid: (view.started or 0.0) + (view.duration or 0.0)
            for sid, view in self.views.items()
            if view.status in BAD and not self.pipeline.stages[sid].allow_failure
        }
        if not ends:
            return
        first = min(ends, key=lambda sid: ends[sid])
        self.query_one(StageTree).select_stage(first)
        main = self.query_one("#log", LogView)
        self._show(main, first)
        main.start_search(ERRORS, label="errors", from_start=True)

    def _update_header(self) -> None:
        now = self.clock()
        status = self._run_status
        ended = self._run_ended
        if not self.run.running and any(v.status == WAITING for v in self.views.values()):
            status, ended = "waiting for approval", None  # the wall time goes on while it waits
        elif status == RUNNING:
            status = self._services_up() or status
        elapsed = None
        if self._run_started is not None:
            elapsed = (ended or now) - self._run_started
        banner = self.session.banner if self.session is not None else ""
        header = self.query_one(RunHeader)
        key = (
            status,
            round(elapsed or 0, 1),
            tuple(v.status for v in self.views.values()),
            banner,
            header.size.width,
            self.app.theme,  # colours come from the theme
        )
        if key != self._header_key:
            self._header_key = key
            header.update_run(
                self.pipeline.name,
                status,
                elapsed,
                self.views,
                self.may_fail,
                banner,
                self.estimate,
            )

    @cached_property
    def may_fail(self) -> frozenset[str]:
        """The stages with `allow_failure`: the header counts their failures apart."""
        return frozenset(sid for sid, stage in self.pipeline.stages.items() if stage.allow_failure)

    @cached_property
    def services(self) -> list[str]:
        """The service stages (SPEC §10)."""
        return [sid for sid, stage in self.pipeline.stages.items() if stage.service]

    def _services_up(self) -> str | None:
        """The run's state once only its services are left running (the TUI keeps them up,
        SPEC §10): `2 services up`, `1 service up, 1 starting`. None while another stage runs or
        is still to run (a stage held by a manual one waiting for approval is not)."""
        live = [sid for sid in self.services if self.views[sid].status in LIVE]
        if not live:
            return None
        held: set[str] = set()
        for sid, stage in self.pipeline.stages.items():  # in topological order
            status = self.views[sid].status
            if stage.service or status in FINISHED:
                continue
            if status == WAITING or (status == PENDING and held.intersection(stage.needs)):
                held.add(sid)
            else:
                return None
        up = sum(self.views[sid].status == READY for sid in live)
        starting = f"{len(live) - up} starting"
        if not up:
            return f"{len(live)} service{'s' * (len(live) != 1)} starting"
        return f"{up} service{'s' * (up != 1)} up" + (f", {starting}" if up < len(live) else "")

    # -- log panes --------------------------------------------------------------------------------

    def _pick(self, ids: list[str]) -> str | None:
        """The instance whose log to show for a node: itself, or a matrix's most urgent one."""
        if len(ids) <= 1:
            return ids[0] if ids else None
        urgent = summary_status([self.views[i].status for i in ids])
        return next(i for i in ids if self.views[i].status == urgent)

    def _show_selected(self) -> None:
        tree = self.query_one(StageTree)
        self._show(
            self.query_one("#log", LogView), self._pick(tree.selected_ids), tree.selected_step
        )

    def _show(self, log: LogView, sid: str | None, step: int | None = None) -> None:
        """Point a log pane at the current attempt of stage `sid` (at one of its steps when
        `step` is given: a GitHub Actions job's)."""
        log.stage_id = sid
        if sid is None:
            log.border_title = ""
            log.show(None, "no stage selected")
            return
        view = self.views[sid]
        source = None
        if view.has_log:
            source = self._source(sid, view.attempt, step)
        title = sid if view.attempt <= 1 else f"{sid} · attempt {view.attempt}"
        allowed = view.status in BAD and self.pipeline.stages[sid].allow_failure
        status = f"{view.status} (allowed)" if allowed else view.status
        state = (
            status if view.status not in FINISHED or not view.reason else f"{status}: {view.reason}"
        )
        job = f" · {view.host} {view.job}" if view.job else ""  # `cluster #1234 @node1`
        placeholder = _placeholder(sid, view, not self.check_action("start", ()))
        event = self.query_one(StageTree).step_status(sid, step) if step is not None else None
        if step is not None and event is not None:  # the step's own state instead of its job's
            why = f": {event.reason}" if event.reason and event.status in FINISHED else ""
            title, state = f"{title} · step {step + 1} {event.name}", event.status + why
            placeholder = "no output yet" if event.status == RUNNING else f"no output{why}"
        log.border_title = escape(f"{title} · {state}{job}")
        log.show(source, placeholder)

    def _source(self, sid: str, attempt: int, step: int | None) -> LogSource:
        """The log of an attempt of `sid`: a job's with step headers, or one step's lines."""
        key = (self._log_run.get(sid, self.run.run_id), sid, attempt)
        logs = self.run.logs
        reader, tail = partial(logs.reader, *key), partial(logs.partial, *key)
        if sid not in self.jobs:
            return LogSource(sid, attempt, reader, key[0], tail)
        if step is None:
            return LogSource(sid, attempt, lambda: JobReader(reader()), key[0], tail)
        span = partial(self.marks.span, key, step)

        def step_tail() -> tuple[str, str] | None:  # the unterminated line is a running step's
            known = span()
            return tail() if known is not None and known[1] is None else None

        return LogSource(sid, attempt, lambda: StepReader(reader(), span), key[0], step_tail, step)

    @property
    def home(self) -> Widget:
        return self.query_one(StageTree)

    @property
    def active_log(self) -> LogView:
        """The pane that f, w, /, n, N, y act on: the last focused one."""
        if self._active_log == "pinned" and self._pinned is not None:
            return self.query_one("#pinned", LogView)
        return self.query_one("#log", LogView)

    def on_descendant_focus(self) -> None:
        focused = self.focused
        if isinstance(focused, LogView) and focused.id:
            self._active_log = focused.id

    @on(Tree.NodeHighlighted)
    def _selection_moved(self) -> None:
        self._show_selected()  # a step row: its own lines of its job's log

    # -- running --------------------------------------------------------------------------------

    @work(exclusive=True, group="run", exit_on_error=False)
    async def _execute(self) -> int:
        return await self.run.execute()

    def _ensure_running(self) -> None:
        if not self.run.running and not self._quitting:
            self._execute()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place where a failure of the engine (run or watch) is reported."""
        worker = event.worker
        if worker.group in ("run", "watch") and event.state == WorkerState.ERROR:
            self.notify(
                str(worker.error) or type(worker.error).__name__,
                title="engine error",
                severity="error",
                timeout=10,
            )

    def _command(self, fn: Callable[..., None], *args: str) -> bool:
        """Call a run command; an error becomes a notification. True when it succeeded."""
        try:
            fn(*args)
        except Exception as error:  # an engine error must never reach the screen as a traceback
            self.notify(str(error) or type(error).__name__, title="error", severity="error")
            return False
        return True

    def _selected(self) -> list[str]:
        ids = self.query_one(StageTree).selected_ids
        if not ids:
            self.notify("select a stage first", severity="warning")
        return ids

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`s` is offered only until the run has started; `/` in the search box is text."""
        if action == "start":
            return self._run_started is None and not self.run.running
        return super().check_action(action, parameters)

    def action_start(self) -> None:
        """Start the run (`pipedeck ui --no-start`)."""
        self._ensure_running()

    def action_rerun(self) -> None:
        """Rerun the selected stage (every instance of a matrix stage) and its downstream."""
        ids = self._selected()
        if ids and all(self._command(self.run.rerun, sid) for sid in ids):
            self._ensure_running()

    def action_rerun_failed(self) -> None:
        """Rerun every failed stage and its downstream."""
        if not any(v.status in BAD | {CANCELLED} for v in self.views.values()):
            self.notify("no failed stage to rerun", severity="warning")
        elif self._command(self.run.rerun_failed):
            self._ensure_running()

    def action_cancel(self) -> None:
        """Cancel the selected stage (the unfinished instances of a matrix stage)."""
        ids = self._selected()
        live = [sid for sid in ids if self.views[sid].status not in FINISHED]
        if ids and not live:
            self.notify("the selected stage has already finished", severity="warning")
        for sid in live:
            self._command(self.run.cancel, sid)

    def action_cancel_all(self) -> None:
        """Cancel the whole run, in order."""
        if not self.run.running:
            self.notify("nothing is running")
            return
        self._command(self.run.cancel_all)

    def action_approve(self) -> None:
        """Approve the selected manual stage (or the waiting instances of a matrix stage); with
        none selected, the one stage that waits, or move the cursor to the first of several."""
        tree = self.query_one(StageTree)
        waiting = [sid for sid in tree.selected_ids if self.views[sid].status == WAITING]
        if not waiting:
            waiting = [sid for sid, view in self.views.items() if view.status == WAITING]
            if not waiting:
                self.notify("no stage is waiting for approval", severity="warning")
                return
            if len({self.pipeline.stages[sid].name for sid in waiting}) > 1:
                tree.select_stage(waiting[0])
                self.notify(
                    f"{len(waiting)} stages wait for approval: select one and press a",
                    severity="warning",
                )
                return
        if all(self._command(self.run.approve, sid) for sid in waiting):
            self._ensure_running()

    def action_watch(self) -> None:
        """Switch watch mode on or off."""
        if self.session is None:
            if self.make_run is None:
                self.notify("watch mode is not available here", severity="warning")
                return
            self.session = WatchSession(
                self.pipeline,
                self.make_run,
                on_run=self._follow_run,  # type: ignore[arg-type]
                on_notice=lambda text: self.notify(text, severity="warning", timeout=10),
            )
            self._watch()
        else:
            self.session.toggle()
        self.notify("watch mode on" if self.watching else "watch mode off")
        self._update_header()

    @work(group="watch", exit_on_error=False)
    async def _watch(self) -> None:
        assert self.session is not None
        await self.session.run(previous=self.run)  # type: ignore[arg-type]

    def action_history(self) -> None:
        """Open the run history."""
        self.app.push_screen(HistoryScreen(self.pipeline))

    def action_summary(self) -> None:
        """Show the step summary the selected GitHub Actions job wrote (SPEC §11)."""
        sid = self._pick(self._selected())
        if sid is None:
            return
        if not self.pipeline.stages[sid].steps:
            self.notify("only a GitHub Actions job has a step summary", severity="warning")
            return
        run_id = self._log_run.get(sid, self.run.run_id)
        folder = self.pipeline.state_dir / "gha" / run_id / "summary"
        self.app.push_screen(SummaryScreen(sid, folder / f"{safe_name(sid)}.md"))

    def action_mouse(self) -> None:
        """Stop or restart capturing the mouse, so the terminal's own selection works."""
        self.mouse_captured = not self.mouse_captured
        driver = self.app._driver
        name = "_enable_mouse_support" if self.mouse_captured else "_disable_mouse_support"
        switch = getattr(driver, name, None)  # terminal drivers have it; headless ones don't
        if switch is not None:
            switch()
        self.notify(
            "mouse on: click selects, drag selects log text"
            if self.mouse_captured
            else "mouse off: the terminal selects and scrolls; M takes the mouse back"
        )

    def action_resources(self) -> None:
        """Show or hide the CPU and memory columns of running stages."""
        tree = self.query_one(StageTree)
        self.resource_columns = not self.resource_columns
        tree.usage = self._usage() if self.resource_columns else None
        tree.refresh_all(self.clock())
        if self.resource_columns and ResourceMonitor.of_run(self.run.run_id) is None:
            self.notify("this run's stages are not sampled", severity="warning")

    def _usage(self) -> Mapping[str, Usage]:
        monitor = ResourceMonitor.of_run(self.run.run_id)
        return monitor.usage if monitor is not None else {}

    def action_dag(self) -> None:
        """Open the DAG of the stages; choosing a box shows its log."""
        tree = self.query_one(StageTree)
        selected = self._pick(tree.selected_ids)
        title = f"{self.pipeline.name} · {len(self.needs)} stages"
        self.app.push_screen(DagScreen(title, self.needs, self.views, selected), self._dag_chose)

    def _dag_chose(self, sid: str | None) -> None:
        if sid is not None:
            self.query_one(StageTree).select_stage(sid)
            self._show_selected()
            self.query_one("#log", LogView).focus()

    def action_merged(self) -> None:
        """Open the merged log of every stage."""

        def open_log(key: tuple[str, str, int]) -> LineReader:
            reader = self.run.logs.reader(*key)
            return JobReader(reader) if key[1] in self.jobs else reader

        self.app.push_screen(MergedScreen(self.arrivals, open_log, self.pipeline.stages))

    def action_timeline(self) -> None:
        """Open the live timeline of the run."""
        title = f"Timeline · {self.run.run_id}"
        self.app.push_screen(TimelineScreen(title, self.spans, self.needs, clock=self.clock))

    def action_hosts(self) -> None:
        """Notify each SSH host's connection state in full (the bar may cut reasons short)."""
        if not self.pipeline.uses_remote:
            self.notify("this pipeline has no SSH hosts")
        elif not self.host_states:
            self.notify("no SSH host has been contacted yet")
        else:
            lines = (f"{host}: {state}" for host, state in self.host_states.items())
            self.notify(escape("\n".join(lines)), title="hosts", timeout=10)

    # -- shells and terminals (SPEC §10) ---------------------------------------------------------

    def on_resize(self) -> None:
        self.call_after_refresh(self._size_terminals)

    def _size_terminals(self) -> None:
        """`tty: true` stages get the log pane's size."""
        size = self.query_one("#log", LogView).size
        TERMINALS.resize_all(size.width, size.height)

    def _one_selected(self) -> str | None:
        ids = self._selected()
        if len(ids) > 1:
            self.notify("select one instance of the matrix stage", severity="warning")
        return ids[0] if len(ids) == 1 else None

    async def action_shell(self) -> None:
        """A shell in the selected stage's directory and environment, on its host; the TUI
        suspends until it exits."""
        sid = self._one_selected()
        if sid is None:
            return
        stage = self.pipeline.stages[sid]
        hosts = getattr(self.run, "hosts", None)  # the session's: pooled SSH, Slurm jobs
        executor = hosts.executor(stage.host) if hosts is not None and stage.is_remote else None
        try:
            with self.app.suspend():
                print(f"pipedeck: a shell for {sid}; exit it to come back", flush=True)
                await open_shell(self.pipeline, sid, run_id=self.run.run_id, executor=executor)
        except (ShellError, SuspendNotSupported) as err:
            self.notify(str(err), title="shell", severity="error")

    def action_type_into(self) -> None:
        """Send keystrokes to the selected `tty: true` stage until Esc."""
        sid = self._one_selected()
        if sid is None:
            return
        if not self.pipeline.stages[sid].tty:
            self.notify(f"{sid} is not a tty: true stage", severity="warning")
            return
        terminal = TERMINALS.find(self._log_run.get(sid, self.run.run_id), sid)
        if terminal is None:
            self.notify(f"{sid} is not running", severity="warning")
            return
        self.mount(TypeInto(sid, terminal))

    def action_help(self) -> None:
        """Show every key."""
        self.app.push_screen(HelpScreen(self.help_rows()))

    def all_bindings(self) -> list[Binding]:
        """This screen's bindings and those it inherits (search, follow, wrap)."""
        found = [b for b in [*self.BINDINGS, *LogScreen.BINDINGS] if isinstance(b, Binding)]
        return found

    def help_rows(self) -> list[tuple[str, str]]:
        """(keys, what they do) for the help screen."""
        rows = list(self.NAVIGATION)
        for binding in self.all_bindings():
            rows.append((binding.key_display or binding.key, binding.tooltip))
        return rows

    def commands(self) -> Iterator[SystemCommand]:
        """Every action of the screen, for the command palette."""
        for binding in self.all_bindings():
            key = binding.key_display or binding.key
            yield SystemCommand(
                binding.description,
                f"{binding.tooltip} [{key}]",
                partial(self.run_action, binding.action),
            )

    # -- log actions ----------------------------------------------------------------------------

    def action_toggle_focus(self) -> None:
        """Move focus between the tree and the log."""
        tree = self.query_one(StageTree)
        if tree.has_focus:
            self.active_log.focus()
        else:
            tree.focus()

    def action_pin(self) -> None:
        """Pin the selected stage's log in a second pane; again on the same stage unpins."""
        sid = self._pick(self.query_one(StageTree).selected_ids)
        pinned = self.query_one("#pinned", LogView)
        if sid is None or sid == self._pinned:
            self._pinned = None
            self.remove_class("-pinned")
            self._active_log = "log"
            pinned.show(None)
            return
        self._pinned = sid
        self.add_class("-pinned")
        self._show(pinned, sid)

    def action_copy(self) -> None:
        """Copy the visible lines of the active log to the clipboard (OSC 52)."""
        text = self.active_log.visible_text()
        self.app.copy_to_clipboard(text)
        count = text.count("\n") + 1 if text else 0
        self.notify(f"copied {count} line{'s' * (count != 1)}")

    def action_copy_hit(self) -> None:
        """Copy the line of the current search match (OSC 52)."""
        text = self.active_log.hit_text()
        if text is None:
            self.notify("no search match to copy", severity="warning")
            return
        self.app.copy_to_clipboard(text)
        self.notify("copied the matching line")

    # -- quitting ---------------------------------------------------------------------------------

    def action_quit(self) -> None:
        """Quit; an active run is cancelled in order first, after a confirmation."""
        if self._quitting:
            return
        if self.run.running:
            self.app.push_screen(
                ConfirmScreen("A run is active. Cancel it and quit?"), self._quit_confirmed
            )
        else:
            self._quitting = True
            self.sync()

    def _quit_confirmed(self, yes: bool | None) -> None:
        if not yes:
            return
        self._quitting = True
        if self.run.running:
            self.notify("cancelling the run…")
            self._command(self.run.cancel_all)
        self.sync()

    @work(group="finish", exit_on_error=False)
    async def _finish(self) -> None:
        """Stop watching, release the run's connections, exit with its exit code."""
        watchers = [w for w in self.workers if w.group == "watch" and w.is_running]
        for worker in watchers:
            worker.cancel()  # the session cancels its active run in order, then stops
        for worker in watchers:
            with suppress(WorkerCancelled, WorkerFailed):
                await worker.wait()
        if self._unsubscribe is not None:
            self._unsubscribe()
        await self.run.close()
        self.app.exit(self.exit_code)
