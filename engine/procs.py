"""Process-tree control on Linux: subreaper, finding a stage's processes, killing them all.

A stage's processes are recognised by a *marker*: KEY=VALUE pairs of its environment
(PIPEDECK_RUN_ID, PIPEDECK_STAGE, PIPEDECK_ATTEMPT), which every descendant inherits even after
leaving the stage's process group (setsid, double fork) — the same idea as GitHub Actions'
RUNNER_TRACKING_ID. A process that clears its environment (`env -i`) escapes the marker; it is
still signalled with the process group when it stayed in it.

Reaping: with the engine as child subreaper, orphaned stage processes become its children, and
their zombies must be reaped. `os.waitpid(-1, ...)` would steal the exit status of asyncio's own
children, so only specific pids are reaped: those seen carrying the marker, and zombie children
in a session other than the engine's (stages run in their own sessions; the engine's other
subprocesses stay in its session), except the pids `own_child` protects (the stages' main
processes, which asyncio waits for).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator, Mapping

PR_SET_CHILD_SUBREAPER = 36
POLL = 0.05
KILL_WAIT = 2.0  # how long SIGKILLed processes get to disappear before we give up on them

_prctl = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, AttributeError):
        _prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded before any fork


_subreaper = False


def become_subreaper() -> bool:
    """Make orphaned descendants reparent to this process (Linux); False where unsupported."""
    global _subreaper
    _subreaper = _subreaper or (
        _prctl is not None and _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    )
    return _subreaper


def _pids() -> list[int]:
    try:
        names = os.listdir("/proc")
    except FileNotFoundError:  # not Linux: only process-group signals work there
        return []
    return [int(name) for name in names if name.isdigit()]


def _read(path: str) -> bytes:
    """A whole /proc file (os-level reads: no Python file object per process)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _children() -> list[int]:
    """Our child pids (zombies included) from /proc/self/task/*/children, else every pid."""
    try:
        return [
            int(pid)
            for task in os.listdir("/proc/self/task")
            for pid in _read(f"/proc/self/task/{task}/children").split()
        ]
    except OSError:  # kernel without CONFIG_PROC_CHILDREN
        return _pids()


_leader: tuple[int, int] | None = None  # (our pid, an open fd of our main thread's children)


def _orphans_home() -> list[int] | None:
    """The children of our main thread (the thread group leader), where the kernel puts every
    process orphaned to us as subreaper (`find_new_reaper` picks the reaper's first live
    thread, the leader); None when they cannot be read. One `pread` of a file kept open, not
    a `listdir` and an open, two reads and a close per thread (one in ~20 us on this VM)."""
    global _leader
    pid = os.getpid()
    try:
        if _leader is None or _leader[0] != pid:  # first use, or in a forked child of ours
            _leader = None
            _leader = (pid, os.open(f"/proc/{pid}/task/{pid}/children", os.O_RDONLY))
        data = os.pread(_leader[1], 65536, 0)
    except OSError:  # no CONFIG_PROC_CHILDREN, or the leader has exited
        return None
    if len(data) == 65536:  # thousands of children: perhaps more than one read
        return None
    return [int(child) for child in data.split()]


def _carries(pid: int, needles: list[bytes]) -> bool:
    try:
        environ = _read(f"/proc/{pid}/environ")
    except OSError:
        return False
    if needles[0] not in environ:
        return False
    entries = set(environ.split(b"\0"))
    return all(n in entries for n in needles)


def _needles(marker: Mapping[str, str]) -> list[bytes]:
    if not marker:
        raise ValueError("an empty marker would match every process")
    return [f"{key}={value}".encode() for key, value in marker.items()]


def left_behind(pgid: int, marker: Mapping[str, str], children: list[int] | None = None) -> bool:
    """Whether an attempt whose main process `pgid` has exited may have left a process.

    As subreaper, everything a stage leaves behind is reparented to us: its group is still
    alive, or one of our children carries its marker. Checking those few children spares a
    scan of every process on the machine for the usual attempt, which leaves nothing.
    `children`: our child pids, when just read.
    """
    if _group_alive(pgid):
        return True
    if not _subreaper:
        return bool(find_marked(marker))
    needles = _needles(marker)
    pids = _children() if children is None else children
    return any(_carries(pid, needles) for pid in pids if pid not in _OWNED)


def find_marked(marker: Mapping[str, str]) -> list[int]:
    """Live processes (not this one) whose environment holds every KEY=VALUE of `marker`.

    Zombies and processes we may not inspect have no readable environment and are not listed.
    """
    needles = _needles(marker)
    me = os.getpid()
    return [pid for pid in _pids() if pid != me and _carries(pid, needles)]


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _reap(pids: set[int]) -> None:
    """Reap those of `pids` that are our zombies; drop the ones that are gone for good."""
    for pid in list(pids):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child: gone, or still with another parent
            done = 0 if os.path.exists(f"/proc/{pid}") else pid
        if done:
            pids.discard(pid)


_OWNED: set[int] = set()
_spawning = 0  # children being started whose pid `own_child` does not protect yet


def own_child(pid: int, owned: bool = True) -> None:
    """Protect (or stop protecting) a child that another waiter (asyncio) reaps."""
    if owned:
        _OWNED.add(pid)
    else:
        _OWNED.discard(pid)


@contextlib.contextmanager
def spawning() -> Iterator[None]:
    """Hold `reap_orphans` off while a child starts: between its fork and `own_child` a quick
    child may already be a zombie, and reaping it would steal asyncio's exit status."""
    global _spawning
    _spawning += 1
    try:
        yield
    finally:
        _spawning -= 1


def reap_orphans(children: list[int] | None = None) -> list[int]:
    """Reap our zombie children from other sessions, unless protected; return their pids.

    These are stage processes that were orphaned to us (subreaper) and exited on their own.
    `children`: our child pids, when just read.
    """
    if _spawning:
        return []  # the next call reaps them
    strays = [pid for pid in (_children() if children is None else children) if pid not in _OWNED]
    if not strays:
        return []
    me, session = os.getpid(), os.getsid(0)
    reaped = []
    for pid in strays:
        try:
            fields = _read(f"/proc/{pid}/stat").rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == b"Z" and int(fields[1]) == me and int(fields[3]) != session:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    reaped.append(pid)
    return reaped


def _group_alive(pgid: int) -> bool:
    """True while any process (a zombie too) is in the process group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _scan(marker: Mapping[str, str]) -> list[int]:
    """`find_marked` in a worker thread: it reads every process's environment."""
    return await asyncio.to_thread(find_marked, marker)


async def _kill_now(pgid: int, marker: Mapping[str, str], seen: set[int]) -> list[int]:
    """SIGKILL the group and every marked process; return the marked pids found."""
    found = await _scan(marker)
    seen.update(found)
    _signal_group(pgid, signal.SIGKILL)
    _signal(found, signal.SIGKILL)
    return found


async def kill_tree(pgid: int, marker: Mapping[str, str], grace: float) -> None:
    """SIGTERM the group and every marked process, wait up to `grace`, then SIGKILL the rest.

    `pgid` is the stage's main process (a session leader); it is signalled but not reaped.
    Cancelling this coroutine skips the rest of the grace period: everything found is SIGKILLed
    once and CancelledError propagates (call again with no grace to wait for them to go).
    Never blocks the event loop: every wait is an asyncio sleep.
    """
    # One look for both questions: the main thread's children, where orphans land (the
    # attempts' own processes, children of the threads that started them, are not strays).
    children = _orphans_home()
    if children is None:
        children = _children()
    if not left_behind(pgid, marker, children):  # the usual end
        reap_orphans(children)
        return
    seen = set(await _scan(marker))
    try:
        _signal_group(pgid, signal.SIGTERM)
        # Escapees get it too, once; processes started later (say, a TERM handler's) don't.
        _signal([pid for pid in seen if _pgid(pid) != pgid], signal.SIGTERM)
        deadline = time.monotonic() + grace
        pause = POLL / 10  # most stages end at once on SIGTERM: look again soon, then less often
        while True:
            alive = await _scan(marker)
            seen.update(alive)
            seen.discard(pgid)
            _reap(seen)
            if not alive or time.monotonic() >= deadline:
                break
            await asyncio.sleep(pause)
            pause = min(POLL, pause * 2)
    except asyncio.CancelledError:  # no more waiting: kill what we know of before propagating
        _signal_group(pgid, signal.SIGKILL)
        _signal(seen, signal.SIGKILL)
        raise
    deadline = time.monotonic() + KILL_WAIT
    while await _kill_now(pgid, marker, seen) and time.monotonic() < deadline:
        await asyncio.sleep(POLL / 5)
    seen.discard(pgid)
    while True:  # killed orphans become our zombies a moment after their parent dies
        _reap(seen)
        if not seen or time.monotonic() >= deadline:
            break
        await asyncio.sleep(POLL / 5)
    reap_orphans()


def kill_marked(marker: Mapping[str, str]) -> list[int]:
    """SIGKILL every process carrying `marker` once, without waiting; return their pids."""
    found = find_marked(marker)
    _signal(found, signal.SIGKILL)
    return found


def sweep(marker: Mapping[str, str]) -> list[int]:
    """SIGKILL every process carrying `marker` until none is left; return their pids.

    Blocking, so never on the event loop (the next engine start sweeps what a crashed one left,
    from a thread); gives up after `KILL_WAIT` seconds on processes that won't die.
    """
    killed: set[int] = set()
    deadline = time.monotonic() + KILL_WAIT
    while found := find_marked(marker):
        _signal(found, signal.SIGKILL)
        killed.update(found)
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL / 5)
    _reap(set(killed))
    return sorted(killed)
