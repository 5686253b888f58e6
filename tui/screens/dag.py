"""The DAG screen (`D`): the stages as boxes with their live status; enter opens a log."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Static

from tui.widgets.dag import Dag
from tui.widgets.keybar import KeyBar
from tui.widgets.pump import Yielding
from tui.widgets.status import StageView

REFRESH = 0.25  # seconds between status checks


class DagScreen(Yielding, Screen[str | None]):
    """Dismissed with the stage id whose log to open, or None (Esc)."""

    DEFAULT_CSS = """
    DagScreen #dag-title { height: 1; padding: 0 1; background: $panel; }
    DagScreen Dag { height: 1fr; border: round $foreground 30%; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back"),
        Binding("q,D", "close", "Back", show=False),
    ]

    def __init__(
        self,
        title: str,
        needs: Mapping[str, Sequence[str]],
        views: Mapping[str, StageView],
        selected: str | None,
    ) -> None:
        super().__init__()
        self.heading = title
        self.needs = needs
        self.views = views
        self.selected = selected

    def compose(self) -> ComposeResult:
        yield Static(f"{self.heading} · arrows/hjkl move · enter opens the log", id="dag-title")
        yield Dag(self.needs, self.views, self.selected)
        yield KeyBar()

    def on_mount(self) -> None:
        dag = self.query_one(Dag)
        dag.focus()
        if dag.selected is not None:
            self.call_after_refresh(dag.select, dag.selected)
        self.set_interval(REFRESH, dag.refresh_statuses)

    @on(Dag.Opened)
    def _opened(self, event: Dag.Opened) -> None:
        self.dismiss(event.stage_id)

    def action_close(self) -> None:
        """Back to the run screen."""
        self.dismiss(None)
