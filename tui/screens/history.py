"""The run history screen (`h`): past runs, and for one run its stages, logs and metrics.

Read-only. Left: the recorded runs (status, start, duration, trigger) above the selected run's
stage tree (matrix instances under their stage, earlier attempts under their stage, a GitHub
Actions job's steps under its attempt). Right: the selected stage's duration over its recent runs
as a sparkline, its metrics with their change since the previous run, and the selected attempt's
stored log (a step's own lines when a step is selected).

Every read of the database and of the log folder runs in a worker thread (a read may also wait
for the writes another connection has queued); the screen shows each answer when it arrives.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Sparkline, Static, Tree
from textual.widgets.tree import TreeNode
from textual.worker import get_current_worker

from engine.events import LogLines
from engine.history import AttemptRow, History, HistoryError, RunRow, StepRow, pipeline_file
from engine.logs import LogStore
from engine.spec import Pipeline
from tui.history_cli import format_duration, format_time
from tui.widgets.keybar import KeyBar
from tui.widgets.log_view import LineReader, LogSource, LogView
from tui.widgets.pump import Yielding
from tui.widgets.status import ICONS, format_bytes
from tui.widgets.steps import JobReader, StepMarks, StepReader
from tui.widgets.steps import Span as StepSpan
from tui.widgets.timeline import Span, Spans

SPARK_RUNS = 30
NARROW = 120  # below this many columns the runs table shows short run ids and status icons
StageKey = tuple[str, int]  # (stage id, attempt)
Shown = tuple[str, StageKey, int | None]  # (run id, attempt, step) on the right
SCAN_CHUNK = 10_000  # log lines read at once when finding a step's lines
T = TypeVar("T")


def _group(stage_id: str) -> str:
    """The stage name of an instance id (`test[py=3.11]` -> `test`)."""
    return stage_id.split("[", 1)[0]


def _label(row: AttemptRow, name: str) -> Text:
    """A tree label (plain text: stage ids hold brackets that markup would eat)."""
    parts = [ICONS.get(row.status, "!"), name, row.status]
    if row.ran and row.duration is not None:
        parts.append(format_duration(row.duration))
    if row.peak_rss is not None:
        parts.append(f"peak {format_bytes(row.peak_rss)}")
    if row.cpu_seconds is not None:
        parts.append(f"cpu {format_duration(row.cpu_seconds)}")
    note = row.why or row.reason
    return Text("  ".join(parts) + (f"  — {note}" if note else ""))


def _step_label(step: StepRow) -> Text:
    """A step's tree label: `✔  2 Run tests  failed (allowed)  3.1s  — exit code 1`."""
    parts = [ICONS.get(step.status, "!"), f"{step.step + 1} {step.name}", step.shown_status]
    if step.duration is not None:
        parts.append(format_duration(step.duration))
    failed = step.exit_code not in (None, 0)
    note = step.reason or (f"exit code {step.exit_code}" if failed else None)
    return Text("  ".join(parts) + (f"  — {note}" if note else ""))


@dataclass(frozen=True)
class StageRecord:
    """What the right side shows of a stage attempt, read in a thread."""

    has_log: bool
    durations: list[float]
    metrics: list[tuple[str, dict[str, float]]]  # (run id, values), oldest first
    current: int | None  # which of `metrics` holds those current in the open run
    span: StepSpan | None = None  # a step's lines in its job's log (None: the whole log)


def _number(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.6g}" if sign else f"{value:.6g}"


class HistoryScreen(Yielding, Screen[None]):
    """Past runs of a pipeline, read from its `.pipedeck/` (see the module docstring)."""

    DEFAULT_CSS = """
    HistoryScreen #history-left { width: 52%; }
    HistoryScreen.-narrow #history-left { width: 60%; }
    HistoryScreen #runs { height: 1fr; border: round $panel-lighten-2; }
    HistoryScreen #stages { height: 1fr; border: round $panel-lighten-2; }
    HistoryScreen #runs:focus, HistoryScreen #stages:focus { border: round $accent; }
    HistoryScreen #spark-title { height: 1; padding: 0 1; color: $text-muted; }
    HistoryScreen #spark { height: 3; margin: 0 1; }
    HistoryScreen #metrics { height: auto; max-height: 10; border: round $panel-lighten-2; }
    HistoryScreen #log { height: 1fr; }
    HistoryScreen .hidden { display: none; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back"),
        Binding("h", "close", "Back", show=False),
        Binding("q", "close", "Back", show=False),
        Binding("tab", "toggle_focus", "Focus", show=False),
        Binding("T", "timeline", "Timeline"),
        Binding("j", "move(1)", "Down", show=False),
        Binding("k", "move(-1)", "Up", show=False),
        Binding("ctrl+r", "reload", "Reload"),
    ]

    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.history: History | None = None  # opened by the first read, in its thread
        self.problem = "no runs recorded yet"  # said instead of an empty list
        self._opening = threading.Lock()
        self.logs = LogStore(pipeline.state_dir / "logs", pipeline.secrets.values())
        self.file = pipeline_file(pipeline.path, pipeline.state_dir)  # this pipeline's runs only
        self.run_id: str | None = None  # the run whose stages are shown
        self._wanted: str | None = None  # the run asked for (its stages may still be read)
        self._stage: Shown | None = None  # the (run id, attempt, step) asked for
        self.attempts: list[AttemptRow] = []
        self.steps: dict[StageKey, list[StepRow]] = {}  # a job attempt's recorded steps
        self._step_of: dict[int, StepRow] = {}  # tree node id of a step row -> its step

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(id="history-left"):
                yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
                yield Tree[StageKey]("stages", id="stages")
            with Vertical():
                yield Static("", id="spark-title")
                yield Sparkline([], id="spark")
                yield DataTable(id="metrics", cursor_type="row", classes="hidden")
                yield LogView(id="log")
        yield KeyBar()

    def on_mount(self) -> None:
        runs = self.query_one("#runs", DataTable)
        runs.border_title = f"History of {self.pipeline.name}"
        narrow = self.app.size.width < NARROW
        wide = ("METRIC", "VALUE", "PREVIOUS", "CHANGE")
        self.query_one("#metrics", DataTable).add_columns(
            *(("METRIC", "NOW", "WAS", "Δ") if narrow else wide)
        )
        tree = self.query_one("#stages", Tree)
        tree.show_root = False
        tree.border_title = "Stages"
        log = self.query_one("#log", LogView)
        self.set_interval(0.5, log.poll)  # a log still being written (the current run) grows

    def on_screen_resume(self) -> None:
        self.action_reload()

    # -- reading, in threads -----------------------------------------------------------------

    def _read(self, group: str, read: Callable[[History], T], show: Callable[[T], None]) -> None:
        """`read(history)` in a worker thread, then `show(result)` here, unless a newer read of
        the same `group` has been asked for meanwhile."""

        def work() -> None:
            result = read(self._open())
            if not get_current_worker().is_cancelled:
                self.app.call_from_thread(show, result)

        self.run_worker(work, thread=True, group=group, exclusive=True, exit_on_error=False)

    def _open(self) -> History:
        """The history database, opened on first use (in a worker thread)."""
        with self._opening:
            if self.history is None:
                notes: list[str] = []  # a damaged database moved aside: said instead of the list
                try:
                    self.history = History.for_state_dir(self.pipeline.state_dir, warn=notes.append)
                    self.problem = notes[0] if notes else self.problem
                except HistoryError as err:  # shown instead of the runs; an empty one stands in
                    self.problem, self.history = str(err), History(":memory:")
            return self.history

    def on_unmount(self) -> None:
        history = self.history
        if history is not None:
            threading.Thread(target=history.close, name="history-close", daemon=True).start()

    # -- runs ----------------------------------------------------------------------------------

    def action_reload(self) -> None:
        """Read the runs again (the one shown stays selected)."""

        def read(history: History) -> list[RunRow]:
            history.mark_interrupted()
            return history.runs(limit=200, file=self.file)

        self._read("runs", read, self._show_runs)

    def _show_runs(self, rows: list[RunRow]) -> None:
        table = self.query_one("#runs", DataTable)
        keep = self._wanted
        narrow = self.app.size.width < NARROW  # short ids, icons, minutes: every column fits
        self.set_class(narrow, "-narrow")
        table.clear(columns=True)
        table.add_columns(*(("RUN", "", "STARTED", "TOOK", "TRIGGER") if narrow else
                            ("RUN", "STATUS", "STARTED", "DURATION", "TRIGGER")))  # fmt: skip
        for run in rows:
            icon = ICONS.get(run.status, "!")
            table.add_row(run.run_id.rsplit("-", 1)[-1] if narrow else run.run_id,
                          icon if narrow else f"{icon} {run.status}",
                          format_time(run.started)[5:16 if narrow else None],
                          format_duration(run.duration), run.trigger or "-",
                          key=run.run_id)  # fmt: skip
        if not table.row_count:
            self.query_one("#log", LogView).show(None, self.problem)
            return
        table.move_cursor(row=table.get_row_index(keep) if keep and keep in table.rows else 0)
        self.open_run(str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value))
        table.focus()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "runs" and event.row_key.value is not None:
            self.open_run(str(event.row_key.value))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "runs":
            self.query_one("#stages", Tree).focus()

    def open_run(self, run_id: str) -> None:
        """Read a run's attempts; then show its stage tree and select its first stage."""
        if run_id == self._wanted:
            return
        self._wanted = run_id
        self._read("run", lambda history: (history.attempts(run_id), history.steps(run_id)),
                   lambda rows: self._show_run(run_id, *rows))  # fmt: skip

    def _show_run(self, run_id: str, attempts: list[AttemptRow], steps: list[StepRow]) -> None:
        if run_id != self._wanted:
            return
        self.run_id, self.attempts = run_id, attempts
        self.steps = {}
        for step in steps:
            self.steps.setdefault((step.stage, step.attempt), []).append(step)
        self._step_of = {}
        by_stage: dict[str, list[AttemptRow]] = {}
        for row in self.attempts:
            by_stage.setdefault(row.stage, []).append(row)
        tree: Tree[StageKey] = self.query_one("#stages", Tree)
        tree.clear()
        tree.border_title = f"Stages of {run_id}"
        groups: dict[str, TreeNode[StageKey]] = {}
        first: TreeNode[StageKey] | None = None
        for stage, rows in by_stage.items():
            parent = tree.root
            if _group(stage) != stage:
                if _group(stage) not in groups:
                    groups[_group(stage)] = tree.root.add(Text(_group(stage)), expand=True)
                parent = groups[_group(stage)]
            last = rows[-1]
            retried = len(rows) > 1
            below = retried or bool(self.steps.get((stage, last.attempt)))
            node = parent.add(_label(last, stage), data=(stage, last.attempt),
                              allow_expand=below, expand=below)  # fmt: skip
            if not retried:
                self._add_steps(node, stage, last.attempt)
            for row in rows if retried else ():  # each attempt with its steps, the last open
                steps = bool(self.steps.get((stage, row.attempt)))
                child = node.add(_label(row, f"attempt {row.attempt}"), data=(stage, row.attempt),
                                 allow_expand=steps, expand=steps and row is last)  # fmt: skip
                self._add_steps(child, stage, row.attempt)
            first = first or node
        if first is None:
            self.show_stage(None)
            return
        tree.move_cursor(first)
        self.show_stage(first.data)

    def _add_steps(self, node: TreeNode[StageKey], stage: str, attempt: int) -> None:
        """A job attempt's recorded steps as rows under its node."""
        for step in self.steps.get((stage, attempt), ()):
            leaf = node.add_leaf(_step_label(step), data=(stage, attempt))
            self._step_of[leaf.id] = step

    # -- the selected stage ---------------------------------------------------------------------

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[StageKey]) -> None:
        if event.node.data is not None:
            step = self._step_of.get(event.node.id)
            self.show_stage(event.node.data, None if step is None else step.step)

    def show_stage(self, key: StageKey | None, step: int | None = None) -> None:
        """Show a stage attempt's log (or one step's lines), the stage's duration sparkline and
        its metrics."""
        run_id = self.run_id
        if key is None or run_id is None:
            self.query_one("#log", LogView).show(None, "this run recorded no stages")
            self.query_one("#spark", Sparkline).data = []
            self.query_one("#spark-title", Static).update("")
            self.query_one("#metrics", DataTable).add_class("hidden")
            self._stage = None
            return
        shown = (run_id, key, step)
        if self._stage == shown:
            return
        self._stage = shown
        self._read("stage", lambda history: self._stage_record(history, run_id, key, step),
                   lambda record: self._show_stage(shown, record))  # fmt: skip

    def _stage_record(
        self, history: History, run_id: str, key: StageKey, step: int | None
    ) -> StageRecord:
        """(In a thread.) Whether the attempt has a log, the stage's durations and metrics, and
        where a step's lines are in the log."""
        stage, attempt = key
        metrics = history.metrics(stage, 200, self.file)
        has_log = attempt in self.logs.attempts(run_id, stage)
        return StageRecord(
            has_log=has_log,
            durations=history.durations(stage, SPARK_RUNS, self.file),
            metrics=metrics,
            current=self._metrics_index(history, run_id, [run for run, _ in metrics]),
            span=self._step_span(run_id, key, step) if has_log and step is not None else None,
        )

    def _step_span(self, run_id: str, key: StageKey, step: int) -> StepSpan | None:
        """(In a thread.) Where step `step` has its lines in a job attempt's stored log: its
        step markers, read as the live screen reads them (`StepMarks`)."""
        stage, attempt = key
        marks, reader = StepMarks(), self.logs.reader(run_id, stage, attempt)
        try:
            total = len(reader)
            for start in range(0, total, SCAN_CHUNK):
                texts = tuple(text for _, text in reader.lines(start, start + SCAN_CHUNK))
                marks.add(LogLines(run_id, stage, attempt, "stdout", texts))
        finally:
            reader.close()
        return marks.span((run_id, stage, attempt), step)

    def _show_stage(self, shown: Shown, record: StageRecord) -> None:
        if self._stage != shown:
            return
        run_id, (stage, attempt), step = shown
        steps = self.steps.get((stage, attempt), [])
        job = bool(steps) or (stage in self.pipeline.stages and self.pipeline.stages[stage].steps)
        row = next((s for s in steps if s.step == step), None)
        span = record.span

        def open_log() -> LineReader:  # a GitHub Actions job's step markers as headers
            reader = self.logs.reader(run_id, stage, attempt)
            if row is not None:
                return StepReader(reader, lambda: span)
            return JobReader(reader) if job else reader

        log = self.query_one("#log", LogView)
        source = LogSource(stage, attempt, open_log, run_id, step=step)
        title = f"{stage} · attempt {attempt}" if record.has_log else stage
        placeholder = "no output" if record.has_log else "no log: this attempt did not run"
        if row is not None:
            title += f" · step {row.step + 1} {row.name} · {row.shown_status}"
            why = f": {row.reason}" if row.reason else ""
            placeholder = f"no output{why}" if record.has_log else placeholder
        log.border_title = title
        log.show(source if record.has_log else None, placeholder)
        durations = record.durations
        spark = self.query_one("#spark", Sparkline)
        spark.data = durations
        spark.set_class(len(durations) < 2, "hidden")  # one bar would fill the box: a line says it
        self.query_one("#spark-title", Static).update(
            f"{stage}: duration over its last {len(durations)} runs, "
            f"{format_duration(min(durations))} – {format_duration(max(durations))}"
            if len(durations) > 1
            else f"{stage}: one recorded run, {format_duration(durations[0])}"
            if durations else f"{stage}: no recorded durations"
        )  # fmt: skip
        self._show_metrics(run_id, stage, record)

    def _show_metrics(self, run_id: str, stage: str, record: StageRecord) -> None:
        """The stage's metrics in the open run (a cached stage: those of the run that made its
        outputs) beside the ones recorded before them."""
        table = self.query_one("#metrics", DataTable)
        table.clear()
        index, recorded = record.current, record.metrics
        if index is None:
            table.add_class("hidden")
            return
        (source, now), before = recorded[index], recorded[index - 1][1] if index else {}
        for name in sorted(set(now) | set(before)):
            value, previous = now.get(name), before.get(name)
            change = value - previous if value is not None and previous is not None else None
            table.add_row(name, _number(value), _number(previous), _number(change, sign=True))
        title = f"Metrics of {stage}"
        if source != run_id:
            title += f", recorded by {source}"
        table.border_title = title + (f" (vs {recorded[index - 1][0]})" if index else "")
        table.remove_class("hidden")

    @staticmethod
    def _metrics_index(history: History, run_id: str, runs: list[str]) -> int | None:
        """Which of `runs` (oldest first) holds the metrics current in run `run_id`."""
        if run_id in runs:
            return runs.index(run_id)
        opened = history.run(run_id)
        if opened is None or opened.started is None:
            return None
        for index in range(len(runs) - 1, -1, -1):
            row = history.run(runs[index])
            if row is not None and row.started is not None and row.started <= opened.started:
                return index
        return None

    # -- keys ----------------------------------------------------------------------------------

    def action_toggle_focus(self) -> None:
        """Cycle the focus: runs, stages, log."""
        order = ["#runs", "#stages", "#log"]
        focused = self.focused
        ids = [f"#{focused.id}"] if focused is not None and focused.id else []
        current = order.index(ids[0]) if ids and ids[0] in order else -1
        self.query_one(order[(current + 1) % len(order)]).focus()

    def action_move(self, step: int) -> None:
        """j/k: the cursor of the focused runs table or stage tree (or scroll the log)."""
        focused = self.focused
        if isinstance(focused, (DataTable, Tree)):
            focused.action_cursor_down() if step > 0 else focused.action_cursor_up()
        elif isinstance(focused, LogView):
            focused.action_scroll_down() if step > 0 else focused.action_scroll_up()

    def action_timeline(self) -> None:
        """The timeline of the selected run, as `T` shows a live one."""
        from tui.screens.timeline import TimelineScreen

        if self.run_id is None:
            self.notify("no run selected", severity="warning")
            return
        spans = Spans()
        for row in self.attempts:
            if row.started is not None:
                spans.add(Span(row.stage, row.attempt, row.status, None, row.started, row.ended))
        needs = {sid: stage.needs for sid, stage in self.pipeline.stages.items()}
        title = f"Timeline · {self.run_id}"
        self.app.push_screen(TimelineScreen(title, spans, needs, live=False))

    def action_close(self) -> None:
        """Back to where `h` was pressed."""
        self.dismiss()
