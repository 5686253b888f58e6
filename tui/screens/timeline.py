"""The timeline screen (`T` on the run screen and in the history): Esc closes it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Static

from tui.widgets.keybar import KeyBar
from tui.widgets.pump import Yielding
from tui.widgets.timeline import CRITICAL, QUEUED_CELL, RUN_CELL, Spans, Timeline

REFRESH = 0.25  # seconds between redraws of a live run's bars


class TimelineScreen(Yielding, Screen[None]):
    """Shows `spans` on a shared time axis; live while `live` is true."""

    DEFAULT_CSS = """
    TimelineScreen #timeline-title {
        height: 1; padding: 0 1; background: $panel; text-wrap: nowrap; text-overflow: ellipsis;
    }
    TimelineScreen Timeline { height: 1fr; border: round $foreground 30%; }
    TimelineScreen #timeline-legend { height: 1; padding: 0 1; color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back"),
        Binding("q,T", "close", "Back", show=False),
    ]

    def __init__(
        self,
        title: str,
        spans: Spans,
        needs: Mapping[str, Iterable[str]],
        *,
        clock: Callable[[], float] = time.time,
        live: bool = True,
    ) -> None:
        super().__init__()
        self.heading = title
        self.spans = spans
        self.needs = needs
        self.clock = clock
        self.live = live

    def compose(self) -> ComposeResult:
        yield Static(id="timeline-title")
        yield Timeline(self.spans, self.needs, self.clock(), id="timeline")
        yield Static(
            f"{QUEUED_CELL} queued  {RUN_CELL} ran (status colour)  {CRITICAL} critical path"
            "  j/k scroll",
            id="timeline-legend",
        )
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one(Timeline).focus()
        self._redraw()
        if self.live:
            self.set_interval(REFRESH, self._redraw)

    def _redraw(self) -> None:
        timeline = self.query_one(Timeline)
        timeline.refresh_spans(self.clock())
        path = " → ".join(timeline.critical) or "-"
        self.query_one("#timeline-title", Static).update(
            escape(f"{self.heading} · critical path: {path}")
        )

    def action_close(self) -> None:
        """Back to the screen `T` was pressed on."""
        self.dismiss()
