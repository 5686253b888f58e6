"""rsync over the pooled SSH connection: delta transfer without a second SSH login.

Local `rsync` is started with `--rsh` pointing at `engine/rsh_bridge.py`, which connects to a
Unix socket (in a private temporary directory) that this module listens on for the duration of
one transfer. The bridge sends the `rsync --server ...` command line; this module runs it in the
remote workdir on a channel of the existing asyncssh connection (`open_process`) and pumps bytes
both ways, then hands back the exit status.

rsync gets the exact file list `engine.sync` computed (NUL-separated on its stdin,
`--files-from=- --from0`), so the exclusion rules live in one place; files deleted locally are
in that list too and `--delete-missing-args` removes their remote copies. Nothing else in the
workdir is touched. This module does not import asyncssh.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from engine import rsh_bridge
from engine.errors import PipedeckError
from engine.rsh_bridge import CHUNK, EXIT, HEADER, STATUS, STDERR, STDOUT

MIN_PROTOCOL = 31  # rsync 3.1: --delete-missing-args
NOT_FOUND = 127  # the shell's status for a command it cannot find; ours for a too old rsync
OK_EXITS = (0, 24)  # 24: some source files vanished meanwhile (the next sync notices)

OpenProcess = Callable[[str], AbstractAsyncContextManager[Any]]  # an asyncssh process, bytes

_PROTOCOL = re.compile(rb"protocol version (\d+)")


def nul_join(items: list[str]) -> bytes:
    """Paths as a NUL-terminated list (for `xargs -0` and `rsync --from0`)."""
    return b"".join(item.encode("utf-8", "surrogateescape") + b"\0" for item in items)


def _new_enough(version_output: bytes) -> bool:
    match = _PROTOCOL.search(version_output)
    return match is not None and int(match.group(1)) >= MIN_PROTOCOL


async def local_rsync() -> str | None:
    """The local rsync executable, if there is one recent enough."""
    path = shutil.which("rsync")
    if path is None:
        return None
    try:
        proc = await asyncio.create_subprocess_exec(
            path, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
    except OSError:
        return None
    out, _ = await proc.communicate()
    return path if proc.returncode == 0 and _new_enough(out) else None


class RemoteRsyncMissing(PipedeckError):
    """The host has no rsync, or one older than 3.1 (the remote command exited 127)."""


def _version_check(program: str) -> str:
    """Shell lines exiting 127 unless `program` is an rsync recent enough (no extra round trip)."""
    return (
        f"p=$({shlex.quote(program)} --version 2>/dev/null"
        " | sed -n '1s/.*protocol version \\([0-9]*\\).*/\\1/p')\n"
        f'[ "${{p:-0}}" -ge {MIN_PROTOCOL} ] 2>/dev/null || exit {NOT_FOUND}'
    )


class _Relay:
    """The engine's end of the bridge: one connection, one remote rsync."""

    def __init__(self, open_process: OpenProcess, remote_root: str, program: str) -> None:
        self._open_process = open_process
        self._root = shlex.quote(remote_root)
        self._program = program
        self.command: str | None = None  # what the bridge asked to run
        self.wire_bytes = 0  # bytes carried from local rsync to the remote
        self.status: int | None = None  # the remote command's exit status
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.task is not None:  # only the one rsync we started talks to us
            writer.close()
            return
        self.task = asyncio.current_task()
        try:
            size = STATUS.unpack(await reader.readexactly(STATUS.size))[0]
            command = (await reader.readexactly(size)).decode("utf-8", "surrogateescape")
            if not command.startswith(f"{self._program} --server "):
                raise OSError(f"unexpected remote command from rsync: {command!r}")
            self.command = command
            script = (
                f"{_version_check(self._program)}\n"
                f"mkdir -p -- {self._root} && cd -- {self._root} && exec {command}"
            )
            async with self._open_process(f"sh -c {shlex.quote(script)}") as proc:
                upstream = asyncio.create_task(self._upstream(reader, proc.stdin))
                try:
                    await asyncio.gather(
                        self._downstream(proc.stdout, STDOUT, writer),
                        self._downstream(proc.stderr, STDERR, writer),
                    )
                    result = await proc.wait()
                finally:
                    upstream.cancel()  # done already, unless the remote end went first
                    await asyncio.gather(upstream, return_exceptions=True)
            self.status = 255 if result.exit_status is None else result.exit_status
            writer.write(HEADER.pack(EXIT, STATUS.size) + STATUS.pack(self.status))
            await writer.drain()
        except Exception as exc:  # re-raised by rsync_push once rsync has given up
            self.error = exc
        except asyncio.CancelledError:  # rsync_push stops us: end quietly (Python 3.11's
            pass  # stream server logs a connection task that ends cancelled as an error)
        finally:
            writer.close()

    async def _upstream(self, reader: asyncio.StreamReader, stdin: Any) -> None:
        while data := await reader.read(CHUNK):
            self.wire_bytes += len(data)
            stdin.write(data)
            await stdin.drain()
        stdin.write_eof()

    @staticmethod
    async def _downstream(stream: Any, kind: bytes, writer: asyncio.StreamWriter) -> None:
        while data := await stream.read(CHUNK):
            writer.write(HEADER.pack(kind, len(data)) + data)
            await writer.drain()


def rsync_argv(rsync: str, socket_path: str, program: str) -> list[str]:
    """The local rsync command: the file list on stdin, the bridge as its remote shell."""
    bridge = shlex.join([sys.executable, "-I", rsh_bridge.__file__, socket_path])
    return [
        rsync,
        "--files-from=-",
        "--from0",
        "--ignore-times",  # listed = changed: same size and second may still differ (delta)
        "--perms",
        "--times",
        "--copy-links",  # a symlinked file goes as its content, as the scanner sees it
        "--delete-missing-args",
        f"--rsync-path={program}",
        f"--rsh={bridge}",
        ".",  # rsync runs in the local root: a ':' in its path cannot make it look remote
        "pipedeck:.",  # the host name is ignored; the relay runs rsync in the remote root
    ]


async def rsync_push(
    rsync: str,
    open_process: OpenProcess,
    local_root: Path,
    remote_root: str,
    paths: list[str],
    program: str = "rsync",
) -> tuple[str, int]:
    """Bring `paths` (relative) remotely in step: sent if they exist here, else deleted there.

    Returns the remote command the bridge carried and the bytes sent to the remote; raises
    `RemoteRsyncMissing` when the host has no `program`, OSError when rsync failed otherwise.
    """
    relay = _Relay(open_process, remote_root, program)
    with tempfile.TemporaryDirectory(prefix="pipedeck-rsh-") as tmp:  # mode 0700
        socket_path = os.path.join(tmp, "s")
        server = await asyncio.start_unix_server(relay.handle, socket_path)
        try:
            proc = await asyncio.create_subprocess_exec(
                *rsync_argv(rsync, socket_path, program),
                cwd=local_root,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                _, err = await proc.communicate(nul_join(paths))
            finally:
                if proc.returncode is None:  # cancelled
                    proc.kill()
                    await proc.wait()
        finally:
            server.close()
            if relay.task is not None and not relay.task.done():
                relay.task.cancel()
                await asyncio.wait([relay.task])
            await server.wait_closed()
    if proc.returncode in OK_EXITS and relay.command is not None:
        return relay.command, relay.wire_bytes
    if relay.error is not None:
        raise relay.error
    if relay.status == NOT_FOUND:
        raise RemoteRsyncMissing(program)
    detail = "; ".join(line for line in err.decode(errors="replace").splitlines() if line.strip())
    raise OSError(f"rsync failed ({proc.returncode}): {detail}")
