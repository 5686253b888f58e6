"""Runs a stage attempt on this machine, as its own session, and kills its whole tree.

The attempt's processes are marked by PIPEDECK_RUN_ID / PIPEDECK_STAGE / PIPEDECK_ATTEMPT in
their environment (see `engine.procs`); `engine.watchdog` kills their group if the engine dies.
The process is started from a worker thread
and its exit is seen through a pidfd (no fork on the loop, no watcher thread per child). Output
is read in chunks of up to 256 KiB by asyncio's pipe transports and handed to the sink as it
arrives, stdout and stderr each in order.
When the main process exits, the pipes get `DRAIN` seconds to reach EOF (a background child may
hold them open), then whatever the attempt left behind is killed (TERM, `kill_grace`, KILL),
like GitHub Actions' orphan-process cleanup, and its last output is drained again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import resource
import select
import shutil
import signal
import subprocess
import threading
import weakref
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from subprocess import DEVNULL, PIPE, Popen

from engine import watchdog
from engine.executors.base import ExecResult, OutputSink
from engine.executors.direct import direct_exec
from engine.procs import (
    KILL_WAIT,
    become_subreaper,
    kill_tree,
    own_child,
    spawning,
)
from engine.ptyproc import TERMINALS, Pty
from engine.resources import attempt_exited
from engine.spec import Stage

MARKER_KEYS = ("PIPEDECK_RUN_ID", "PIPEDECK_STAGE", "PIPEDECK_ATTEMPT")
DRAIN = 0.5
FORGET_WITHIN = 0.05  # seconds an ended attempt's group may stay on the watchdog's list
CHUNK = 256 * 1024  # bytes read from a pipe at once
MAX_ARG = 100_000  # bytes of script passed as an argument; longer ones go through a file
_STREAMS = {1: "stdout", 2: "stderr"}


def default_shell() -> tuple[str, ...]:
    """`bash -e -o pipefail -c` where bash exists, else `sh -e -c` (SPEC §1)."""
    bash = shutil.which("bash")
    if bash:
        return (bash, "-e", "-o", "pipefail", "-c")
    return (shutil.which("sh") or "/bin/sh", "-e", "-c")


class _Watcher:
    """One epoll set holding every running attempt's pipes and pidfd, which the event loop
    watches as a single reader: an attempt's three descriptors are added and removed with one
    `epoll_ctl` each instead of asyncio's `add_reader`/`remove_reader` (a handle, a selector
    key and its checks per call, ~10% of the loop's time per `true` stage in a fan-out).
    Level-triggered like the loop's own readers; the callbacks run on the loop, one by one,
    an exception reported to the loop's exception handler as a reader's would be. The set is
    on the loop only while it holds a descriptor (a closed loop keeps no stale reader)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._handlers: dict[int, Callable[[], None]] = {}

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Watcher:
        """The loop's watcher (it holds no reference to the loop)."""
        watcher = _WATCHERS.get(loop)
        if watcher is None:
            watcher = _WATCHERS[loop] = cls()
        return watcher

    def add(self, loop: asyncio.AbstractEventLoop, fd: int, callback: Callable[[], None]) -> None:
        """Call `callback()` on the loop whenever `fd` is readable, until `remove`."""
        self._epoll.register(fd, select.EPOLLIN)
        if not self._handlers:
            loop.add_reader(self._epoll.fileno(), self._ready, loop)
        self._handlers[fd] = callback

    def remove(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        """Stop watching `fd` (before it is closed)."""
        if self._handlers.pop(fd, None) is not None:
            self._epoll.unregister(fd)
            if not self._handlers:
                loop.remove_reader(self._epoll.fileno())

    def _ready(self, loop: asyncio.AbstractEventLoop) -> None:
        for fd, _ in self._epoll.poll(0):
            callback = self._handlers.get(fd)  # None: removed by an earlier callback
            if callback is not None:
                try:
                    callback()
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    loop.call_exception_handler(
                        {"message": f"Exception in callback {callback!r}", "exception": exc}
                    )


_WATCHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watcher] = (
    weakref.WeakKeyDictionary()
)


class _Child:
    """A started stage process: its output read by the loop, its exit seen through a pidfd.

    The process is started in a worker thread (`_popen`): `subprocess` uses vfork, and the
    parent waits until the child has exec'd, which is a fraction of a millisecond on a quiet
    machine but tens of milliseconds on a loaded one (the child waits for a CPU); the event
    loop, which also drives the TUI and every other stage, does not wait for it. Each pipe is
    read with `os.read` when it is readable, in chunks of up to `CHUNK` bytes, until EOF (no
    transport or protocol objects per pipe); the pipes and the pidfd are watched through the
    loop's `_Watcher`.
    """

    def __init__(self, proc: Popen[bytes] | _Spawned, sink: OutputSink) -> None:
        self.proc = proc
        self.sink = sink
        self.loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = self.loop.create_future()
        self.eof: asyncio.Future[None] = self.loop.create_future()
        self.error: Exception | None = None
        self.rusage: resource.struct_rusage | None = None  # once reaped
        self._open = {1, 2}
        self._pipes: dict[int, int] = {}  # 1 / 2 -> the pipe's fd, while it is read
        self._watcher = _Watcher.of(self.loop)
        self._pidfd = os.pidfd_open(proc.pid)
        self._watcher.add(self.loop, self._pidfd, self._reap)

    @classmethod
    def follow(cls, proc: Popen[bytes] | _Spawned, sink: OutputSink) -> _Child:
        """Read a started process's output: from its two pipes, or, for a terminal, from what
        `tty.read_into` connects later. Before the loop runs again: no output is missed."""
        try:
            child = cls(proc, sink)
            for fd, pipe in ((1, proc.stdout), (2, proc.stderr)):
                if pipe is not None:
                    if isinstance(pipe, int):  # `_LibcSpawn`'s, non-blocking already
                        no = pipe
                    else:
                        no = pipe.fileno()
                        os.set_blocking(no, False)
                    child._watcher.add(child.loop, no, partial(child._read, fd))
                    child._pipes[fd] = no
        except BaseException:  # it runs, but we cannot follow it: kill it, the caller sweeps
            proc.kill()
            raise
        return child

    def _read(self, fd: int) -> None:
        try:
            data = os.read(self._pipes[fd], CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO and the like: the pipe is as good as closed
            data = b""
        if data:
            self.pipe_data_received(fd, data)
        else:
            self._watcher.remove(self.loop, self._pipes.pop(fd))
            self.pipe_connection_lost(fd, None)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        """Output on fd 1 or 2 (asyncio.SubprocessProtocol's names: engine.ptyproc feeds a
        terminal's output through them)."""
        if self.error is None:
            try:
                self.sink(_STREAMS[fd], data)
            except Exception as exc:  # raised from execute() once the attempt is over
                self.error = exc

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open and not self.eof.done():
            self.eof.set_result(None)

    def _reap(self) -> None:
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid:
            self.proc.returncode = os.waitstatus_to_exitcode(status)
            self.rusage = usage  # with its waited descendants
            self._watcher.remove(self.loop, self._pidfd)
            self.exited.set_result(None)

    def close(self) -> None:
        """Stop reading; the process must have exited (or be left to the sweep)."""
        if not self.exited.done():
            self._watcher.remove(self.loop, self._pidfd)
        os.close(self._pidfd)
        for fd in self._pipes.values():
            self._watcher.remove(self.loop, fd)
        self._pipes.clear()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if isinstance(pipe, int):
                os.close(pipe)
            elif pipe is not None:
                pipe.close()
        if isinstance(self.proc, _Spawned):
            self.proc.stdout = self.proc.stderr = None


class _Spawned:
    """A process started by `_spawn`: what `_Child` uses of a `Popen` (its pipes as fds)."""

    __slots__ = ("pid", "returncode", "stderr", "stdout")

    def __init__(self, pid: int, stdout: int, stderr: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdout: int | None = stdout
        self.stderr: int | None = stderr

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


class _LibcSpawn:
    """glibc's `posix_spawn` with the two file actions `os.posix_spawn` lacks (Python 3.11):
    a working directory (`addchdir_np`, glibc 2.29) and closing every other descriptor
    (`addclosefrom_np`, glibc 2.34), so that it starts a process exactly as `_popen` does
    (`Popen(..., cwd=, env=, stdin=DEVNULL, stdout=PIPE, stderr=PIPE, start_new_session=True)`,
    whose defaults close every other descriptor and reset SIGPIPE and SIGXFSZ), without
    `subprocess`'s Python: about 0.1-0.2 ms less CPU per process on this VM, most of it held
    under the GIL. Like Popen's, glibc's child is a vfork (CLONE_VM | CLONE_VFORK)."""

    _SIZE = 512  # bytes for posix_spawn_file_actions_t (80 on x86-64) or posix_spawnattr_t (336)
    SETSIGDEF, SETSID = 0x04, 0x80  # glibc's POSIX_SPAWN_* flags

    def __init__(self) -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        self._ctypes = ctypes
        self._spawn = libc.posix_spawn
        void, num = ctypes.c_void_p, ctypes.c_int
        self._spawn.argtypes = [ctypes.POINTER(num), ctypes.c_char_p, void, void, void, void]
        self._init = libc.posix_spawn_file_actions_init
        self._destroy = libc.posix_spawn_file_actions_destroy
        self._open = libc.posix_spawn_file_actions_addopen
        self._open.argtypes = [void, num, ctypes.c_char_p, num, num]
        self._dup2 = libc.posix_spawn_file_actions_adddup2
        self._chdir = libc.posix_spawn_file_actions_addchdir_np
        self._chdir.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self._closefrom = libc.posix_spawn_file_actions_addclosefrom_np
        # The attributes, shared (posix_spawn only reads them): a new session, and these
        # signals back to their defaults: SIGPIPE and SIGXFSZ (which Python ignores), as
        # Popen's restore_signals does, and glibc's two internal ones (32 and 33), which its
        # posix_spawn would otherwise leave ignored in the program (Popen's child gets them at
        # their defaults; glibc's `sigaddset` refuses them, so the set's bits are written
        # directly: signal n is bit n - 1). The signal mask is the calling thread's, as with
        # Popen.
        self._attr = ctypes.create_string_buffer(self._SIZE)
        bits = 0
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, 32, 33):
            bits |= 1 << (sig - 1)
        word = 8 * ctypes.sizeof(ctypes.c_ulong)
        sigs = (ctypes.c_ulong * (1024 // word))(
            *(bits >> (i * word) & (1 << word) - 1 for i in range(2))
        )
        if (
            libc.posix_spawnattr_init(self._attr)
            or libc.posix_spawnattr_setsigdefault(self._attr, sigs)
            or libc.posix_spawnattr_setflags(
                self._attr, ctypes.c_short(self.SETSIGDEF | self.SETSID)
            )
        ):
            raise OSError("posix_spawnattr setup failed")

    def __call__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> _Spawned | None:
        """Start `argv` (argv[0] an absolute path) in `cwd` with exactly `env`, stdin from
        /dev/null, stdout and stderr to new pipes; None where only Popen can (a NUL byte
        or a `=` in a name, which Popen refuses with its own error; a pipe on fd 0-2)."""
        ct = self._ctypes
        fsencode = os.fsencode
        args = [fsencode(arg) for arg in argv]
        envp = [fsencode(k) + b"=" + fsencode(v) for k, v in env.items()]
        if any("=" in k for k in env) or b"\0" in b"".join(args + envp):
            return None
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        if min(out_r, out_w, err_r, err_w) < 3:  # our own std fds are closed: Popen knows how
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            return None
        actions = ct.create_string_buffer(self._SIZE)
        pid = ct.c_int()
        try:
            where = os.fsencode(cwd)
            if (
                self._init(actions)
                or self._open(actions, 0, os.devnull.encode(), os.O_RDWR, 0)  # Popen's DEVNULL
                or self._dup2(actions, out_w, 1)
                or self._dup2(actions, err_w, 2)
                or self._chdir(actions, where)
                or self._closefrom(actions, 3)
            ):
                raise OSError(ct.get_errno(), "posix_spawn_file_actions setup failed")
            error = self._spawn(
                ct.byref(pid),
                args[0],
                ct.addressof(actions),
                ct.addressof(self._attr),
                (ct.c_char_p * (len(args) + 1))(*args, None),
                (ct.c_char_p * (len(envp) + 1))(*envp, None),
            )
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            self._destroy(actions)
            os.close(out_w)
            os.close(err_w)
        if error:
            os.close(out_r)
            os.close(err_r)
            # as Popen says it: the directory when that is what failed, else the program
            failed = cwd if not os.access(cwd, os.X_OK) else argv[0]
            raise OSError(error, os.strerror(error), str(failed))
        for fd in (out_r, err_r):  # our ends only (a fresh pipe end has no other flag to keep)
            fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK)
        return _Spawned(pid.value, out_r, err_r)


def _libc_spawn() -> _LibcSpawn | None:
    """The libc spawner, or None (not glibc 2.34+, or no ctypes): Popen it is."""
    try:
        return _LibcSpawn()
    except (ImportError, OSError, AttributeError):
        return None


_SPAWN: list[_LibcSpawn | None] = []  # made by the first LocalExecutor (on the loop)


def _popen(
    argv: list[str], cwd: Path, env: dict[str, str], tty: Pty | None
) -> Popen[bytes] | _Spawned:
    """Start the attempt in its own session (its pid is its group), killed if we die."""
    proc: Popen[bytes] | _Spawned | None = None
    if tty:  # the terminal's side: setsid --ctty makes it the session's controlling terminal
        proc = Popen(argv, cwd=cwd, env=env, stdin=tty.slave, stdout=tty.slave, stderr=tty.slave)
    else:
        spawn = _SPAWN[0] if _SPAWN else None
        if spawn is not None and os.path.isabs(argv[0]):  # a bare name: Popen's PATH search
            proc = spawn(argv, cwd, env)
        if proc is None:
            proc = Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=DEVNULL,
                stdout=PIPE,
                stderr=PIPE,
                start_new_session=True,
            )
    watchdog.watch(proc.pid)
    return proc


class _Reraise(Exception):
    """An error of `_launch` to raise from `execute` as it is."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


def _script_file(text: str) -> Path:
    """A private temporary file holding a stage script too long for an argument."""
    import tempfile  # rare: not loaded for every run

    fd, name = tempfile.mkstemp(prefix="pipedeck-", suffix=".sh")
    with os.fdopen(fd, "w") as file:
        file.write(text)
    return Path(name)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


async def _within(fut: asyncio.Future[None], timeout: float) -> None:
    """Wait for `fut` at most `timeout` seconds, without cancelling it."""
    if fut.done():
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(fut), timeout)


class LocalExecutor:
    """The Executor for `host: local`. Makes this process a child subreaper (Linux)."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = Path(workspace)
        self._shell = default_shell()
        self._bash = Path(self._shell[0]).name == "bash"  # one-command scripts skip it
        self._running: dict[int, dict[str, str]] = {}  # pgid -> marker
        self._gone: list[int] = []  # ended attempts' groups the watchdog still lists
        self._gone_lock = threading.Lock()
        self._gone_timer: asyncio.TimerHandle | None = None
        self._cwds: dict[str, Path] = {}  # a stage's cwd -> its path in the workspace
        become_subreaper()
        if not _SPAWN:
            _SPAWN.append(_libc_spawn())

    async def execute(self, stage: Stage, env: Mapping[str, str], sink: OutputSink) -> ExecResult:
        """Run `stage.run` with exactly `env`; see `engine.executors.base.Executor`."""
        cwd = self._cwds.get(stage.cwd)
        if cwd is None:
            cwd = self._cwds[stage.cwd] = self.workspace / stage.cwd
        marker = {key: env[key] for key in MARKER_KEYS if key in env}
        if not marker:  # called without the scheduler's variables: mark the attempt ourselves
            import uuid  # with platform, 2 ms: not for runs

            marker = {"PIPEDECK_EXEC_ID": uuid.uuid4().hex}
            env = {**env, **marker}
        tty = Pty(*TERMINALS.size) if stage.tty else None  # SPEC §10, engine/ptyproc.py
        cancelled: asyncio.CancelledError | None = None
        argv, script = [stage.run], None  # until launched
        try:
            with spawning():  # until own_child: a quick child's zombie is not an orphan's
                loop = asyncio.get_running_loop()
                spawn = loop.run_in_executor(None, self._launch, stage, env, cwd, tty)
                while not spawn.done():  # cancelled meanwhile: let it start, then kill it all
                    try:
                        await asyncio.wait({spawn})
                    except asyncio.CancelledError as exc:
                        cancelled = exc
                launched = spawn.result()
                if isinstance(launched, ExecResult):  # it could not start
                    if tty:
                        tty.close()
                    if cancelled is not None:
                        raise cancelled
                    return launched
                proc, argv, script = launched
                self._started(marker, proc.pid)
            child = _Child.follow(proc, sink)
        except (OSError, subprocess.SubprocessError, _Reraise) as exc:
            if isinstance(exc, _Reraise):
                if tty:
                    tty.close()
                raise exc.error from None
            for pid in [pid for pid, mark in self._running.items() if mark is marker]:
                await kill_tree(pid, marker, 0)  # it started, but could not be followed
                self._running.pop(pid)
                own_child(pid, owned=False)
                watchdog.forget(pid)
            if tty:
                tty.close()
            if script is not None:
                script.unlink(missing_ok=True)
            if cancelled is not None:
                raise cancelled from exc
            what = getattr(exc, "strerror", None) or str(exc)
            where = getattr(exc, "filename", None) or argv[0]
            return ExecResult(127, reason=f"cannot start the stage: {what}: {where}")
        pgid = child.proc.pid
        again = False  # a second cancel: no more grace
        key = (env.get("PIPEDECK_RUN_ID", ""), stage.id)
        try:
            try:
                if tty:
                    TERMINALS.open[key] = tty
                    await tty.read_into(child)  # type: ignore[arg-type]  # its two pipe methods
                if cancelled is None:
                    await asyncio.shield(child.exited)
                    await _within(child.eof, DRAIN)
            except asyncio.CancelledError as exc:
                cancelled = exc
            while True:  # a cancel during the kill skips the grace: SIGKILL now, still wait
                try:
                    await kill_tree(pgid, marker, 0 if again else stage.kill_grace)
                    await _within(child.exited, KILL_WAIT)
                    await _within(child.eof, DRAIN)
                    break
                except asyncio.CancelledError as exc:
                    cancelled, again = exc, True
            if cancelled is not None:
                raise cancelled
            if child.error is not None:
                raise child.error
            code = child.proc.returncode
            assert code is not None  # `exited` is done
        finally:
            self._running.pop(pgid, None)
            if child.rusage is not None:
                attempt_exited(marker, pgid, child.rusage)  # exact CPU time (`u`, history)
            if tty:
                TERMINALS.open.pop(key, None)
                tty.close()
            child.close()
            own_child(pgid, owned=False)
            self._forget(pgid)
            if script is not None:
                script.unlink(missing_ok=True)
        if code < 0:
            return ExecResult(128 - code, reason=f"killed by {_signal_name(-code)}")
        return ExecResult(code)

    def _launch(
        self, stage: Stage, env: Mapping[str, str], cwd: Path, tty: Pty | None
    ) -> tuple[Popen[bytes] | _Spawned, list[str], Path | None] | ExecResult:
        """In a worker thread: the attempt's program, arguments and environment (bash, or the
        program itself where bash would exec it: `direct_exec`, a dozen `access` and `stat`
        calls), then the process started (`_popen`); an ExecResult when it cannot start.
        First, the watchdog hears of the groups gone since the last start (`_forget`)."""
        if self._gone:
            self._tell_gone()
        if not os.path.isdir(cwd):
            return ExecResult(127, reason=f"working directory not found: {cwd}")
        script = None
        direct = self._bash and not stage.shell and direct_exec(stage.run, env, cwd)
        if direct:
            argv, environ = direct  # a new dict
        else:
            shell = stage.shell or self._shell
            if not shutil.which(shell[0], path=env.get("PATH", os.defpath)):
                reason = f"cannot start the stage: no such shell: {shell[0]}"
                return ExecResult(127, reason=reason)
            if len(stage.run.encode()) > MAX_ARG and not stage.shell:
                # A single argument is limited to 128 KiB (MAX_ARG_STRLEN): give bash a file.
                try:
                    script = _script_file(stage.run)
                except OSError as exc:  # raised from execute() as it is, not a failed start
                    raise _Reraise(exc) from None
                argv = [*shell[:-1], str(script)]
            else:
                argv = [*shell, stage.run]
            environ = dict(env)
        if tty:
            environ.setdefault("TERM", "xterm-256color")
            argv[0:0] = tty.spawn_options()[0]
        try:
            return _popen(argv, cwd, environ, tty), argv, script
        except BaseException as exc:
            if script is not None:
                script.unlink(missing_ok=True)
            if not isinstance(exc, OSError | subprocess.SubprocessError):
                raise
            what = getattr(exc, "strerror", None) or str(exc)
            where = getattr(exc, "filename", None) or argv[0]
            return ExecResult(127, reason=f"cannot start the stage: {what}: {where}")

    def _forget(self, pgid: int) -> None:
        """An attempt's group is gone: off the watchdog's list, told in one go with the next
        attempt's start (by its worker thread, `_launch`), or once no attempt runs, or within
        FORGET_WITHIN, whichever comes first: not one more write to the watchdog's pipe (a
        wake-up of its shell, on a loaded machine a switch to it) on the loop per attempt. A
        group is listed at most FORGET_WITHIN after it ended, far too soon for its number to
        be reused (the kernel hands out every other pid first), so the watchdog never kills
        another process group for it."""
        with self._gone_lock:
            self._gone.append(pgid)
        if not self._running:
            if self._gone_timer is not None:
                self._gone_timer.cancel()
                self._gone_timer = None
            self._tell_gone()
        elif self._gone_timer is None:
            loop = asyncio.get_running_loop()
            self._gone_timer = loop.call_later(FORGET_WITHIN, self._gone_timer_fired)

    def _gone_timer_fired(self) -> None:
        self._gone_timer = None
        self._tell_gone()

    def _tell_gone(self) -> None:
        """Tell the watchdog every group gone so far (any thread)."""
        with self._gone_lock:
            gone, self._gone = self._gone, []
        for pgid in gone:
            watchdog.forget(pgid)

    def _started(self, marker: dict[str, str], pid: int) -> None:
        """An attempt's process exists: ours to reap, and to kill on close()."""
        own_child(pid)
        self._running[pid] = marker

    async def close(self) -> None:
        """Kill every attempt still running, without grace."""
        for pgid, marker in list(self._running.items()):
            await kill_tree(pgid, marker, 0)
