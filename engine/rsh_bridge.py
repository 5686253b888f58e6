"""The "remote shell" rsync runs (`rsync -e`): it carries rsync over pipedeck's SSH connection.

rsync starts `python rsh_bridge.py SOCKET [-l USER] HOST COMMAND...` with its protocol on our
stdin/stdout. The bridge connects to the Unix socket the engine listens on for the duration of
one sync, sends the remote command line (joined with spaces, as `ssh` does), then relays: our
stdin goes to the socket as raw bytes (end of input: a write shutdown); the engine answers with
frames (`KIND` byte, 4-byte big-endian length, payload): remote stdout, remote stderr, and last
the remote exit status, which becomes ours. The engine runs the command on its asyncssh
connection (`engine.rsync`).

Standard library only and no `engine` import: rsync runs this file directly with `python -I`.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading

STDOUT, STDERR, EXIT = b"o", b"e", b"x"
HEADER = struct.Struct(">cI")
STATUS = struct.Struct(">i")
CHUNK = 1 << 16


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    """Exactly `size` bytes, or None when the socket ends first."""
    data = bytearray()
    while len(data) < size:
        part = sock.recv(size - len(data))
        if not part:
            return None
        data += part
    return bytes(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _pump_stdin(sock: socket.socket) -> None:
    """Our stdin to the socket until it ends, then shut the socket's write side."""
    try:
        while data := os.read(0, CHUNK):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the engine side went away: the frame loop reports it


def remote_command(args: list[str]) -> str:
    """The command from rsync's `[-l USER] HOST COMMAND...` arguments, joined like `ssh` does."""
    if args[:1] == ["-l"]:
        args = args[2:]
    return " ".join(args[1:])


def main(argv: list[str]) -> int:
    """Relay until the engine sends the remote exit status; that status."""
    if len(argv) < 3:
        sys.stderr.write("usage: rsh_bridge.py SOCKET [-l USER] HOST COMMAND...\n")
        return 255
    command = remote_command(argv[2:]).encode("utf-8", "surrogateescape")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(argv[1])
        sock.sendall(STATUS.pack(len(command)) + command)
    except OSError as exc:
        sys.stderr.write(f"pipedeck rsh bridge: cannot reach the engine: {exc}\n")
        return 255
    threading.Thread(target=_pump_stdin, args=(sock,), daemon=True).start()
    while (header := _recv_exact(sock, HEADER.size)) is not None:
        kind, size = HEADER.unpack(header)
        payload = _recv_exact(sock, size)
        if payload is None:
            break
        if kind == EXIT:
            return int(STATUS.unpack(payload)[0])
        _write_all(1 if kind == STDOUT else 2, payload)
    sys.stderr.write("pipedeck rsh bridge: the SSH connection ended without an exit status\n")
    return 255


if __name__ == "__main__":
    os._exit(main(sys.argv))  # no waiting for the stdin thread, blocked in a read
