"""Modal screens: the key help and the quit confirmation."""

from __future__ import annotations

import textwrap
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from tui.widgets.pump import Yielding

_TEXT_WIDTH = 72  # the help box's width (76) less its border and padding


class KeyColumns(Static):
    """Two columns, the keys and what they do, each description wrapped under its column to
    the width the box gives (less a scrollbar, in a short terminal): laid out once per width,
    where a rich `Table` is measured and laid out again on every render."""

    def __init__(self, rows: list[tuple[str, str]], **kwargs: str) -> None:
        self.rows = rows
        super().__init__(self._columns(_TEXT_WIDTH), **kwargs)

    def on_resize(self, event: events.Resize) -> None:
        self.update(self._columns(event.size.width))  # the new width (content_region may lag)

    def _columns(self, width: int) -> Text:
        column = max((len(keys) for keys, _ in self.rows), default=0) + 2
        text = Text(end="")
        for n, (keys, what) in enumerate(self.rows):
            lines = textwrap.wrap(what, max(8, width - column)) or [""]
            text.append(("\n" if n else "") + keys.ljust(column), "bold")
            text.append(("\n" + " " * column).join(lines))
        return text


class HelpScreen(Yielding, ModalScreen[None]):
    """Every key of the run screen; any of escape, q or ? closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 76; max-width: 95%; height: auto; max-height: 90%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    HelpScreen #help-title { text-style: bold; color: $accent; }
    HelpScreen #help-keys { height: auto; }
    HelpScreen .dim { color: $foreground-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close"),
    ]

    def __init__(self, rows: list[tuple[str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Label("pipedeck keys (scroll with up/down)", id="help-title")
            yield KeyColumns(self.rows, id="help-keys")
            yield Label("ctrl+p: command palette · esc closes", classes="dim")


class ConfirmScreen(Yielding, ModalScreen[bool]):
    """A yes/no question; y/enter answers yes, n/escape answers no."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical {
        width: 56; max-width: 95%; height: auto;
        border: thick $warning; background: $surface; padding: 1 2;
    }
    ConfirmScreen Horizontal { height: auto; align: center middle; margin-top: 1; }
    ConfirmScreen Button { margin: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,enter", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            with Horizontal():
                yield Button("Yes (y)", id="yes", variant="warning")
                yield Button("No (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        """Dismiss with the answer."""
        self.dismiss(yes)
