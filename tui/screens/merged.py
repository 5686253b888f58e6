"""The merged log screen (`m`): every stage's output interleaved, filterable by stage."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import partial
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.markup import escape
from textual.widgets import Input, Label

from tui.screens.log_screen import LogScreen, SearchBar
from tui.widgets.keybar import KeyBar
from tui.widgets.log_view import LineReader, LogSource, LogView
from tui.widgets.merged import Arrivals, AttemptKey, MergedReader

FRAME = 1 / 15  # seconds between polls of the merged log's length


class MergedScreen(LogScreen):
    """Shows `arrivals` through a `LogView`; `s` filters the stages, Esc closes."""

    DEFAULT_CSS = """
    MergedScreen LogView { height: 1fr; }
    /* under the log, in the flow: docked, they would lie under the key bar (docked too) */
    MergedScreen SearchBar { dock: none; }
    MergedScreen #filterbar { height: 1; display: none; background: $boost; }
    MergedScreen.-filtering #filterbar { display: block; }
    MergedScreen #filterbar Label { width: auto; padding: 0 1; color: $accent; text-style: bold; }
    MergedScreen #filter { width: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("s", "filter", "Stages", tooltip="show only the stages matching a pattern"),
        Binding("m", "close", "Back", show=False),
    ]

    def __init__(
        self,
        arrivals: Arrivals,
        open_log: Callable[[AttemptKey], LineReader],
        stages: Iterable[str],
    ) -> None:
        super().__init__()
        self.arrivals = arrivals
        self.open_log = open_log
        self.stages = list(stages)
        self.keep: re.Pattern[str] | None = None
        self._generation = 0

    def compose(self) -> ComposeResult:
        yield LogView(id="merged")
        with Horizontal(id="filterbar"):
            yield Label("stages /")
            yield Input(
                placeholder="a pattern over stage names; empty shows every stage",
                id="filter",
                compact=True,
            )
        yield SearchBar()
        yield KeyBar()

    @property
    def active_log(self) -> LogView:
        return self.query_one("#merged", LogView)

    def on_mount(self) -> None:
        self._show()
        self.active_log.focus()
        self.set_interval(FRAME, self.active_log.poll)

    def _show(self) -> None:
        self._generation += 1
        reader = partial(MergedReader, self.arrivals, self.open_log, self.stages, self.keep)
        log = self.active_log
        log.show(LogSource("merged", self._generation, reader), "no output yet")
        shown = f"stages /{self.keep.pattern}/" if self.keep else "every stage"
        log.border_title = escape(f"merged log · {shown}")

    def action_filter(self) -> None:
        """Open the stage filter."""
        self.add_class("-filtering")
        box = self.query_one("#filter", Input)
        box.value = self.keep.pattern if self.keep else ""
        self.set_focus(box)

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        try:
            self.keep = re.compile(event.value) if event.value else None
        except re.error as error:
            self.notify(f"not a regular expression: {error}", severity="error")
            return
        self.remove_class("-filtering")
        self._show()
        self.active_log.focus()

    def action_back(self) -> None:
        """Escape: close the filter or the search first, then the screen."""
        if self.has_class("-filtering"):
            self.remove_class("-filtering")
            self.active_log.focus()
        elif not self.action_clear_search():
            self.dismiss()

    def action_close(self) -> None:
        """Back to the run screen."""
        self.dismiss()
