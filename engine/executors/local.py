"""Runs a stage attempt on this machine, as its own session, and kills its whole tree.

The attempt's processes are marked by PIPEDECK_RUN_ID / PIPEDECK_STAGE / PIPEDECK_ATTEMPT in
their environment (see `engine.procs`). Output is read in chunks of up to 256 KiB by asyncio's
pipe transports and handed to the sink as it arrives, stdout and stderr each in order.
When the main process exits, the pipes get `DRAIN` seconds to reach EOF (a background child may
hold them open), then whatever the attempt left behind is killed (TERM, `kill_grace`, KILL),
like GitHub Actions' orphan-process cleanup, and its last output is drained again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.executors.base import ExecResult, OutputSink
from engine.procs import (
    KILL_WAIT,
    become_subreaper,
    kill_tree,
    own_child,
    spawning,
)
from engine.ptyproc import TERMINALS, Pty
from engine.spec import Stage

MARKER_KEYS = ("PIPEDECK_RUN_ID", "PIPEDECK_STAGE", "PIPEDECK_ATTEMPT")
DRAIN = 0.5
_STREAMS = {1: "stdout", 2: "stderr"}


def default_shell() -> tuple[str, ...]:
    """`bash -e -o pipefail -c` where bash exists, else `sh -e -c` (SPEC §1)."""
    bash = shutil.which("bash")
    if bash:
        return (bash, "-e", "-o", "pipefail", "-c")
    return (shutil.which("sh") or "/bin/sh", "-e", "-c")


class _Attempt(asyncio.SubprocessProtocol):
    """Forwards output to the sink and tracks exit and end of output."""

    def __init__(self, sink: OutputSink, loop: asyncio.AbstractEventLoop) -> None:
        self.sink = sink
        self.exited: asyncio.Future[None] = loop.create_future()
        self.eof: asyncio.Future[None] = loop.create_future()
        self.error: Exception | None = None
        self._open = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if self.error is None:
            try:
                self.sink(_STREAMS[fd], data)
            except Exception as exc:  # raised from execute() once the attempt is over
                self.error = exc

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open and not self.eof.done():
            self.eof.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


async def _within(fut: asyncio.Future[None], timeout: float) -> None:
    """Wait for `fut` at most `timeout` seconds, without cancelling it."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(fut), timeout)


class LocalExecutor:
    """The Executor for `host: local`. Makes this process a child subreaper (Linux)."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = Path(workspace)
        self._shell = default_shell()
        # The stage's shell gets SIGKILL if the engine dies (PR_SET_PDEATHSIG), set by util-linux
        # setpriv rather than a preexec_fn: Python code in the child would forbid vfork and cost
        # each stage milliseconds. Without setpriv, the next start's sweep still finds them.
        setpriv = shutil.which("setpriv")
        self._pdeath = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []
        self._running: dict[int, dict[str, str]] = {}  # pgid -> marker
        become_subreaper()

    async def execute(self, stage: Stage, env: Mapping[str, str], sink: OutputSink) -> ExecResult:
        """Run `stage.run` with exactly `env`; see `engine.executors.base.Executor`."""
        cwd = self.workspace / stage.cwd
        if not cwd.is_dir():
            return ExecResult(127, reason=f"working directory not found: {cwd}")
        shell = stage.shell or self._shell
        if not shutil.which(shell[0], path=env.get("PATH", os.defpath)):
            return ExecResult(127, reason=f"cannot start the stage: no such shell: {shell[0]}")
        env = dict(env)
        marker = {key: env[key] for key in MARKER_KEYS if key in env}
        if not marker:  # called without the scheduler's variables: mark the attempt ourselves
            marker = {"PIPEDECK_EXEC_ID": uuid.uuid4().hex}
            env.update(marker)
        tty = Pty(*TERMINALS.size) if stage.tty else None  # SPEC §10, engine/ptyproc.py
        prefix: list[str] = []
        stdio: dict[str, Any]
        if tty:
            env.setdefault("TERM", "xterm-256color")
            prefix, stdio = tty.spawn_options()
        else:
            stdio = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE}
            stdio.update(stderr=subprocess.PIPE, start_new_session=True)
        argv = [*self._pdeath, *prefix, *shell, stage.run]
        loop = asyncio.get_running_loop()
        attempt = _Attempt(sink, loop)
        cancelled: asyncio.CancelledError | None = None
        try:
            with spawning():
                # Shielded: cancelled halfway, asyncio would SIGKILL only the shell and then
                # wait for pipes that its orphans hold open. Let it start, then kill the tree.
                spawn = asyncio.ensure_future(
                    loop.subprocess_exec(
                        lambda: attempt,
                        *argv,
                        cwd=cwd,
                        env=env,
                        **stdio,
                    )
                )
                try:
                    transport, _ = await asyncio.shield(spawn)
                except asyncio.CancelledError as exc:
                    cancelled = exc
                    transport, _ = await spawn
                own_child(transport.get_pid())
        except (OSError, subprocess.SubprocessError) as exc:
            if tty:
                tty.close()
            if cancelled is not None:
                raise cancelled from exc
            what = getattr(exc, "strerror", None) or str(exc)
            where = getattr(exc, "filename", None) or argv[0]
            return ExecResult(127, reason=f"cannot start the stage: {what}: {where}")
        pgid = transport.get_pid()
        self._running[pgid] = marker
        key = (env.get("PIPEDECK_RUN_ID", ""), stage.id)
        try:
            try:
                if tty:
                    TERMINALS.open[key] = tty
                    await tty.read_into(attempt)
                if cancelled is None:
                    await asyncio.shield(attempt.exited)
                    await _within(attempt.eof, DRAIN)
            except asyncio.CancelledError as exc:
                cancelled = exc
            await kill_tree(pgid, marker, stage.kill_grace)
            await _within(attempt.exited, KILL_WAIT)
            await _within(attempt.eof, DRAIN)
            if cancelled is not None:
                raise cancelled
            if attempt.error is not None:
                raise attempt.error
            code = transport.get_returncode()
            assert code is not None  # `exited` is done
        finally:
            self._running.pop(pgid, None)
            if tty:
                TERMINALS.open.pop(key, None)
                tty.close()
            transport.close()
            own_child(pgid, owned=False)
        return ExecResult(128 - code if code < 0 else code)

    async def close(self) -> None:
        """Kill every attempt still running, without grace."""
        for pgid, marker in list(self._running.items()):
            await kill_tree(pgid, marker, 0)
