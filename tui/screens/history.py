"""The run history screen (`h`): past runs, and for one run its stages, logs and metrics.

Read-only. Left: the recorded runs (status, start, duration, trigger) above the selected run's
stage tree (matrix instances under their stage, earlier attempts under their stage). Right: the
selected stage's duration over its recent runs as a sparkline, its metrics with their change
since the previous run, and the selected attempt's stored log.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Sparkline, Static, Tree
from textual.widgets.tree import TreeNode

from engine.history import AttemptRow, History, HistoryError
from engine.logs import LogStore
from engine.spec import Pipeline
from tui.history_cli import format_duration, format_time
from tui.widgets.log_view import LogSource, LogView
from tui.widgets.status import ICONS, format_bytes
from tui.widgets.timeline import Span, Spans

SPARK_RUNS = 30
NARROW = 120  # below this many columns the runs table shows short run ids and status icons
StageKey = tuple[str, int]  # (stage id, attempt)


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


def _number(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.6g}" if sign else f"{value:.6g}"


class HistoryScreen(Screen[None]):
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
        notes: list[str] = []  # a damaged database moved aside: said instead of the empty list
        try:
            self.history = History.for_state_dir(pipeline.state_dir, warn=notes.append)
            self.problem = notes[0] if notes else "no runs recorded yet"
        except HistoryError as err:  # shown instead of the runs; an empty history stands in
            self.problem, self.history = str(err), History(":memory:")
        self.logs = LogStore(pipeline.state_dir / "logs", pipeline.secrets.values())
        self.run_id: str | None = None
        self.attempts: list[AttemptRow] = []

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
        yield Footer()

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

    # -- runs ----------------------------------------------------------------------------------

    def action_reload(self) -> None:
        """Read the runs again (the one shown stays selected)."""
        self.history.mark_interrupted()
        table = self.query_one("#runs", DataTable)
        keep = self.run_id
        narrow = self.app.size.width < NARROW  # short ids, icons, minutes: every column fits
        self.set_class(narrow, "-narrow")
        table.clear(columns=True)
        table.add_columns(*(("RUN", "", "STARTED", "TOOK", "TRIGGER") if narrow else
                            ("RUN", "STATUS", "STARTED", "DURATION", "TRIGGER")))  # fmt: skip
        for run in self.history.runs(limit=200):
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
        """Show a run's stage tree and select its first stage."""
        if run_id == self.run_id and self.attempts:
            return
        self.run_id = run_id
        self.attempts = self.history.attempts(run_id)
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
            node = parent.add(_label(last, stage), data=(stage, last.attempt),
                              allow_expand=retried, expand=retried)  # fmt: skip
            for row in rows if retried else ():
                node.add_leaf(_label(row, f"attempt {row.attempt}"), data=(stage, row.attempt))
            first = first or node
        if first is None:
            self.show_stage(None)
            return
        tree.move_cursor(first)
        self.show_stage(first.data)

    # -- the selected stage ---------------------------------------------------------------------

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[StageKey]) -> None:
        if event.node.data is not None:
            self.show_stage(event.node.data)

    def show_stage(self, key: StageKey | None) -> None:
        """Show a stage attempt's log, the stage's duration sparkline and its metrics."""
        log = self.query_one("#log", LogView)
        spark = self.query_one("#spark", Sparkline)
        title = self.query_one("#spark-title", Static)
        if key is None or self.run_id is None:
            log.show(None, "this run recorded no stages")
            spark.data = []
            title.update("")
            self._show_metrics(None)
            return
        stage, attempt = key
        run_id = self.run_id
        source = LogSource(stage, attempt, lambda: self.logs.reader(run_id, stage, attempt))
        has_log = attempt in self.logs.attempts(run_id, stage)
        log.border_title = f"{stage} · attempt {attempt}" if has_log else stage
        log.show(source if has_log else None, "no log: this attempt did not run")
        durations = self.history.durations(stage, SPARK_RUNS)
        spark.data = durations
        spark.set_class(len(durations) < 2, "hidden")  # one bar would fill the box: a line says it
        title.update(
            f"{stage}: duration over its last {len(durations)} runs, "
            f"{format_duration(min(durations))} – {format_duration(max(durations))}"
            if len(durations) > 1
            else f"{stage}: one recorded run, {format_duration(durations[0])}"
            if durations else f"{stage}: no recorded durations"
        )  # fmt: skip
        self._show_metrics(stage)

    def _show_metrics(self, stage: str | None) -> None:
        """The stage's metrics in the open run (a cached stage: those of the run that made its
        outputs) beside the ones recorded before them."""
        table = self.query_one("#metrics", DataTable)
        table.clear()
        recorded = self.history.metrics(stage, 200) if stage and self.run_id else []
        index = self._metrics_index([run_id for run_id, _ in recorded])
        if stage is None or index is None:
            table.add_class("hidden")
            return
        (source, now), before = recorded[index], recorded[index - 1][1] if index else {}
        for name in sorted(set(now) | set(before)):
            value, previous = now.get(name), before.get(name)
            change = value - previous if value is not None and previous is not None else None
            table.add_row(name, _number(value), _number(previous), _number(change, sign=True))
        title = f"Metrics of {stage}"
        if source != self.run_id:
            title += f", recorded by {source}"
        table.border_title = title + (f" (vs {recorded[index - 1][0]})" if index else "")
        table.remove_class("hidden")

    def _metrics_index(self, runs: list[str]) -> int | None:
        """Which of `runs` (oldest first) holds the metrics current in the open run."""
        if self.run_id in runs:
            return runs.index(self.run_id)
        opened = self.history.run(self.run_id) if self.run_id else None
        if opened is None or opened.started is None:
            return None
        for index in range(len(runs) - 1, -1, -1):
            row = self.history.run(runs[index])
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
        self.history.close()
        self.dismiss()
