"""The DAG view (`D`): stages as boxes in their status colour, needs as lines, left to right.

`layout` is a small Sugiyama-style layering (grandalf, the usual library, has had no release
since January 2023): each stage's layer is one past its deepest need, an edge that skips layers
passes through a *dummy* slot in each layer between, and each layer is ordered by the mean
position of its needs (a few sweeps down and up) to keep lines short and crossings few.
`Dag` draws the result with the Line API; the arrow keys move between boxes, enter opens one.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.events import Click
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine.events import STATUSES
from tui.widgets.merged import short_id
from tui.widgets.status import ICONS, STATUS_COLOURS, StageView

BOX_HEIGHT = 3
ROW = BOX_HEIGHT + 1  # a box and the blank line under it
GAP = 6  # columns between layers, where the lines turn
MAX_LABEL = 22
SWEEPS = 4

# line directions of a cell, combined where lines meet
UP, DOWN, LEFT, RIGHT = 1, 2, 4, 8
LINES = {
    UP | DOWN: "│", LEFT | RIGHT: "─", DOWN | RIGHT: "╭", DOWN | LEFT: "╮", UP | RIGHT: "╰",
    UP | LEFT: "╯", UP | DOWN | RIGHT: "├", UP | DOWN | LEFT: "┤", LEFT | RIGHT | DOWN: "┬",
    LEFT | RIGHT | UP: "┴", UP | DOWN | LEFT | RIGHT: "┼", UP: "│", DOWN: "│", LEFT: "─",
    RIGHT: "─",
}  # fmt: skip


@dataclass
class Layout:
    """Where each stage's box is: its layer (column), its slot in the layer (row) and region."""

    layers: list[list[str]]  # stage ids and dummy names (`~need~stage~layer`), in drawing order
    above: dict[str, list[str]]  # node -> the nodes one layer before that link into it
    boxes: dict[str, Region] = field(default_factory=dict)  # node -> its box
    size: Size = field(default_factory=Size)


def layout(needs: Mapping[str, Sequence[str]]) -> Layout:
    """Layers, order and box regions for the stages in `needs` (ids in topological order)."""
    depth: dict[str, int] = {}
    for sid in needs:  # topological order: needs come first
        depth[sid] = 1 + max((depth[n] for n in needs[sid] if n in depth), default=-1)
    layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    above: dict[str, list[str]] = {sid: [] for sid in needs}  # node -> nodes one layer before
    for sid in needs:
        layers[depth[sid]].append(sid)
    for sid in needs:
        for need in needs[sid]:
            if need not in depth:
                continue
            previous = need
            for layer in range(depth[need] + 1, depth[sid]):  # a dummy per skipped layer
                dummy = f"~{need}~{sid}~{layer}"
                layers[layer].append(dummy)
                above[dummy] = [previous]
                previous = dummy
            above[sid].append(previous)
    below: dict[str, list[str]] = {node: [] for layer in layers for node in layer}
    for node, ups in above.items():
        for up in ups:
            below[up].append(node)
    for sweep in range(SWEEPS):
        order = range(1, len(layers)) if sweep % 2 == 0 else range(len(layers) - 2, -1, -1)
        for index in order:
            ref = layers[index - 1] if sweep % 2 == 0 else layers[index + 1]
            link = above if sweep % 2 == 0 else below
            pos = {node: i for i, node in enumerate(ref)}
            current = {node: i for i, node in enumerate(layers[index])}

            def mean(
                node: str,
                pos: dict[str, int] = pos,
                link: dict[str, list[str]] = link,
                current: dict[str, int] = current,
            ) -> float:
                linked = [pos[n] for n in link.get(node, ()) if n in pos]
                return sum(linked) / len(linked) if linked else current[node]

            layers[index].sort(key=mean)
    result = Layout(layers, above)
    x = 0
    for layer in layers:
        width = max((min(len(short_id(s)), MAX_LABEL) + 6 for s in layer if s[0] != "~"),
                    default=4)  # fmt: skip
        for row, node in enumerate(layer):
            result.boxes[node] = Region(x, row * ROW, width, BOX_HEIGHT)
        x += width + GAP
    height = max((len(layer) for layer in layers), default=0) * ROW
    result.size = Size(max(0, x - GAP), height)
    return result


class Dag(ScrollView, can_focus=True):
    """Draws a `Layout` with each box in its stage's status colour; one box is selected."""

    DEFAULT_CSS = """
    Dag { background: $surface; }
    Dag > .dag--edge { color: $foreground-muted; }
    Dag > .dag--selected { text-style: reverse bold; }
    """ + "\n".join(f"Dag > .dag--{s} {{ color: ${v}; }}" for s, v in STATUS_COLOURS.items())
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "dag--edge",
        "dag--selected",
        *(f"dag--{s}" for s in STATUSES),
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "move(0,-1)", "Up", show=False),
        Binding("down,j", "move(0,1)", "Down", show=False),
        Binding("left,h", "move(-1,0)", "Left", show=False),
        Binding("right,l", "move(1,0)", "Right", show=False),
        Binding("enter", "open", "Open log"),
    ]

    class Opened(Message):
        """A box was chosen (enter or click): show its stage's log."""

        def __init__(self, stage_id: str) -> None:
            super().__init__()
            self.stage_id = stage_id

    def __init__(
        self,
        needs: Mapping[str, Sequence[str]],
        views: Mapping[str, StageView],
        selected: str | None = None,
        **kw: str,
    ) -> None:
        super().__init__(**kw)
        self.needs = needs
        self.views = views
        self.plan = layout(needs)
        self.selected = selected if selected in self.plan.boxes else next(iter(needs), None)
        edges: dict[int, dict[int, int]] = {}  # row -> column -> line directions
        for (x, y), bits in self._draw_edges().items():
            edges.setdefault(y, {})[x] = bits
        self._edges = {y: sorted(cells.items()) for y, cells in edges.items()}
        self._boxes: dict[int, list[str]] = {}  # row -> the stage boxes it crosses
        for sid, box in self.plan.boxes.items():
            for y in range(box.y, box.bottom) if sid[0] != "~" else ():
                self._boxes.setdefault(y, []).append(sid)
        self._strips: LRUCache[tuple[int, int, int], Strip] = LRUCache(1024)
        self._key = self._statuses()  # the statuses drawn
        self.virtual_size = self.plan.size

    def _draw_edges(self) -> dict[tuple[int, int], int]:
        """Line directions per cell: out of each box's right side, turning in the gap."""
        cells: dict[tuple[int, int], int] = {}

        def mark(x: int, y: int, bits: int) -> None:
            cells[(x, y)] = cells.get((x, y), 0) | bits

        boxes = self.plan.boxes
        for node, region in boxes.items():
            for up in self.plan.above.get(node, ()):
                src = boxes[up]
                sy, ty = src.y + 1, region.y + 1
                x0, x1 = src.right, region.x - 1  # from after the source box to the arrow
                turn = x1 - GAP // 2
                for x in range(x0, turn):
                    mark(x, sy, LEFT | RIGHT)
                if sy == ty:
                    mark(turn, sy, LEFT | RIGHT)
                else:
                    mark(turn, sy, LEFT | (DOWN if ty > sy else UP))
                    for y in range(min(sy, ty) + 1, max(sy, ty)):
                        mark(turn, y, UP | DOWN)
                    mark(turn, ty, RIGHT | (UP if ty > sy else DOWN))
                for x in range(turn + 1, x1):
                    mark(x, ty, LEFT | RIGHT)
                if node[0] == "~":  # a dummy: the line runs on through its layer's column
                    for x in range(x1, region.right):
                        mark(x, ty, LEFT | RIGHT)
        return cells

    def _style(self, component: str) -> Style:
        return self.rich_style + self.get_component_rich_style(component)

    def _statuses(self) -> tuple[str, ...]:
        return tuple(self.views[s].status for s in self.needs if s in self.views)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()  # the theme changed

    def _row(self, y: int, x0: int, x1: int) -> Strip:
        """Columns x0..x1-1 of row `y` of the drawing: only what is on screen is drawn, so a
        thousand stages cost what a screenful does."""
        key = (y, x0, x1)
        strip = self._strips.get(key)
        if strip is not None:
            return strip
        cells: list[tuple[str, str]] = [(" ", "")] * (x1 - x0)
        edges = self._edges.get(y, [])
        for x, bits in edges[bisect_left(edges, (x0, 0)) :]:
            if x >= x1:
                break
            cells[x - x0] = (LINES[bits], "dag--edge")
        for sid in self._boxes.get(y, ()):
            box = self.plan.boxes[sid]
            if box.right <= x0 - 1 or box.x - 1 >= x1:
                continue
            status = self.views[sid].status if sid in self.views else "pending"
            style = f"dag--{status}"
            inner = box.width - 2
            dy = y - box.y
            if dy == 1:
                label = short_id(sid)
                label = label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"
                row = "│" + f" {ICONS[status]} {label}".ljust(inner) + "│"
                if self.needs.get(sid) and x0 <= box.x - 1 < x1:
                    cells[box.x - 1 - x0] = ("▶", "dag--edge")
            else:
                row = ("╭" + "─" * inner + "╮") if dy == 0 else ("╰" + "─" * inner + "╯")
            chosen = sid == self.selected and dy == 1
            for dx, char in enumerate(row):
                if x0 <= box.x + dx < x1:
                    inside = chosen and 0 < dx < box.width - 1
                    cells[box.x + dx - x0] = (char, f"{style} selected" if inside else style)
        strip = self._strips[key] = self._strip(cells)
        return strip

    def _strip(self, row: list[tuple[str, str]]) -> Strip:
        segments: list[Segment] = []
        run, current = "", ""
        for char, component in [*row, ("", "\0")]:
            if component != current and run:
                segments.append(Segment(run, self._component(current)))
                run = ""
            current = component
            run += char
        return Strip(segments, len(row))

    def _component(self, name: str) -> Style:
        if not name:
            return self.rich_style
        if name.endswith(" selected"):
            return self._style(name.split()[0]) + self._style("dag--selected")
        return self._style(name)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        index = self.scroll_offset.y + y
        if index >= self.plan.size.height:
            return Strip.blank(width, self.rich_style)
        x = self.scroll_offset.x
        return self._row(index, x, x + width)

    def refresh_statuses(self) -> None:
        """Redraw when a status changed (cheap otherwise)."""
        statuses = self._statuses()
        if statuses != self._key:
            self._key = statuses
            self._strips.clear()
            self.refresh()

    # -- selection -----------------------------------------------------------------------------

    def _layer_of(self, sid: str) -> int:
        return next(i for i, nodes in enumerate(self.plan.layers) if sid in nodes)

    def action_move(self, dx: int, dy: int) -> None:
        """Select the next box in a direction (the nearest row in the next layer)."""
        if self.selected is None:
            return
        layer = self._layer_of(self.selected)
        layers = self.plan.layers
        if dy:
            stages = [s for s in layers[layer] if s[0] != "~"]
            at = stages.index(self.selected) + dy
            if 0 <= at < len(stages):
                self.select(stages[at])
            return
        target = layer + dx
        while 0 <= target < len(layers):
            stages = [s for s in layers[target] if s[0] != "~"]
            if stages:
                y = self.plan.boxes[self.selected].y
                self.select(min(stages, key=lambda s: abs(self.plan.boxes[s].y - y)))
                return
            target += dx

    def select(self, sid: str) -> None:
        """Select a box and scroll it into view."""
        self.selected = sid
        self._strips.clear()
        self.scroll_to_region(self.plan.boxes[sid], animate=False, immediate=True)
        self.refresh()

    def action_open(self) -> None:
        """Open the selected box's log."""
        if self.selected is not None:
            self.post_message(self.Opened(self.selected))

    def on_click(self, event: Click) -> None:
        x, y = event.x + int(self.scroll_x), event.y + int(self.scroll_y)
        for sid, box in self.plan.boxes.items():
            if sid[0] != "~" and box.contains(x, y):
                self.select(sid)
                self.post_message(self.Opened(sid))
                return
