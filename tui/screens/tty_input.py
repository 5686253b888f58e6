"""The TUI's `i` (SPEC §10): keystrokes go to a running `tty: true` stage until Esc."""

from __future__ import annotations

from textual import events
from textual.widgets import Label

from engine.ptyproc import Terminal

_KEYS = {
    "enter": b"\r",
    "tab": b"\t",
    "backspace": b"\x7f",
    "up": b"\x1b[A",
    "down": b"\x1b[B",
    "right": b"\x1b[C",
    "left": b"\x1b[D",
    "home": b"\x1b[H",
    "end": b"\x1b[F",
    "delete": b"\x1b[3~",
    "pageup": b"\x1b[5~",
    "pagedown": b"\x1b[6~",
}


def key_bytes(key: str, character: str | None) -> bytes:
    """What a terminal sends for a key: its character, a control code or an escape sequence."""
    if key in _KEYS:
        return _KEYS[key]
    if character:
        return character.encode()
    if key.startswith("ctrl+") and len(key) == 6 and key[5].isalpha():
        return bytes([ord(key[5]) & 0x1F])
    return b""


class TypeInto(Label, can_focus=True):
    """A bar at the bottom of the run screen; while it has focus, every key goes to a stage's
    terminal. Esc (or the stage ending) removes it and gives focus back."""

    DEFAULT_CSS = """
    TypeInto { dock: bottom; width: 100%; background: $warning; color: $background; padding: 0 1; }
    """

    def __init__(self, stage_id: str, terminal: Terminal) -> None:
        super().__init__(f"typing into {stage_id} · esc to stop")
        self.stage_id = stage_id
        self.terminal = terminal

    def on_mount(self) -> None:
        self.previous = self.screen.focused
        self.focus()

    def on_blur(self) -> None:
        self.remove()

    def on_key(self, event: events.Key) -> None:
        event.stop()
        event.prevent_default()
        if event.key == "escape":
            self.leave()
            return
        data = key_bytes(event.key, event.character)
        if data:
            try:
                self.terminal.write(data)
            except OSError:  # the stage ended meanwhile
                self.notify(f"{self.stage_id} is no longer running", severity="warning")
                self.leave()

    def leave(self) -> None:
        """Give the focus back to where it was (which removes this bar)."""
        if self.previous is not None:
            self.previous.focus()
        else:
            self.remove()
