"""The TUI's `i` (SPEC §10): keystrokes go to a running `tty: true` stage until Esc."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.screen import ModalScreen
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


class TypeIntoScreen(ModalScreen[None]):
    """Sends every key to a stage's terminal; Esc comes back. The log stays visible beneath."""

    DEFAULT_CSS = """
    TypeIntoScreen { background: $background 0%; align: center bottom; }
    TypeIntoScreen Label { width: 100%; background: $warning; color: $background; padding: 0 1; }
    """

    def __init__(self, stage_id: str, terminal: Terminal) -> None:
        super().__init__()
        self.stage_id = stage_id
        self.terminal = terminal

    def compose(self) -> ComposeResult:
        yield Label(f"typing into {self.stage_id} · esc to stop")

    def on_key(self, event: events.Key) -> None:
        event.stop()
        event.prevent_default()
        if event.key == "escape":
            self.dismiss()
            return
        data = key_bytes(event.key, event.character)
        if data:
            try:
                self.terminal.write(data)
            except OSError:  # the stage ended meanwhile
                self.notify(f"{self.stage_id} is no longer running", severity="warning")
                self.dismiss()
