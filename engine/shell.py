"""`pipedeck shell STAGE` and the TUI's `t` (SPEC §10): a shell where and as a stage runs.

The shell is `$SHELL` (else bash, else sh), started in the stage's working directory with the
environment the scheduler gives the stage (`engine.run.stage_env`; PIPEDECK_ATTEMPT is 0: no
attempt), on the stage's host: here, or over SSH in the remote workdir on the executor's pooled
connection (a PTY is requested when our stdin is a terminal). With stdin not a terminal the shell
reads its commands from stdin, so it is scriptable.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import os
import posixpath
import shlex
import shutil
import signal
import termios
import tty
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from shlex import quote
from typing import TYPE_CHECKING

from engine.errors import PipedeckError
from engine.run import new_run_id, stage_env
from engine.spec import Pipeline, Stage

if TYPE_CHECKING:
    import asyncssh

    from engine.executors.base import Executor
    from engine.executors.ssh import SshExecutor

SHELL_ATTEMPT = 0  # PIPEDECK_ATTEMPT in a shell: not an attempt of the stage


class ShellError(PipedeckError):
    """The shell could not start; `str()` is the one-line reason (exit code 2)."""

    exit_code = 2


def shell_program(env: dict[str, str]) -> str:
    """`$SHELL`, else bash, else sh."""
    return env.get("SHELL") or shutil.which("bash") or "/bin/sh"


async def open_shell(
    pipeline: Pipeline,
    stage_id: str,
    *,
    run_id: str | None = None,
    executor: Executor | None = None,
) -> int:
    """Run a shell for `stage_id` on our stdin/stdout/stderr until it exits; its exit code.

    `executor` is the run's executor of the stage's host, to reuse its SSH connection or to
    find the stage's Slurm job (one is made and closed here when it is None).
    """
    stage = pipeline.stages[stage_id]
    env = stage_env(pipeline, stage, run_id or new_run_id(), SHELL_ATTEMPT)
    if not stage.is_remote:
        cwd = pipeline.workspace / stage.cwd
        if not cwd.is_dir():
            raise ShellError(f"working directory not found: {cwd}")
        return await _interactive([shell_program(env)], cwd, env)
    spec = pipeline.hosts.get(stage.host)
    if spec is not None and spec.executor == "slurm":
        return await _slurm(pipeline, stage, env, executor)
    from engine.executors.ssh import SshExecutor  # asyncssh: for remote stages only

    if isinstance(executor, SshExecutor):
        return await _remote(executor, stage, env)
    own = SshExecutor(pipeline, stage.host)
    try:
        return await _remote(own, stage, env)
    finally:
        await own.close()


async def _interactive(argv: list[str], cwd: Path, env: dict[str, str]) -> int:
    """Run `argv` here on our stdin/stdout/stderr (in the terminal's foreground); its exit code."""
    terminal = os.isatty(0)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=env, process_group=0 if terminal else None
        )
    except OSError as exc:
        raise ShellError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    try:
        with _foreground(proc.pid) if terminal else contextlib.nullcontext():
            return await proc.wait()
    finally:
        if proc.returncode is None:  # cancelled (the program quits): do not leave it behind
            proc.kill()
            await proc.wait()


@contextlib.contextmanager
def _foreground(pgid: int) -> Iterator[None]:
    """Give the terminal to process group `pgid` (Ctrl-C goes to the shell, not to us), then
    take it back."""
    ours = os.getpgrp()
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # tcsetpgrp from the background
    try:
        os.tcsetpgrp(0, pgid)
        os.killpg(pgid, signal.SIGCONT)  # it may have stopped itself waiting for the terminal
        yield
    finally:
        os.tcsetpgrp(0, ours)
        signal.signal(signal.SIGTTOU, old)


async def _slurm(
    pipeline: Pipeline, stage: Stage, env: dict[str, str], executor: Executor | None
) -> int:
    """A shell on the Slurm node: inside the stage's running job, else in a new allocation
    (`engine.executors.slurm.shell_command`), from here or from the login node over SSH."""
    from engine.executors.slurm import SlurmExecutor, SshCluster, shell_command

    own = executor if isinstance(executor, SlurmExecutor) else SlurmExecutor(pipeline, stage.host)
    try:
        try:
            await own.cluster.push(stage)
        except OSError as exc:
            raise ShellError(f"host {stage.host}: workspace sync failed: {exc}") from None
        argv = shell_command(stage, own.jobs.get(stage.id), own.cluster.root)
        env = {**env, **own.options.env}  # srun exports it to the shell
        if isinstance(own.cluster, SshCluster):  # the login node
            return await _remote(own.cluster._ssh, stage, env, shlex.join(argv))
        return await _interactive(argv, pipeline.workspace, {**os.environ, **env})  # as jobs
    finally:
        if own is not executor:
            await own.close()


def remote_prelude(workdir: str, stage: Stage, env: Mapping[str, str]) -> list[str]:
    """sh lines that enter the stage's remote directory and export its environment."""
    cwd = posixpath.normpath(posixpath.join(workdir, stage.cwd))
    return [
        f"cd -- {quote(cwd)} || exit 1",
        *(f"export {k}={quote(v)}" for k, v in env.items() if k.isidentifier()),
    ]


def remote_script(workdir: str, stage: Stage, env: dict[str, str], path: str, command: str) -> str:
    """What the remote `sh` sources: remove itself, cd, export the stage env, exec `command`."""
    lines = [f"rm -f -- {quote(path)}", *remote_prelude(workdir, stage, env), f"exec {command}"]
    return "\n".join(lines) + "\n"


async def _remote(
    executor: SshExecutor, stage: Stage, env: dict[str, str], command: str = '"${SHELL:-bash}"'
) -> int:
    import asyncssh

    from engine.executors.ssh import PIDS_DIR, ConnectError

    try:
        conn = await executor.prepare(stage)
    except ConnectError as exc:
        raise ShellError(str(exc)) from None
    except (OSError, asyncssh.Error) as exc:
        raise ShellError(f"host {stage.host}: workspace sync failed: {exc}") from None
    workdir = executor.host.workdir
    # the environment (secrets too) goes in a file only we can read, not on a command line
    path = f"{workdir}/{PIDS_DIR}/shell-{uuid.uuid4().hex}"
    script = remote_script(workdir, stage, env, path, command)
    make = f"umask 077 && mkdir -p -- {quote(posixpath.dirname(path))} && cat > {quote(path)}"
    try:
        await conn.run(make, input=script, check=True)
    except (OSError, asyncssh.Error) as exc:
        raise ShellError(f"host {stage.host}: cannot start the shell: {exc}") from None
    terminal = os.isatty(0)
    pty: dict[str, object] = {}
    if terminal:
        size = os.get_terminal_size(0)
        pty = {"term_type": env.get("TERM", "xterm"), "term_size": (size.columns, size.lines)}
    source = f"sh -c {quote('. ' + quote(path))}"
    async with conn.create_process(source, encoding=None, **pty) as proc:
        with _raw(0) if terminal else contextlib.nullcontext():
            await _bridge(proc)
        result = await proc.wait()
    return result.exit_status if result.exit_status is not None else 255


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    """Our terminal in raw mode (keys go to the remote PTY as typed), restored after."""
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _bridge(proc: asyncssh.SSHClientProcess[bytes]) -> None:
    """Copy our stdin to the process and its output to our stdout/stderr until it ends."""
    loop = asyncio.get_running_loop()

    def forward() -> None:
        data = os.read(0, 65536)
        if data:
            proc.stdin.write(data)
        else:
            loop.remove_reader(0)
            proc.stdin.write_eof()

    async def copy(stream: asyncssh.SSHReader[bytes], fd: int) -> None:
        while data := await stream.read(65536):
            os.write(fd, data)

    try:
        loop.add_reader(0, forward)
        reading = True
    except PermissionError:  # a regular file: epoll cannot watch it, and reads never block
        proc.stdin.write(await asyncio.to_thread(_read_all, 0))
        proc.stdin.write_eof()
        reading = False
    try:
        await asyncio.gather(copy(proc.stdout, 1), copy(proc.stderr, 2))
    finally:
        if reading:
            loop.remove_reader(0)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def resolve(pipeline: Pipeline, name: str) -> str:
    """A stage name or instance id -> the one instance id it means, else ShellError."""
    if name in pipeline.stages:
        return name
    ids = pipeline.groups.get(name)
    if ids is not None and len(ids) == 1:
        return ids[0]
    if ids:
        raise ShellError(f"{name} has {len(ids)} instances; name one: {', '.join(ids)}")
    hint = difflib.get_close_matches(name, [*pipeline.groups, *pipeline.stages], n=1)
    raise ShellError(f"no such stage: {name}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def run_shell(pipeline: Pipeline, name: str) -> int:
    """`pipedeck shell NAME`: the shell's exit code; ShellError when it cannot start."""
    return asyncio.run(open_shell(pipeline, resolve(pipeline, name)))
