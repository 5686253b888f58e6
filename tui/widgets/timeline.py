"""The timeline (`T`): one bar per stage attempt on a shared time axis.

`Spans` collects each attempt's queued, start and end times from a run's events (or from a past
run's history rows); `critical_path` finds the chain of stages that decided the run's length;
`Timeline` draws them with the Line API, so only the rows on screen are rendered, whatever the
number of stages.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine.events import FINISHED, QUEUED, RUNNING, STATUSES, StageStatus
from tui.widgets.status import ICONS, STATUS_COLOURS, format_duration

QUEUED_CELL = "░"
RUN_CELL = "█"
CRITICAL = "◆"


@dataclass
class Span:
    """One attempt of one stage: when it was queued, ran and ended (None: not yet)."""

    stage: str
    attempt: int
    status: str
    queued: float | None = None
    started: float | None = None
    ended: float | None = None

    @property
    def first(self) -> float | None:
        """When the attempt first shows on the axis."""
        return self.queued if self.queued is not None else self.started

    def end(self, now: float) -> float | None:
        """Its end, or `now` while it is queued or running."""
        if self.ended is not None:
            return self.ended
        return now if self.first is not None else None


class Spans:
    """Every attempt's times, in the order the attempts began."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str, int], Span] = {}  # (run id, stage, attempt) -> span
        self.version = 0  # bumps on every change, so views redraw only when needed

    def apply(self, event: StageStatus) -> None:
        """Record a `stage_status` event."""
        if event.attempt <= 0:
            return
        key = (event.run_id, event.stage, event.attempt)
        span = self.items.get(key)
        if span is None:
            span = self.items[key] = Span(event.stage, event.attempt, event.status)
        span.status = event.status
        if event.status == QUEUED and span.queued is None:
            span.queued = event.ts
        elif event.status == RUNNING and span.started is None:
            span.started = event.ts
        elif event.status in FINISHED and span.ended is None and span.first is not None:
            span.ended = event.ts
            if span.started is None and event.duration is not None:
                span.started = event.ts - event.duration
        self.version += 1

    def add(self, span: Span) -> None:
        """Add a span known in full (a past run's attempt)."""
        self.items[("", span.stage, span.attempt)] = span
        self.version += 1

    def shown(self) -> list[Span]:
        """The attempts that reached the axis, by the time they began."""
        spans = [s for s in self.items.values() if s.first is not None]
        spans.sort(key=lambda s: (s.first, s.stage, s.attempt))
        return spans


def critical_path(
    spans: Iterable[Span], needs: Mapping[str, Iterable[str]], now: float
) -> list[str]:
    """The stages (first to last) whose chain of needs ended last: the run's critical path.

    From the attempt that ended last, step back to the need that ended last before it began,
    until a stage that waited for nothing.
    """
    last: dict[str, Span] = {}
    for span in spans:
        if span.first is not None:
            last[span.stage] = span  # a later attempt replaces an earlier one
    if not last:
        return []
    stage = max(last, key=lambda s: _known(last[s].end(now), 0.0))
    path, on_path = [stage], {stage}
    while True:
        before = [n for n in needs.get(stage, ()) if n in last and n not in on_path]
        if not before:
            break
        stage = max(before, key=lambda s: _known(last[s].end(now), 0.0))
        path.append(stage)
        on_path.add(stage)
    return path[::-1]


def _known(value: float | None, default: float) -> float:
    return default if value is None else value


def _tick_step(seconds: float, cells: int) -> float:
    """A round tick interval giving a label every 12 cells or more."""
    want = seconds * 12 / max(cells, 1)
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200):
        if step >= want:
            return float(step)
    return 3600.0 * math.ceil(want / 3600)


class Timeline(ScrollView, can_focus=True):
    """Rows of attempt bars under a sticky time axis; `refresh_spans()` after a change."""

    DEFAULT_CSS = """
    Timeline { background: $surface; scrollbar-size-vertical: 1; }
    Timeline > .timeline--axis { color: $text-muted; }
    Timeline > .timeline--queued { color: $foreground-muted; }
    Timeline > .timeline--critical { color: $accent; text-style: bold; }
    """ + "\n".join(
        f"Timeline > .timeline--{status} {{ color: ${var}; }}"
        for status, var in STATUS_COLOURS.items()
    )
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "timeline--axis",
        "timeline--queued",
        "timeline--critical",
        *(f"timeline--{s}" for s in STATUSES),
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "scroll_down", "Down", show=False),
        Binding("k", "scroll_up", "Up", show=False),
    ]

    def __init__(
        self, spans: Spans, needs: Mapping[str, Iterable[str]], now: float, **kw: str
    ) -> None:
        super().__init__(**kw)
        self.spans = spans
        self.needs = needs
        self.now = now
        self.rows: list[Span] = []
        self.critical: list[str] = []
        self._seen = -1
        self._critical_rows: set[int] = set()  # ids of the spans on the critical path
        self._window = (now, now + 1)
        self._longest = 5
        self._styles: dict[str, Style] = {}
        self.refresh_spans(now)

    def refresh_spans(self, now: float) -> None:
        """Take in new spans (and, while some still run, the advancing clock)."""
        live = any(s.ended is None for s in self.rows)
        if self.spans.version == self._seen and not live:
            return
        self._seen = self.spans.version
        self.now = now
        self.rows = self.spans.shown()
        self.critical = critical_path(self.rows, self.needs, now)
        last = {span.stage: span for span in self.rows}
        self._critical_rows = {id(last[stage]) for stage in self.critical}
        self._window = self._span_window()
        self._longest = max((len(self._span_label(s)) for s in self.rows), default=5)
        self.virtual_size = Size(self.size.width, len(self.rows) + 1)
        self.refresh()

    def _span_window(self) -> tuple[float, float]:
        """The axis's first and last second."""
        if not self.rows:
            return (self.now, self.now + 1)
        start = min(_known(s.first, self.now) for s in self.rows)
        end = max(_known(s.end(self.now), start) for s in self.rows)
        return start, max(end, start + 1)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()

    def _style(self, component: str) -> Style:
        style = self._styles.get(component)
        if style is None:
            style = self._styles[component] = self.rich_style + self.get_component_rich_style(
                component
            )
        return style

    @staticmethod
    def _span_label(span: Span) -> str:
        return span.stage if span.attempt <= 1 else f"{span.stage} #{span.attempt}"

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        label = min(self._longest + 4, max(12, width // 3))
        cells = max(1, width - label - 8)  # 8: the duration column
        start, end = self._window
        scale = (end - start) / cells
        if y == 0:
            return self._axis(width, label, cells, start, end)
        index = self.scroll_offset.y + y - 1
        if index >= len(self.rows):
            return Strip.blank(width, self.rich_style)
        span = self.rows[index]
        colour = self._style(f"timeline--{span.status}")
        critical = id(span) in self._critical_rows
        name = self._span_label(span)
        name = name if len(name) <= label - 4 else name[: label - 5] + "…"
        segments = [
            Segment(f"{CRITICAL if critical else ' '}", self._style("timeline--critical")),
            Segment(f"{ICONS[span.status]} ", colour),
            Segment(f"{name:<{label - 3}}", self._style("timeline--critical") if critical else
                    self.rich_style),
        ]  # fmt: skip
        first = _known(span.first, start)
        stop = _known(span.end(self.now), first)
        run_from = _known(span.started, stop)
        a = int((first - start) / scale)
        b = max(a, int((run_from - start) / scale))
        c = max(b + (1 if span.started is not None else 0), math.ceil((stop - start) / scale))
        c = min(c, cells)
        b = min(b, c)
        segments += [
            Segment(" " * a, self.rich_style),
            Segment(QUEUED_CELL * (b - a), self._style("timeline--queued")),
            Segment(RUN_CELL * (c - b), colour),
            Segment(" " * (cells - c), self.rich_style),
        ]
        ran = (stop - span.started) if span.started is not None else None
        segments.append(Segment(f" {format_duration(ran):>7}", self._style("timeline--axis")))
        return Strip(segments).crop_extend(0, width, self.rich_style)

    def _axis(self, width: int, label: int, cells: int, start: float, end: float) -> Strip:
        """`0s    30s    1m00s …` over the bars."""
        step = _tick_step(end - start, cells)
        line = [" "] * cells
        t = 0.0
        while t <= end - start:
            x = int(t / (end - start) * cells)
            text = "|" + format_duration(t)
            if x + len(text) <= cells:
                line[x : x + len(text)] = text
            t += step
        text = " " * label + "".join(line)
        return Strip([Segment(text, self._style("timeline--axis"))]).crop_extend(
            0, width, self.rich_style
        )
