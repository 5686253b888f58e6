"""The key bar: one line at the bottom of a screen naming its keys, like Textual's `Footer`.

`Footer` is a widget per key, recomposed (unmounted and mounted again) whenever the bindings
change: at 160x48 that cost more than everything else of the run screen's first frame. This is
one widget drawing one line of text; a click on a key presses it.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget


class KeyBar(Widget):
    """The screen's shown bindings (`show=True`), one per action, and the command palette's
    key at the right end."""

    DEFAULT_CSS = """
    KeyBar { dock: bottom; height: 1; background: $footer-background; }
    KeyBar > .key-bar--key {
        color: $footer-key-foreground; background: $footer-key-background; text-style: bold;
    }
    KeyBar > .key-bar--description { color: $footer-description-foreground; }
    KeyBar > .key-bar--disabled { color: $text-disabled; }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "key-bar--key",
        "key-bar--description",
        "key-bar--disabled",
    }

    def __init__(self) -> None:
        super().__init__()
        self._keys: list[tuple[int, int, str]] = []  # (first cell, end cell, key) as drawn

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Screen[object]) -> None:
        self.refresh()

    def on_click(self, event: events.Click) -> None:
        """A click on a key (or its description) presses it."""
        key = next((key for start, end, key in self._keys if start <= event.x < end), None)
        if key is not None:
            event.stop()
            self.app.simulate_key(key)

    def render(self) -> Text:
        style = self.get_component_rich_style
        key_style, text_style = style("key-bar--key"), style("key-bar--description")
        off = style("key-bar--disabled")
        bindings = self.screen.active_bindings
        text = Text(no_wrap=True, overflow="crop", end="")
        self._keys = []

        def add(binding: Binding, enabled: bool) -> None:
            start = text.cell_len
            text.append(f" {self.app.get_key_display(binding)} ", key_style if enabled else off)
            text.append(f"{binding.description} ", text_style if enabled else off)
            self._keys.append((start, text.cell_len, binding.key))

        seen: set[str] = set()
        for _, binding, enabled, _ in bindings.values():
            if binding.show and binding.action not in seen:
                seen.add(binding.action)
                add(binding, enabled)
        palette = bindings.get(self.app.COMMAND_PALETTE_BINDING)
        if palette is not None and self.app.ENABLE_COMMAND_PALETTE:
            binding = palette.binding
            room = len(self.app.get_key_display(binding)) + len(binding.description) + 3
            text.append(" " * max(1, self.size.width - text.cell_len - room))
            add(binding, palette.enabled)
        return text
