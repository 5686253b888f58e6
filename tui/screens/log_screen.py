"""A screen with a searchable log pane: the `/` search box, n / N, escape, f, w, e and z.

The run screen and the merged log screen both derive from `LogScreen`; each says which pane the
keys act on (`active_log`) and where focus goes when the search box closes (`home`).
"""

from __future__ import annotations

import re
from typing import ClassVar

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Input, Label

from tui.widgets.log_view import ERRORS, LogView
from tui.widgets.pump import Yielding


class SearchBar(Horizontal):
    """The one-line search box docked under the log panes; hidden until `/`."""

    DEFAULT_CSS = """
    SearchBar { dock: bottom; height: 1; display: none; background: $boost; }
    SearchBar.-open { display: block; }
    SearchBar Label { width: auto; padding: 0 1; color: $accent; text-style: bold; }
    SearchBar #search { width: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Label("search /")
        yield Input(
            placeholder="a regular expression; enter searches, escape closes",
            id="search",
            compact=True,
        )


class LogScreen(Yielding, Screen[None]):
    """Search, follow and wrap keys over `active_log` (see the module docstring)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "follow", "Follow", tooltip="toggle following the log's end"),
        Binding(
            "slash",
            "search",
            "Search",
            key_display="/",
            tooltip="search the log (regular expression)",
            priority=True,  # handled as it arrives: the keys typed after it go to the search box
        ),
        Binding("n", "next_match(1)", "Next match", show=False, tooltip="next search match"),
        Binding(
            "N", "next_match(-1)", "Previous match", show=False, tooltip="previous search match"
        ),
        Binding("w", "wrap", "Wrap", show=False, tooltip="toggle line wrap"),
        Binding(
            "e",
            "errors",
            "Next error",
            show=False,
            tooltip="jump to the log's first error line, then the next",
        ),
        Binding(
            "z",
            "toggle_group",
            "Fold",
            show=False,
            tooltip="fold or unfold a workflow log group (the first on screen, or the one around)",
        ),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._focus_before_search: Widget | None = None

    @property
    def active_log(self) -> LogView:
        """The pane the keys act on."""
        raise NotImplementedError

    @property
    def home(self) -> Widget:
        """Where focus goes when the search box closes and nothing else had it."""
        return self.active_log

    @property
    def searching(self) -> bool:
        """True while the search box is open."""
        return self.query_one(SearchBar).has_class("-open")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`/` typed in the search box is text."""
        if action == "search":
            return not self.searching
        return True

    def action_follow(self) -> None:
        """Toggle following the end of the active log."""
        log = self.active_log
        log.follow = not log.follow

    def action_wrap(self) -> None:
        """Toggle line wrap in the active log."""
        log = self.active_log
        log.wrap = not log.wrap

    def action_search(self, text: str | None = None) -> None:
        """Open the search input for the active log (with `text`, e.g. pasted, in it).

        Focus moves at once, not on the next idle: keys already queued behind `/` (fast typing,
        a paste without bracketed paste) must reach the search box, not the screen's bindings.
        """
        if not self.searching:
            self._focus_before_search = self.focused
        self.query_one(SearchBar).add_class("-open")
        search = self.query_one("#search", Input)
        log = self.active_log
        if text is None:
            text = log.search.pattern.pattern if log.search else ""
        search.value = text
        search.cursor_position = len(search.value)
        self.set_focus(search)

    def on_paste(self, event: events.Paste) -> None:
        """A paste that starts with `/` (outside the search box) is a search."""
        if event.text.startswith("/") and not self.searching:
            event.stop()
            self.action_search(event.text[1:].splitlines()[0] if len(event.text) > 1 else "")

    def _close_search(self) -> None:
        """Hide the search box; focus goes back where it was before `/`."""
        self.query_one(SearchBar).remove_class("-open")
        before, self._focus_before_search = self._focus_before_search, None
        if before is not None and before.is_attached and before.focusable:
            before.focus()
        else:
            self.home.focus()

    @on(Input.Submitted, "#search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        pattern = None
        if event.value:
            try:
                pattern = re.compile(event.value)
            except re.error as error:
                self.notify(f"not a regular expression: {error}", severity="error")
                return
        self.active_log.start_search(pattern)
        self._close_search()

    def action_clear_search(self) -> bool:
        """Close the search input, or clear the active log's search; False when neither was."""
        if self.searching:
            self._close_search()
        elif self.active_log.search is not None:
            self.active_log.start_search(None)
        else:
            return False
        return True

    def action_errors(self) -> None:
        """Jump to the first error line of the active log, then to the next ones."""
        log = self.active_log
        if log.search is None or log.search.pattern is not ERRORS:
            log.start_search(ERRORS, label="errors", from_start=True)
        elif not log.next_match(1):
            self.notify("no error line in this log", severity="warning")

    def action_toggle_group(self) -> None:
        """Fold or unfold a group of the active log (a GitHub Actions job's)."""
        self.active_log.action_toggle_group()

    def action_next_match(self, step: int) -> None:
        """Go to the next (1) or previous (-1) search match."""
        log = self.active_log
        if log.search is None:
            self.notify("no search: press / to search", severity="warning")
        elif not log.next_match(step):
            self.notify(f"no match for /{log.search.pattern.pattern}/", severity="warning")
