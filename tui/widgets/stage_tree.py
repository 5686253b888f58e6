"""The stage tree: stages in topological order, matrix instances under their stage, a GitHub
Actions job's steps under the job (SPEC §11).

Every row's duration ends in one right-aligned column: names are padded to where the longest
ends (a stage's, or a step's as far as the tree's width lets it move the column). A job has no
expand arrow until its first step row, but keeps the arrow's cells so that its name stays put.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from engine.events import (
    FAILED,
    FINISHED,
    PENDING,
    READY,
    RUNNING,
    STATUSES,
    WAITING,
    StepStatus,
)
from engine.resources import Usage
from engine.spec import LOCAL, Pipeline
from tui.widgets.pump import Yielding
from tui.widgets.status import (
    ALLOWED,
    ICONS,
    LIVE,
    SERVICE_STARTING,
    STATUS_COLOURS,
    StageView,
    format_attempt,
    format_bytes,
    format_duration,
    shown_status,
    summary_status,
)

RELABEL_CHUNK = 200  # labels `refresh_all` redraws per frame
ICON_CELLS = 2  # a status icon and its space
DURATION_CELLS = 7  # a space and a right-aligned duration (`{:>6}`)
STEP_RESERVE = 12  # cells a long step name leaves a job row after its duration
_STATUS_CSS = "\n".join(
    f"StageTree > .stage-tree--{status} {{ color: ${var}; }}"
    for status, var in STATUS_COLOURS.items()
)


class StageTree(Yielding, Tree[str]):
    """A `Tree` whose nodes carry a stage instance id (or a matrix stage name).

    Labels are rebuilt one node at a time with `set_label`; the tree is never recomposed.
    """

    DEFAULT_CSS = (
        """
    StageTree { padding: 0; overflow-x: hidden; }
    StageTree > .stage-tree--dim { color: $foreground-muted; }
    StageTree > .stage-tree--hint { color: $warning; text-style: italic; }
    StageTree > .stage-tree--allowed { color: $warning; text-style: italic; }
    """
        + _STATUS_CSS
    )
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "stage-tree--dim",
        "stage-tree--hint",
        "stage-tree--allowed",
        *(f"stage-tree--{s}" for s in STATUSES),
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("enter", "screen.toggle_focus", "Log", show=False),
    ]

    def __init__(self, pipeline: Pipeline, views: dict[str, StageView], **kwargs: object) -> None:
        super().__init__(pipeline.name, **kwargs)  # type: ignore[arg-type]
        self.show_root = False
        self.guide_depth = 2
        self.pipeline = pipeline
        self.views = views
        self._stage_nodes: dict[str, TreeNode[str]] = {}
        self._parent_of: dict[str, str] = {}
        self._stage_column = 0  # where the longest stage name ends (cells from the left)
        self._step_column = 0  # where the longest step name ends
        self._steps: dict[str, dict[int, tuple[TreeNode[str], StepStatus]]] = {}  # job -> steps
        self._step_of: dict[int, int] = {}  # node id of a step row -> its step index
        self._clock_now = 0.0
        self.estimates: dict[str, float] = {}  # stage id -> its usual duration (history median)
        self.usage: Mapping[str, Usage] | None = None  # CPU and memory columns (`u`): on when set
        self._stale: dict[str, None] = {}  # keys whose labels `refresh_all` has still to redraw
        self._add_nodes()

    def _add_nodes(self) -> None:
        """Add one node per stage (and per matrix instance), in topological order."""
        seen: set[str] = set()
        for stage in self.pipeline.stages.values():
            if stage.name in seen:
                continue
            seen.add(stage.name)
            ids = self.pipeline.groups.get(stage.name, (stage.id,))
            if len(ids) == 1 and ids[0] == stage.name:
                self._stage_nodes[stage.id] = self._add_stage(self.root, stage.id)
                continue
            parent = self.root.add("", data=stage.name, expand=True)
            self._stage_nodes[stage.name] = parent
            for sid in ids:
                self._stage_nodes[sid] = self._add_stage(parent, sid)
                self._parent_of[sid] = stage.name
        # One duration column for every line: the name is padded to where the longest ends.
        self._stage_column = max(
            (self._label_indent(key) + len(self._display_name(key)) for key in self._stage_nodes),
            default=0,
        )

    def _column(self) -> int:
        """Where names end and the duration column starts (cells from the tree's left): after
        the longest stage name, or the longest step name as far as that leaves room for the
        duration and (a quarter of the width, at most `STEP_RESERVE`) for what a job row says
        after it (`@host`, `waits for lint`); a longer step name is shortened."""
        width = self.scrollable_content_region.width
        steps = self._step_column
        if width > 0:
            reserve = min(STEP_RESERVE, width // 4)
            steps = min(steps, width - ICON_CELLS - DURATION_CELLS - reserve)
        return max(self._stage_column, steps)

    def _name_width(self, key: str) -> int:
        """The cells a node's name is padded to (its duration column)."""
        return self._column() - self._label_indent(key)

    def _add_stage(self, parent: TreeNode[str], sid: str) -> TreeNode[str]:
        """A stage instance's node: a GitHub Actions job's holds its steps (SPEC §11); it can
        be expanded once it has some (`update_step`)."""
        if self.pipeline.stages[sid].steps:
            return parent.add("", data=sid, expand=True, allow_expand=False)
        return parent.add_leaf("", data=sid)

    def render_label(self, node: TreeNode[str], base_style: Style, style: Style) -> Text:
        """A job without steps yet: blank where its expand arrow will be (its name stays put)."""
        label = super().render_label(node, base_style, style)
        if node.allow_expand or node.data not in self.pipeline.stages or node.id in self._step_of:
            return label
        if not self.pipeline.stages[node.data].steps:
            return label
        return Text.assemble(("  ", base_style), label)

    def _label_indent(self, key: str) -> int:
        """Cells before a node's label: the guides of an instance, the toggle of a matrix or
        of a job with steps."""
        stage = self.pipeline.stages.get(key)
        if stage is None:
            return 2
        return (2 if key in self._parent_of else 0) + (2 if stage.steps else 0)

    def _display_name(self, key: str) -> str:
        """The name a node shows: an instance's matrix values under its stage, else the id."""
        parent = self._parent_of.get(key)
        return self._short_name(key, parent) if parent else key

    @staticmethod
    def _short_name(stage_id: str, name: str) -> str:
        """A matrix instance's label under its stage: `python=3.11` for `test[python=3.11]`."""
        return stage_id[len(name) :].strip("[]")

    @property
    def selected_ids(self) -> list[str]:
        """Instance ids under the cursor: one stage, or every instance of a matrix stage."""
        node = self.cursor_node
        if node is None or node.data is None:
            return []
        key = node.data
        return [key] if key in self.pipeline.stages else list(self.pipeline.groups.get(key, ()))

    @property
    def selected_step(self) -> int | None:
        """The step index under the cursor when it is on a step row."""
        node = self.cursor_node
        return None if node is None else self._step_of.get(node.id)

    def step_node(self, stage_id: str, step: int) -> TreeNode[str]:
        """The row of step `step` (0-based) of job `stage_id`."""
        return self._steps[stage_id][step][0]

    def step_status(self, stage_id: str, step: int) -> StepStatus | None:
        """The latest `step_status` of step `step` of job `stage_id` (None before any)."""
        entry = self._steps.get(stage_id, {}).get(step)
        return entry[1] if entry else None

    def update_step(self, event: StepStatus) -> None:
        """Add or relabel the row of a step; a new attempt of the job starts its rows over."""
        job = self._stage_nodes.get(event.stage)
        if job is None:
            return
        steps = self._steps.setdefault(event.stage, {})
        if steps and next(iter(steps.values()))[1].attempt != event.attempt:
            for node, _ in steps.values():
                self._step_of.pop(node.id, None)
            steps.clear()
            job.remove_children()
        entry = steps.get(event.step)
        node = entry[0] if entry else job.add_leaf("", data=event.stage)
        job.allow_expand = True  # it has a step row to show or hide now
        self._step_of[node.id] = event.step
        steps[event.step] = (node, event)
        column = self._column()
        self._step_column = max(
            self._step_column, self._label_indent(event.stage) + len(event.name)
        )
        if self._column() != column:  # a longer step name moves the duration column
            self.refresh_all(self._clock_now)
        else:
            self._relabel_step(node, event)

    def _relabel_step(self, node: TreeNode[str], event: StepStatus) -> None:
        """Icon, name and duration of a step row (a running step's ticks from its start), the
        duration in the column of the stages' (a step row is indented as its job's label); a
        failure `continue-on-error` allows looks as a stage's `allow_failure` does."""
        status = event.status if event.status in STATUSES else FAILED
        icon = shown_status(status, bool(event.allowed))
        took = event.duration
        if took is None and status == RUNNING and self._clock_now:
            took = max(0.0, self._clock_now - event.ts)
        dur = format_duration(took)
        key = node.data or ""
        room = self.scrollable_content_region.width - self._label_indent(key)
        name, width = event.name, self._name_width(key)
        if room > 0:  # a tree too narrow for the column: the duration ends at its edge
            width = min(width, room - ICON_CELLS - DURATION_CELLS)
        fits = width if dur else room - ICON_CELLS
        if (dur or room > 0) and len(name) > fits:
            name = name[: max(1, fits - 1)] + "…"
        label = Text.assemble(
            (ICONS.get(icon, ICONS[FAILED]) + " ", self._style(f"stage-tree--{icon}")), name
        )
        if dur:
            label.append(" " * (width - len(name)))
            label.append(f" {dur:>6}", self._style("stage-tree--dim"))
        if node.label != label:
            node.set_label(label)

    def node_for(self, key: str) -> TreeNode[str]:
        """The node of a stage instance id or a matrix stage name."""
        return self._stage_nodes[key]

    def select_stage(self, key: str) -> None:
        """Move the cursor to a stage instance (or matrix stage) node."""
        self.move_cursor(self._stage_nodes[key])

    def refresh_stage(self, stage_id: str) -> None:
        """Redraw the label of one instance and of its matrix parent."""
        self._relabel(stage_id)
        parent = self._parent_of.get(stage_id)
        if parent is not None:
            self._relabel(parent)

    def refresh_all(self, now: float) -> None:
        """Redraw every label (theme change, resize, first draw): those on screen at once, the
        others `RELABEL_CHUNK` per frame (a thousand stages take several frames, none long)."""
        self._clock_now = now
        top = self.scroll_offset.y
        shown = [line.node.data for line in self._tree_lines[top : top + self.size.height]]
        self._stale = dict.fromkeys(
            [key for key in shown if key in self._stage_nodes] + list(self._stage_nodes)
        )
        self._relabel_stale()
        for steps in self._steps.values():
            for node, event in steps.values():
                self._relabel_step(node, event)

    def _relabel_stale(self) -> None:
        for key in list(itertools.islice(self._stale, RELABEL_CHUNK)):
            del self._stale[key]
            self._relabel(key)
        if self._stale:
            self.call_after_refresh(self._relabel_stale)

    def tick(self, now: float) -> None:
        """Advance the ticking durations of running stages."""
        self._clock_now = now
        for sid, view in self.views.items():
            if view.status in LIVE:
                self.refresh_stage(sid)
        for job, steps in self._steps.items():
            for node, event in steps.values():
                if event.status == RUNNING and self.views[job].status in LIVE:
                    self._relabel_step(node, event)

    def _relabel(self, key: str) -> None:
        node = self._stage_nodes[key]
        label = self._label_for(key)
        if node.label != label:
            node.set_label(label)

    def _label_for(self, key: str) -> Text:
        stage = self.pipeline.stages.get(key)
        if stage is None:  # a matrix stage: the most urgent status of its instances
            ids = self.pipeline.groups[key]
            status = summary_status([self.views[i].status for i in ids])
            return self._assemble(key, status, [(f"{'×' + str(len(ids)):>6}", "column")])
        view = self.views[key]
        status = shown_status(view.status, stage.allow_failure)
        elapsed = view.elapsed(self._clock_now)
        dur = format_duration(elapsed)
        estimate = self.estimates.get(key)
        if view.status == RUNNING and estimate:
            dur += f" of ~{format_duration(estimate)}"
        host = view.host if view.host != LOCAL else stage.host
        parts = [
            (f"{dur:>6}" if dur else "", "column"),
            (format_attempt(view.attempt, stage.retries), f"stage-tree--{status}"),
        ]
        usage = self.usage.get(key) if self.usage is not None else None
        if usage is not None and view.status == RUNNING:
            parts.append((f"{usage.cpu_percent:3.0f}% {format_bytes(usage.rss)}", "usage"))
        if view.status == PENDING:
            waiting = [n for n in stage.needs if self.views[n].status not in FINISHED]
            names = dict.fromkeys(self.pipeline.stages[n].name for n in waiting)
            parts.append((f"waits for {', '.join(names)}" if names else "", "dim"))
        if view.job_id is not None:  # a Slurm job is where it runs: `#1234`, `@node1` (log title
            # has the host too); in an 80-column tree the node is the first to go
            parts += [(f"#{view.job_id}", "dim"), (f"@{view.node}" if view.node else "", "dim")]
        else:
            parts.append((f"@{host}" if host != LOCAL else "", "dim"))
        if stage.service:  # SPEC §10: its own icon while it starts, and its ready state
            parts.append(({RUNNING: "starting", READY: "ready"}.get(view.status, "service"), "dim"))
        if status == ALLOWED:
            parts.append(("allowed to fail", "stage-tree--allowed"))
        return self._assemble(key, status, parts)

    def _assemble(self, key: str, status: str, parts: list[tuple[str, str]]) -> Text:
        """Icon and name, padded to the duration column when details follow, then `parts`
        (text, component: `column` for the aligned duration, `dim`, or a status colour).

        The duration and the attempt (the first two parts) always show: in a narrow tree the
        name is shortened for them. The other parts are dropped from the end when they don't
        fit."""
        colour = self._style(f"stage-tree--{status}")
        name = self._display_name(key)
        essential = sum(len(part) + 1 for part, _ in parts[:2] if part)
        must = len([part for part, _ in parts[:2] if part])
        parts = [(part, style) for part, style in parts if part]
        if status == WAITING:
            parts.append(("press a", "stage-tree--hint"))
        room = self.scrollable_content_region.width - self._label_indent(key)
        if room > 0 and 2 + len(name) + essential > room:
            name = name[: max(1, room - 2 - essential - 1)] + "…"
        stage = self.pipeline.stages.get(key)
        starting = stage is not None and stage.service and status == RUNNING
        icon = SERVICE_STARTING if starting else ICONS.get(status, ICONS[FAILED])
        text = Text.assemble((icon + " ", colour), name)
        if parts and parts[0][1] == "column":
            pad = self._name_width(key) - len(name)
            if room > 0:
                pad = min(pad, room - 2 - len(name) - essential)
            text.append(" " * max(0, pad))
        for index, (part, component) in enumerate(parts):
            if index >= must and room > 0 and text.cell_len + 1 + len(part) > room:
                break
            dim = component in ("dim", "column", "usage")
            text.append(f" {part}", self._style("stage-tree--dim" if dim else component))
        return text

    def on_resize(self) -> None:
        self.refresh_all(self._clock_now)

    def watch_show_vertical_scrollbar(self) -> None:
        """The scrollbar (rows were added or expanded) takes cells from the labels: fit them."""
        self.refresh_all(self._clock_now)

    def _style(self, component: str) -> Style:
        return self.get_component_rich_style(component, partial=True)
