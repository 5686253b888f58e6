"""Pseudo-terminals for `tty: true` stages (SPEC §10), and where to send keystrokes to them.

A `Pty` is opened before the stage starts: the stage gets its slave side as stdin, stdout and
stderr and as its controlling terminal (`setsid --ctty`, so Ctrl-C typed into it interrupts the
stage); its output is read from the master side as raw bytes (one stream: "stdout").
`TERMINALS` holds the terminal of each running tty stage by (run id, stage id): the TUI's `i`
writes keystrokes to it, and `resize_all` follows the log pane's size.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import struct
import termios
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncssh

DEFAULT_SIZE = (120, 40)  # columns, rows: headless, or until the TUI tells the log pane's size


class Terminal(Protocol):
    """What keystrokes and sizes go to: a local PTY, or a remote one over SSH."""

    def write(self, data: bytes) -> None: ...

    def resize(self, columns: int, rows: int) -> None: ...


class Terminals:
    """The size new terminals get, and the terminals open now, by (run id, stage id)."""

    def __init__(self) -> None:
        self.size = DEFAULT_SIZE
        self.open: dict[tuple[str, str], Terminal] = {}

    def find(self, run_id: str, stage_id: str) -> Terminal | None:
        """The terminal of a running tty stage, or None."""
        return self.open.get((run_id, stage_id))

    def resize_all(self, columns: int, rows: int) -> None:
        """New size for terminals from now on and for every one open."""
        self.size = (max(columns, 1), max(rows, 1))
        for terminal in list(self.open.values()):
            terminal.resize(*self.size)


TERMINALS = Terminals()


class Pty:
    """One pseudo-terminal pair; the master side stays with us."""

    def __init__(self, columns: int, rows: int) -> None:
        self.master, self.slave = os.openpty()
        self.resize(columns, rows)
        self._transport: asyncio.ReadTransport | None = None

    def spawn_options(self) -> tuple[list[str], dict[str, Any]]:
        """An argv prefix and subprocess options: the slave as stdin, stdout and stderr, and
        (with util-linux `setsid`) as the controlling terminal of a new session."""
        fds: dict[str, Any] = {"stdin": self.slave, "stdout": self.slave, "stderr": self.slave}
        setsid = shutil.which("setsid")
        if setsid:
            return [setsid, "--ctty"], fds
        return [], {**fds, "start_new_session": True}  # a terminal, not its controlling one

    def resize(self, columns: int, rows: int) -> None:
        """Set the window size (the stage gets SIGWINCH)."""
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def write(self, data: bytes) -> None:
        """Type `data` into the terminal (as keys: Ctrl-C is b"\\x03")."""
        os.write(self.master, data)

    async def read_into(self, protocol: asyncio.SubprocessProtocol) -> None:
        """Once the stage has started: close our slave copy and feed the master's output to
        `protocol` as fd 1, then end fds 1 and 2 at hang-up (every holder of the slave gone)."""
        os.close(self.slave)
        self.slave = -1
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(self.master, "rb", buffering=0, closefd=False)
        self._transport, _ = await loop.connect_read_pipe(lambda: _Reader(protocol), pipe)

    def close(self) -> None:
        """Close both sides (idempotent)."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1


class _Reader(asyncio.Protocol):
    """The master side's data, as a subprocess protocol's stdout; hang-up (EIO) ends it."""

    def __init__(self, protocol: asyncio.SubprocessProtocol) -> None:
        self.protocol = protocol

    def data_received(self, data: bytes) -> None:
        self.protocol.pipe_data_received(1, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.pipe_connection_lost(1, None)
        self.protocol.pipe_connection_lost(2, None)


# -- over SSH: a PTY requested with the channel ------------------------------------------------

REMOTE_PREFIX = "stty raw -echo 2>/dev/null; printf '\\001'; "
"""Goes before the remote bootstrap of a tty stage: the stage script then crosses the PTY raw and
unechoed (it holds the exports, secrets too), and the mark byte says when it is safe to send."""
REMOTE_RESTORE = "stty sane 2>/dev/null"  # the script's first line: a normal terminal again


class AfterMark:
    """A sink wrapper dropping a tty stage's output up to the mark byte; `seen` is set then."""

    def __init__(self, sink: Callable[[str, bytes], None]) -> None:
        self.sink = sink
        self.seen = asyncio.Event()

    def __call__(self, stream: str, data: bytes) -> None:
        if not self.seen.is_set():
            mark = data.find(b"\x01")
            if mark < 0:
                return
            self.seen.set()
            data = data[mark + 1 :]
        if data:
            self.sink(stream, data)


class RemoteTerminal:
    """A tty stage's SSH channel as a `Terminal`."""

    def __init__(self, channel: asyncssh.SSHClientChannel[bytes]) -> None:
        self.channel = channel

    def write(self, data: bytes) -> None:
        self.channel.write(data)

    def resize(self, columns: int, rows: int) -> None:
        self.channel.change_terminal_size(columns, rows)
