"""The hosts bar: one line with each SSH host's connection state, under the run header."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.widget import Widget

from engine.events import HostState

# A connection state -> (icon, tone).
_LOOK: dict[str, tuple[str, str]] = {
    "connected": ("●", "ok"),
    "connecting": ("◌", "active"),
    "syncing": ("⇅", "active"),
    "lost": ("⚠", "warn"),
    "failed": ("✘", "bad"),
}
_IDLE = ("○", "dim")  # `idle` (closed) and any state this bar does not know
_MIN_REASON = 12  # a reason is cut to fit the line, never below this many cells


def short_state(host: str, state: HostState) -> str:
    """`state: reason`, without the reason's `host NAME: ` prefix (the bar names the host)."""
    if not state.reason:
        return state.state
    return f"{state.state}: {state.reason.removeprefix(f'host {host}: ')}"


def host_look(state: HostState) -> tuple[str, str]:
    """(icon, tone) for a connection state; tones are the bar's `hosts-bar--TONE` classes."""
    return _LOOK.get(state.state, _IDLE)


class HostsBar(Widget):
    """Shows `hosts  buildbox ● connected  lab ✘ failed: auth refused`; `update_hosts` sets it.

    Drawn in `render`, so a theme change or a resize redraws it with the new colours and width.
    A reason too long for the line is cut with `…`; the tooltip has every state in full.
    """

    DEFAULT_CSS = """
    HostsBar {
        height: 1;
        background: $surface;
        color: $text;
        padding: 0 1;
    }
    HostsBar > .hosts-bar--label { color: $text-muted; }
    HostsBar > .hosts-bar--name { text-style: bold; }
    HostsBar > .hosts-bar--dim { color: $text-muted; }
    HostsBar > .hosts-bar--active { color: $accent; }
    HostsBar > .hosts-bar--ok { color: $success; }
    HostsBar > .hosts-bar--bad { color: $error; }
    HostsBar > .hosts-bar--warn { color: $warning; }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "hosts-bar--label",
        "hosts-bar--name",
        "hosts-bar--dim",
        "hosts-bar--active",
        "hosts-bar--ok",
        "hosts-bar--bad",
        "hosts-bar--warn",
    }

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.states: dict[str, HostState] = {}

    def update_hosts(self, states: dict[str, HostState]) -> None:
        """Show `states` (host -> connection state, in display order)."""
        self.states = dict(states)
        self.tooltip = "\n".join(f"{host}: {state}" for host, state in self.states.items())
        self.refresh()

    def render(self) -> Text:
        style = self.get_component_rich_style
        shorts = {host: short_state(host, state) for host, state in self.states.items()}
        states = shorts.values()
        # `hosts` then, per host, two spaces, its name, ` ● `, its state
        room = self.content_region.width - 5 - sum(len(h) + 5 for h in self.states)
        short = sum(len(s) for s in states if len(s) <= _MIN_REASON)
        cut = sum(1 for s in states if len(s) > _MIN_REASON)
        budget = max(_MIN_REASON, (room - short) // max(1, cut))  # cells for each long state
        text = Text("hosts", style=style("hosts-bar--label"), no_wrap=True, overflow="ellipsis")
        for host, state in shorts.items():
            icon, tone = host_look(self.states[host])
            shown = state if len(state) <= budget else state[: budget - 1] + "…"
            text.append("  ")
            text.append(host, style("hosts-bar--name"))
            text.append(f" {icon} {shown}", style(f"hosts-bar--{tone}"))
        return text
