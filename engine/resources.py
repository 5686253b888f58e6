"""CPU and memory of each running stage's whole process tree, sampled every second.

A stage's processes are the engine's descendants (it is their subreaper, so escaped ones come
back to it) that carry the stage's marker (PIPEDECK_RUN_ID / PIPEDECK_STAGE / PIPEDECK_ATTEMPT
in their environment), plus those in the process group of a marked one (a process that cleared
its environment). psutil reads the numbers: CPU% over the last interval (100 = one core), the
resident memory of the tree now and at its peak, and the CPU seconds the tree used (a process
that ended keeps what it used at its last sample).

`track_resources(run, history)` subscribes a monitor to a run: sampling runs in a thread while
stages run, and each attempt's peak memory and CPU time go to the history when it ends. Local
stages only: stages on SSH or Slurm hosts are not sampled.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from engine.events import Event, StageStatus
from engine.status import FINISHED, RUNNING

if TYPE_CHECKING:
    import psutil

    from engine.history import History
    from engine.run import Run

INTERVAL = 1.0
AttemptKey = tuple[str, int]  # (stage id, attempt)


@dataclass(frozen=True)
class Usage:
    """One attempt's process tree at the last sample."""

    cpu_percent: float  # over the last interval; 100 = one core busy
    rss: int  # resident bytes now
    peak_rss: int  # the most it held at any sample
    cpu_seconds: float  # user + system time used so far
    processes: int


class ResourceMonitor:
    """Samples the running attempts of one run (see the module docstring)."""

    _by_run: ClassVar[weakref.WeakValueDictionary[str, ResourceMonitor]] = (
        weakref.WeakValueDictionary()
    )
    """run id -> its monitor, for the views (the run's subscription keeps it alive)."""

    def __init__(self, run_id: str, history: History | None = None, interval: float = INTERVAL):
        self.run_id = run_id
        self.history = history
        self.interval = interval
        self.usage: dict[str, Usage] = {}  # stage id -> its current attempt's usage
        self._active: dict[str, int] = {}  # stage id -> attempt, running now
        self._cpu: dict[AttemptKey, dict[tuple[int, float], float]] = {}  # per process CPU
        self._peak: dict[AttemptKey, int] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None  # sampling while attempts run
        self._last = time.monotonic()
        ResourceMonitor._by_run[run_id] = self

    @classmethod
    def of_run(cls, run_id: str) -> ResourceMonitor | None:
        """The monitor of a run, when one was started for it."""
        return cls._by_run.get(run_id)

    def on_event(self, event: Event) -> None:
        """A run subscriber: follow which attempts run; record each one's totals at its end."""
        if not isinstance(event, StageStatus) or event.run_id != self.run_id:
            return
        if event.status == RUNNING:
            with self._lock:
                self._active[event.stage] = event.attempt
            self._start()
        elif event.status in FINISHED and event.stage in self._active:
            with self._lock:
                attempt = self._active.pop(event.stage)
            self._record(event.stage, attempt)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._last = time.monotonic()
                self._thread = threading.Thread(target=self._loop, name="pipedeck-resources")
                self._thread.daemon = True
                self._thread.start()

    def _loop(self) -> None:
        """Sample every interval while some attempt runs, then end (the next one restarts it)."""
        while True:
            self.sample()
            with self._lock:
                if not self._active:
                    self._thread = None
                    return
            time.sleep(self.interval)

    def sample(self) -> None:
        """Measure every running attempt once (called by the thread; callable directly)."""
        import psutil

        with self._lock:
            active = dict(self._active)
        now = time.monotonic()
        wall, self._last = max(now - self._last, 1e-6), now
        trees = _stage_processes(self.run_id, active)
        usage: dict[str, Usage] = {}
        for sid, procs in trees.items():
            key = (sid, active[sid])
            seen = self._cpu.setdefault(key, {})
            rss, busy = 0, 0.0
            for proc in procs:
                try:
                    with proc.oneshot():
                        ident = (proc.pid, proc.create_time())
                        times = proc.cpu_times()
                        mem = proc.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                cpu = times.user + times.system
                busy += cpu - seen.get(ident, 0.0)
                seen[ident] = cpu
                rss += mem
            if rss:  # an attempt no sample saw (it ended first, or runs elsewhere) records nothing
                self._peak[key] = max(self._peak.get(key, 0), rss)
            peak = self._peak.get(key, 0)
            usage[sid] = Usage(
                cpu_percent=max(0.0, busy / wall * 100),
                rss=rss,
                peak_rss=peak,
                cpu_seconds=sum(seen.values()),
                processes=len(procs),
            )
        self.usage = usage

    def totals(self, stage: str, attempt: int) -> tuple[int | None, float | None]:
        """(peak resident bytes, CPU seconds) of an attempt, as far as sampled."""
        key = (stage, attempt)
        if key not in self._peak:
            return None, None
        return self._peak[key], sum(self._cpu.get(key, {}).values())

    def _record(self, stage: str, attempt: int) -> None:
        peak, cpu = self.totals(stage, attempt)
        if self.history is not None and peak is not None:
            self.history.record_resources(self.run_id, stage, attempt, peak, cpu)
        self.usage = {sid: u for sid, u in self.usage.items() if sid != stage}


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
    monitor = ResourceMonitor(run.run_id, history)
    run.subscribe(monitor.on_event)
    return monitor
