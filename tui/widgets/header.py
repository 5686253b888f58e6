"""The run header: pipeline name, run status, elapsed time and a count per stage status."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection
from typing import ClassVar

from rich.text import Text
from textual.widgets import Static

from engine.events import STATUSES
from tui.widgets.status import ALLOWED, ICONS, StageView, format_duration, shown_status

_RUN_TONE = {
    "running": "active",
    "succeeded": "ok",
    "failed": "bad",
    "cancelled": "warn",
    "waiting for approval": "warn",
}
_SERVICES = re.compile(r"^\d+ services? (up|starting)")  # only services running (SPEC §10)
_NAMES = {ALLOWED: "allowed to fail"}  # a count's label, when not its status
_WIDE = 110  # from this width on, counts are labelled with their status names


def _services_tone(status: str) -> str:
    """`2 services up` is good news, `1 service starting` work going on; else dim."""
    found = _SERVICES.match(status)
    return "dim" if found is None else ("ok" if found[1] == "up" else "active")


class RunHeader(Static):
    """One line at the top of the run screen; `update_run` redraws it."""

    DEFAULT_CSS = """
    RunHeader {
        dock: top;
        height: 1;
        background: $panel;
        color: $text;
        padding: 0 1;
    }
    RunHeader > .run-header--name { text-style: bold; color: $accent; }
    RunHeader > .run-header--dim { color: $text-muted; }
    RunHeader > .run-header--active { color: $accent; text-style: bold; }
    RunHeader > .run-header--ok { color: $success; text-style: bold; }
    RunHeader > .run-header--bad { color: $error; text-style: bold; }
    RunHeader > .run-header--warn { color: $warning; text-style: bold; }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "run-header--name",
        "run-header--dim",
        "run-header--active",
        "run-header--ok",
        "run-header--bad",
        "run-header--warn",
    }

    def update_run(
        self,
        name: str,
        status: str,
        elapsed: float | None,
        views: dict[str, StageView],
        may_fail: Collection[str] = (),
        banner: str = "",
        estimate: float | None = None,
    ) -> None:
        """Redraw with the run's state: the failures of `may_fail` (stages allowed to fail) are
        counted apart; `banner` (watch mode) is shown after the counts; `estimate` is the run's
        usual length (from the history), shown while it runs."""
        style = self.get_component_rich_style
        counts = Counter(shown_status(view.status, sid in may_fail) for sid, view in views.items())
        tone = style(f"run-header--{_RUN_TONE.get(status) or _services_tone(status)}")
        text = Text.assemble((name, style("run-header--name")), "  ", (status, tone))
        if elapsed is not None:
            text.append(f" {format_duration(elapsed)}", style("run-header--dim"))
        if estimate and status == "running":
            text.append(f" of ~{format_duration(estimate)}", style("run-header--dim"))
        wide = self.size.width >= _WIDE
        parts = [
            f"{ICONS[s]} {counts[s]}{' ' + _NAMES.get(s, s) if wide else ''}"
            for s in (*STATUSES, ALLOWED)
            if counts[s]
        ]
        text.append("   " + "  ".join(parts))
        if banner:
            text.append(f"   {banner}", style("run-header--warn"))
        self.update(text, layout=False)  # one line, fixed height: no re-layout
