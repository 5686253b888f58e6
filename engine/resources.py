"""CPU and memory of each running stage's whole process tree, sampled every second.

Local stages: a stage's processes are the engine's descendants (it is their subreaper, so
escaped ones come back to it) that carry the stage's marker (PIPEDECK_RUN_ID / PIPEDECK_STAGE /
PIPEDECK_ATTEMPT in their environment), plus those in the process group of a marked one (a
process that cleared its environment). psutil reads the numbers, in a thread.

Remote stages: the host's executor measures them (`MeasuresAttempts`), one command per host per
interval over its pooled connection, never a connection of its own: an SSH host reads /proc once
for all its attempts (`engine.executors.ssh`), a Slurm host asks `sstat` once for all its jobs
(`engine.executors.slurm`). That runs on the event loop, one task per host while it runs stages.

Either way `usage` holds, per running stage: CPU% over the last interval (100 = one core), the
resident memory of the tree now and at its peak, and the CPU seconds the tree used (a process that
ended keeps what it used at its last sample). When an attempt ends its peak memory and CPU time go
to the history. A local attempt's CPU time is then exact: the executor reports the rusage of its
main process, which holds every descendant that was waited for, however short-lived
(`attempt_exited`); only processes that left its tree (reparented to the engine) still count as
last sampled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, ClassVar, NamedTuple, Protocol, runtime_checkable

from engine.events import Event, StageStatus
from engine.spec import LOCAL
from engine.status import FINISHED, RUNNING

if TYPE_CHECKING:
    import psutil

    from engine.history import History
    from engine.hosts import Hosts
    from engine.run import Run

INTERVAL = 1.0
FIRST_SAMPLE = 0.1  # seconds after the first attempt starts (see ResourceMonitor._loop)
AttemptKey = tuple[str, int]  # (stage id, attempt)


class Usage(NamedTuple):
    """One attempt's process tree at the last sample."""

    cpu_percent: float  # over the last interval; 100 = one core busy
    rss: int  # resident bytes now
    peak_rss: int  # the most it held at any sample
    cpu_seconds: float  # user + system time used so far
    processes: int


class Proc(NamedTuple):
    """One process of an attempt (or one step of a Slurm job) as a sample saw it."""

    key: str  # unique within the attempt across samples: "pid@start", a job step's id
    cpu: float  # user + system seconds it used so far (its own, not its waited children's)
    rss: int  # resident bytes now
    pid: int = 0  # 0: not a process of this machine (a job step)
    ppid: int = 0


@runtime_checkable
class MeasuresAttempts(Protocol):
    """A remote executor that measures the attempts it runs."""

    async def processes(self, run_id: str, stages: Mapping[str, int]) -> dict[str, list[Proc]]:
        """The processes of each of `stages` (stage id -> attempt) of `run_id` running on its
        host now, with one command over the connection it already has (none: {})."""
        ...


class _Tally:
    """What the samples of one attempt saw, and its exact end where the executor knows it."""

    __slots__ = ("cpu", "leader", "parent", "peak", "pids", "sampled")

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}  # process key -> CPU at its last sample
        self.parent: dict[int, int] = {}  # pid -> parent pid, as last seen
        self.pids: dict[str, int] = {}  # process key -> pid
        self.peak = 0
        self.sampled = False
        self.leader: tuple[int, float] | None = None  # (pid, its CPU with waited children) at exit

    def add(self, procs: Iterable[Proc], wall: float) -> Usage:
        """Account one sample taken `wall` seconds after the previous one."""
        rss, busy, count = 0, 0.0, 0
        for proc in procs:
            busy += proc.cpu - self.cpu.get(proc.key, 0.0)
            self.cpu[proc.key] = proc.cpu
            if proc.pid:
                self.pids[proc.key] = proc.pid
                self.parent[proc.pid] = proc.ppid
            rss += proc.rss
            count += 1
        if rss:  # an attempt no sample saw (it ended first) records no memory
            self.sampled = True
            self.peak = max(self.peak, rss)
        return Usage(max(0.0, busy / wall * 100), rss, self.peak, sum(self.cpu.values()), count)

    def cpu_seconds(self) -> float:
        """The attempt's CPU time: its main process's at exit (which holds every descendant it
        waited for) plus what the samples saw of processes outside that tree; else as sampled."""
        if self.leader is None:
            return sum(self.cpu.values())
        leader, total = self.leader
        return total + sum(
            cpu for key, cpu in self.cpu.items() if not self._under(self.pids.get(key), leader)
        )

    def _under(self, pid: int | None, leader: int) -> bool:
        """True when `pid` was last seen in `leader`'s tree (its time is in the leader's)."""
        for _ in range(len(self.parent) + 1):  # a bound: pid reuse could make a cycle
            if pid is None or pid <= 1:
                return False
            if pid == leader:
                return True
            pid = self.parent.get(pid)
        return False


class ResourceMonitor:
    """Samples the running attempts of one run (see the module docstring)."""

    _by_run: ClassVar[weakref.WeakValueDictionary[str, ResourceMonitor]] = (
        weakref.WeakValueDictionary()
    )
    """run id -> its monitor, for the views (the run's subscription keeps it alive)."""

    def __init__(
        self,
        run_id: str,
        history: History | None = None,
        interval: float = INTERVAL,
        hosts: Hosts | None = None,
    ) -> None:
        """`hosts`: where the executors of remote stages are (without it, only local stages
        are measured)."""
        self.run_id = run_id
        self.history = history
        self.interval = interval
        self.hosts = hosts
        self._usage: dict[str, Usage] = {}  # stage id -> its current attempt's usage
        self._active: dict[str, int] = {}  # stage id -> attempt, running here now
        self._remote: dict[str, dict[str, int]] = {}  # host -> stage id -> attempt, running
        self._tallies: dict[AttemptKey, _Tally] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None  # sampling while local attempts run
        self._waiting: asyncio.TimerHandle | None = None  # the timer that starts the thread
        self._tasks: dict[str, asyncio.Task[None]] = {}  # host -> its sampling task
        self._last = time.monotonic()
        ResourceMonitor._by_run[run_id] = self

    @classmethod
    def of_run(cls, run_id: str) -> ResourceMonitor | None:
        """The monitor of a run, when one was started for it."""
        return cls._by_run.get(run_id)

    @property
    def usage(self) -> dict[str, Usage]:
        """stage id -> its running attempt's usage at the last sample."""
        with self._lock:
            return dict(self._usage)

    def on_event(self, event: Event) -> None:
        """A run subscriber: follow which attempts run where; record each one's totals at its
        end."""
        if not isinstance(event, StageStatus) or event.run_id != self.run_id:
            return
        sid = event.stage
        if event.status == RUNNING:
            if event.host == LOCAL:
                with self._lock:
                    self._active[sid] = event.attempt
                self._start()
            else:
                self._remote.setdefault(event.host, {})[sid] = event.attempt
                self._start_remote(event.host)
        elif event.status in FINISHED:
            with self._lock:
                attempt = self._active.pop(sid, None)
                if attempt is None:
                    attempt = self._remote.get(event.host, {}).pop(sid, None)
                self._usage.pop(sid, None)
            if attempt is not None:
                self._record(sid, attempt)

    def attempt_exited(self, stage: str, attempt: int, pid: int, cpu_seconds: float) -> None:
        """A local attempt's main process `pid` ended having used `cpu_seconds` with every
        descendant it waited for (its rusage): the attempt's CPU time becomes exact. (Its
        ru_maxrss is no peak: it counts the pipedeck process the child was forked from.)"""
        with self._lock:
            self._tallies.setdefault((stage, attempt), _Tally()).leader = (pid, cpu_seconds)

    # -- local -------------------------------------------------------------------------------

    def _start(self) -> None:
        """Sample from FIRST_SAMPLE from now on: an attempt done sooner is measured by its
        rusage alone (`attempt_exited`), without psutil imported, /proc read or a thread
        started for it. On an event loop, a timer waits; elsewhere the thread does."""
        first = min(self.interval, FIRST_SAMPLE)
        with self._lock:
            if self._thread is not None or self._waiting is not None:
                return
            self._last = time.monotonic()
            try:
                self._waiting = asyncio.get_running_loop().call_later(first, self._begin)
                return
            except RuntimeError:  # no loop here
                pass
        self._begin(first)

    def _begin(self, first: float = 0.0) -> None:
        """Start the sampling thread, which samples after `first` seconds, unless no attempt
        runs any more."""
        with self._lock:
            self._waiting = None
            if self._thread is not None or not self._active:
                return
            self._thread = threading.Thread(
                target=self._loop, args=(first,), name="pipedeck-resources", daemon=True
            )
            self._thread.start()

    def _loop(self, first: float) -> None:
        """Sample every interval while some attempt runs, then end (the next one restarts it)."""
        time.sleep(first)
        while True:
            with self._lock:
                if not self._active:
                    self._thread = None
                    return
            self.sample()
            time.sleep(self.interval)

    def sample(self) -> None:
        """Measure every running local attempt once (called by the thread; callable directly)."""
        with self._lock:
            active = dict(self._active)
        now = time.monotonic()
        wall, self._last = max(now - self._last, 1e-6), now
        self._account(active, _local_processes(self.run_id, active), wall)

    def _account(
        self, active: Mapping[str, int], procs: Mapping[str, list[Proc]], wall: float
    ) -> None:
        """Add one sample of the `active` attempts (stage id -> attempt) to their tallies."""
        with self._lock:
            running = {
                **self._active,
                **{s: a for r in self._remote.values() for s, a in r.items()},
            }
            for sid, found in procs.items():
                if running.get(sid) != active[sid]:
                    continue  # it ended while we sampled: its totals are recorded
                tally = self._tallies.setdefault((sid, active[sid]), _Tally())
                self._usage[sid] = tally.add(found, wall)

    # -- remote ------------------------------------------------------------------------------

    def _start_remote(self, host: str) -> None:
        if self.hosts is None or host in self._tasks:
            return
        executor = self.hosts.executor(host)
        if isinstance(executor, MeasuresAttempts):
            self._tasks[host] = asyncio.get_running_loop().create_task(
                self._remote_loop(host, executor), name=f"pipedeck-resources-{host}"
            )

    async def _remote_loop(self, host: str, executor: MeasuresAttempts) -> None:
        """Measure the host's attempts every interval while it runs some of this run's."""
        last = time.monotonic()
        try:
            while True:
                await asyncio.sleep(self.interval)
                active = dict(self._remote.get(host, {}))
                if not active:
                    return
                with contextlib.suppress(OSError):  # unreachable now: the next interval tells
                    procs = await executor.processes(self.run_id, active)
                    now = time.monotonic()
                    wall, last = max(now - last, 1e-6), now
                    self._account(active, {s: procs[s] for s in active if s in procs}, wall)
        finally:  # at once, not in a done callback: a stage starting now gets a new task
            self._tasks.pop(host, None)

    # -- totals ------------------------------------------------------------------------------

    def totals(self, stage: str, attempt: int) -> tuple[int | None, float | None]:
        """(peak resident bytes, CPU seconds) of an attempt, as far as known."""
        with self._lock:
            tally = self._tallies.get((stage, attempt))
            if tally is None or not (tally.sampled or tally.leader):
                return None, None
            return (tally.peak if tally.sampled else None), tally.cpu_seconds()

    def _record(self, stage: str, attempt: int) -> None:
        peak, cpu = self.totals(stage, attempt)
        if self.history is not None and cpu is not None:
            self.history.record_resources(self.run_id, stage, attempt, peak, cpu)


def attempt_exited(marker: Mapping[str, str], pid: int, usage: resource.struct_rusage) -> None:
    """For the local executor: the main process `pid` of the attempt `marker` names
    (PIPEDECK_RUN_ID, PIPEDECK_STAGE, PIPEDECK_ATTEMPT) was reaped with `usage` (os.wait4's).
    A run without a monitor ignores it."""
    run_id, stage = marker.get("PIPEDECK_RUN_ID"), marker.get("PIPEDECK_STAGE")
    monitor = ResourceMonitor.of_run(run_id) if run_id else None
    if monitor is not None and stage:
        attempt = int(marker.get("PIPEDECK_ATTEMPT", "1"))
        monitor.attempt_exited(stage, attempt, pid, usage.ru_utime + usage.ru_stime)


def _local_processes(run_id: str, active: dict[str, int]) -> dict[str, list[Proc]]:
    """The live processes of each active stage: marked descendants and their group mates."""
    import psutil

    found: dict[str, list[Proc]] = {sid: [] for sid in active}
    for sid, procs in _stage_processes(run_id, active).items():
        for proc in procs:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    key = f"{proc.pid}@{proc.create_time()}"
                    found[sid].append(
                        Proc(
                            key,
                            times.user + times.system,
                            proc.memory_info().rss,
                            proc.pid,
                            proc.ppid(),
                        )
                    )
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
    return found


def _stage_processes(run_id: str, active: dict[str, int]) -> dict[str, list[psutil.Process]]:
    """The live processes of each active stage: marked descendants and their group mates."""
    import psutil

    found: dict[str, list[psutil.Process]] = {sid: [] for sid in active}
    if not active:
        return found
    try:
        descendants = psutil.Process(os.getpid()).children(recursive=True)
    except psutil.Error:
        return found
    by_group: dict[int, str] = {}
    unmarked: list[tuple[psutil.Process, int]] = []
    for proc in descendants:
        try:
            env = proc.environ()
            group = os.getpgid(proc.pid)
        except (psutil.Error, OSError):
            continue
        sid = env.get("PIPEDECK_STAGE")
        if env.get("PIPEDECK_RUN_ID") == run_id and sid in active:
            if env.get("PIPEDECK_ATTEMPT", str(active[sid])) == str(active[sid]):
                found[sid].append(proc)
                by_group.setdefault(group, sid)
        elif "PIPEDECK_RUN_ID" not in env:
            unmarked.append((proc, group))
    for proc, group in unmarked:  # a cleared environment: its process group tells
        if group in by_group:
            found[by_group[group]].append(proc)
    return found


def track_resources(run: Run, history: History | None = None) -> ResourceMonitor:
    """Sample `run`'s stages while they run; record each attempt's totals in `history`."""
    monitor = ResourceMonitor(run.run_id, history, hosts=run.hosts)
    run.subscribe(monitor.on_event)
    return monitor
