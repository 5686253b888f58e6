"""A GitHub Actions job's step summary (`GITHUB_STEP_SUMMARY`, kept with the run) as Markdown."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Markdown

from tui.widgets.pump import Yielding


class SummaryScreen(Yielding, ModalScreen[None]):
    """The step summary a job wrote, read from `path` in a thread; escape, q or S closes it."""

    DEFAULT_CSS = """
    SummaryScreen { align: center middle; }
    SummaryScreen > VerticalScroll {
        width: 90; max-width: 95%; height: auto; max-height: 90%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    SummaryScreen #summary-title { text-style: bold; color: $accent; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,S", "dismiss", "Close"),
    ]

    def __init__(self, job: str, path: Path) -> None:
        super().__init__()
        self.job = job
        self.path = path

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Label(f"step summary of {self.job}", id="summary-title", markup=False)
            yield Markdown()

    def on_mount(self) -> None:
        self._read()

    @work(thread=True, exit_on_error=False)
    def _read(self) -> None:
        try:
            text = self.path.read_text(errors="replace")
        except OSError:
            text = "*This job wrote no step summary.*"
        self.app.call_from_thread(self.query_one(Markdown).update, text)
