"""The run history: SQLite in `.pipedeck/history.db` (SPEC §6).

Every write is one short `BEGIN IMMEDIATE` transaction on a WAL database with a busy timeout, so
several pipedeck processes can record into one project at once. The same file holds what the
stage cache needs (last successful fingerprints, the file-hash stat cache) and recorded metrics,
and the steps of GitHub Actions jobs (each step's last status, `steps`).

An older database opens as it is and gains what it lacks: `_SCHEMA` only creates what is missing
and `_ADDED_COLUMNS` adds columns, once per raise of `_SCHEMA_VERSION` (SQLite's user_version).

The run recorder never touches SQLite on the caller's thread: its writes go to one writer thread
per history, which applies what has queued up in one transaction. The writer waits up to
`BATCH_WAIT` after a write arrives for more to join it (a thousand quick stages: a few dozen
transactions, not two thousand), unless a reader is waiting or the write begins or ends a run;
so a crash (SIGKILL) can lose the last `BATCH_WAIT` of a run's events, never the run itself.
Reads first wait for the queued writes (`flush`) of every history of the same database in this
process, so a reader sees every event recorded before it asked, whichever connection recorded it.

Failures are contained:
- a damaged database (SQLite says it is malformed or not a database) is moved aside as
  `history.db.damaged-<time>` (nothing is deleted), one line says so through `warn`, and a fresh
  database takes its place; the operation that found the damage then runs on the fresh one.
- a full disk: a small reserve file beside the database (`history.db-reserve`, 128 KiB) is
  released so that the run's end can still be recorded; queued writes that still fail stay
  queued and are tried again with the next ones (and at exit). `warn` says so, once.
- a state directory that is a file, read-only or full: a HistoryError naming the path and cause.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import queue
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from engine.events import Event, HostStatus, RunFinished, RunStarted, StageStatus, StepStatus
from engine.fserrors import StateError, cause
from engine.status import CACHED, FINISHED, RUNNING

INTERRUPTED = "interrupted"
UNFINISHED = ("pending", "waiting", "queued", "running")
RAN = ("succeeded", "failed", "timed_out", "cancelled", "lost", INTERRUPTED)
# Attempts that ran to their own end: the durations that estimates and sparklines are made of
# (a cancelled, lost, timed-out or interrupted attempt was cut short: no usual length).
WHOLE = ("succeeded", "failed")
RESERVE_BYTES = 128 * 1024
MAX_LIMIT = 1 << 62  # SQLite's LIMIT is a signed 64-bit integer; larger means "all"
_CORRUPT = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
_FULL = 13  # SQLITE_FULL
_UNWRITTEN_LIMIT = 100_000  # queued writes kept for a retry while the disk is full
BATCH_WAIT = 0.02  # seconds a queued write may wait for others to share its transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, pipeline TEXT, status TEXT NOT NULL, started REAL, ended REAL,
    duration REAL, trigger TEXT, exit_code INTEGER, pid INTEGER, pid_start INTEGER);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started);
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL, stage TEXT NOT NULL, attempt INTEGER NOT NULL, status TEXT NOT NULL,
    started REAL, ended REAL, exit_code INTEGER, host TEXT, fingerprint TEXT, why TEXT,
    reason TEXT, peak_rss INTEGER, cpu_seconds REAL, job_id TEXT, node TEXT);
CREATE INDEX IF NOT EXISTS attempts_run ON attempts (run_id, stage, attempt);
CREATE INDEX IF NOT EXISTS attempts_stage ON attempts (stage, started);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, stage TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,
    ts REAL NOT NULL, PRIMARY KEY (run_id, stage, name));
CREATE INDEX IF NOT EXISTS metrics_stage ON metrics (stage, ts);
CREATE TABLE IF NOT EXISTS successes (
    pipeline TEXT NOT NULL, stage TEXT NOT NULL, fingerprint TEXT NOT NULL, run_id TEXT,
    parts TEXT NOT NULL, outputs TEXT NOT NULL, PRIMARY KEY (pipeline, stage));
CREATE TABLE IF NOT EXISTS syncs (
    run_id TEXT NOT NULL, host TEXT NOT NULL, stage TEXT, files INTEGER, bytes INTEGER,
    deleted INTEGER, method TEXT);
CREATE INDEX IF NOT EXISTS syncs_run ON syncs (run_id);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL, stage TEXT NOT NULL, attempt INTEGER NOT NULL, step INTEGER NOT NULL,
    name TEXT NOT NULL, status TEXT NOT NULL, started REAL, duration REAL, exit_code INTEGER,
    reason TEXT, allowed INTEGER, PRIMARY KEY (run_id, stage, attempt, step));
CREATE TABLE IF NOT EXISTS input_sets (digest TEXT PRIMARY KEY, files TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, sha256 TEXT);
"""
# Columns added after the first release: (table, column, type), added to older databases.
_ADDED_COLUMNS = (
    ("attempts", "peak_rss", "INTEGER"),
    ("attempts", "cpu_seconds", "REAL"),
    ("attempts", "job_id", "TEXT"),
    ("attempts", "node", "TEXT"),
    ("runs", "file", "TEXT"),  # the pipeline file (see `pipeline_file`): what a query is of
)
# Raised whenever _ADDED_COLUMNS or _SCHEMA grows (3: syncs, 4: runs.file, 5: steps).
_SCHEMA_VERSION = 5
_RUN_COLUMNS = (
    "run_id, pipeline, status, started, ended, duration, trigger, exit_code, pid, file, pid_start"
)
_ATTEMPT_COLUMNS = (
    "run_id, stage, attempt, status, started, ended, exit_code, host, fingerprint, why, reason, "
    "peak_rss, cpu_seconds, job_id, node"
)
_STEP_COLUMNS = "stage, attempt, step, name, status, started, duration, exit_code, reason, allowed"

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], None]


class HistoryError(StateError):
    """The history database cannot be used; the message names the path and the cause."""


def warn_stderr(message: str) -> None:
    """The default `warn`: one line on stderr."""
    print(f"pipedeck: {message}", file=sys.stderr, flush=True)


def _code(err: sqlite3.Error) -> int:
    return (getattr(err, "sqlite_errorcode", 0) or 0) & 0xFF


@dataclass(frozen=True)
class RunRow:
    """One recorded run."""

    run_id: str
    pipeline: str | None
    status: str
    started: float | None
    ended: float | None
    duration: float | None
    trigger: str | None
    exit_code: int | None
    pid: int | None
    file: str | None = None  # the pipeline file, relative to the project (`pipeline_file`)


@dataclass(frozen=True)
class AttemptRow:
    """One recorded stage attempt; `why` says why it ran (or why it was cached)."""

    run_id: str
    stage: str
    attempt: int
    status: str
    started: float | None
    ended: float | None
    exit_code: int | None
    host: str | None
    fingerprint: str | None
    why: str | None
    reason: str | None
    peak_rss: int | None = None  # bytes, the most its process tree held at once
    cpu_seconds: float | None = None  # user + system CPU time of its process tree
    job_id: str | None = None  # the Slurm job of a Slurm attempt
    node: str | None = None  # the node that Slurm job ran on

    @property
    def ran(self) -> bool:
        """True when the attempt really ran (not cached, skipped or cancelled before starting)."""
        return self.status in RAN and self.started is not None and self.started != self.ended

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, when both are known."""
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


@dataclass(frozen=True)
class SyncRow:
    """One workspace sync to an SSH host that changed something: for which stage, how many
    files and bytes it sent, how many remote files it deleted, and how (rsync or tar)."""

    host: str
    stage: str | None
    files: int
    bytes: int
    deleted: int
    method: str


@dataclass(frozen=True)
class StepRow:
    """One recorded step of a GitHub Actions job attempt (SPEC §11): its last status, when it
    started (when it was skipped, for a step that never started) and how long it took. `allowed`:
    a failure `continue-on-error` allows; `reason`: why it was skipped, cancelled or lost."""

    stage: str
    attempt: int
    step: int  # 0-based, as in `step_status`
    name: str
    status: str
    started: float | None
    duration: float | None
    exit_code: int | None
    reason: str | None
    allowed: bool = False

    @property
    def shown_status(self) -> str:
        """The status as people read it: `failed (allowed)` for an allowed failure."""
        return f"{self.status} (allowed)" if self.allowed else self.status


class Success(NamedTuple):
    """The last successful fingerprint of a stage, with what it was made of and its outputs."""

    fingerprint: str
    run_id: str | None
    parts: dict[str, Any]
    outputs: dict[str, list[Any]]  # path -> [sha256, size]


def _of_file(table: str) -> str:
    """SQL: the row of `table` is of a run of the pipeline file given twice as parameters
    (None: of any pipeline). A lookup per row, so `ORDER BY ... LIMIT` stops early."""
    return f"? IS NULL OR (SELECT file FROM runs WHERE runs.run_id = {table}.run_id) = ?"


def pipeline_file(path: Path, state_dir: Path) -> str:
    """What a pipeline's history is kept under: its file, relative to the directory holding
    `state_dir` (`ci.yaml`, `.github/workflows/ci.yml`). Several pipeline files share one
    `.pipedeck/`; their names may collide, their files cannot."""
    path, root = path.resolve(), state_dir.resolve().parent
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def process_start(pid: int) -> int | None:
    """The kernel start time of `pid` (clock ticks since boot), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def pid_alive(pid: int | None, started: int | None) -> bool:
    """True when process `pid` exists and, when its start time is known, is the same process."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started is None or process_start(pid) in (None, started)


class History:
    """The history database of one project. Thread-safe; cheap to create.

    `warn` receives one-line notices (a damaged database moved aside, a full disk).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        timeout: float = 30.0,
        warn: Callable[[str], None] = warn_stderr,
    ) -> None:
        self.path = Path(path)
        self.warn = warn
        self._timeout = timeout
        self._lock = threading.RLock()
        self._jobs: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._pending = 0  # queued jobs not yet applied
        self._idle = threading.Condition()
        self._hurry = threading.Event()  # a reader waits, or a run starts or ends: write now
        self._writer: threading.Thread | None = None
        self._unwritten: list[Job] = []  # jobs a full disk refused, tried again with the next
        self._warned: set[str] = set()
        self._marking = False  # mark_interrupted_soon() started
        self._memory = str(path) == ":memory:"
        new = not self._memory and not self.path.exists()
        try:
            self._open_retrying(time.monotonic() + timeout)
        except HistoryError:
            if new:  # a full disk, say: leave no empty database behind
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(OSError):
                        if os.path.getsize(f"{self.path}{suffix}") == 0:
                            os.unlink(f"{self.path}{suffix}")
            raise
        self._keep_reserve()

    def _open_retrying(self, deadline: float) -> None:
        while True:
            try:
                self._open()
                return
            except sqlite3.DatabaseError as err:
                # Two processes creating the database at once: switching to WAL can answer
                # "locked" at once, without the busy handler; try again until the timeout.
                if "locked" in str(err) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                if _code(err) not in _CORRUPT:
                    raise HistoryError(self._explain(err)) from None
                self._move_aside(err)
                return

    def _open(self) -> None:
        if not self._memory:
            try:
                os.makedirs(self.path.parent, exist_ok=True)
            except OSError as err:
                raise HistoryError(self._explain(err)) from None
        try:
            self._db = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as err:
            raise HistoryError(self._explain(err)) from None
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._once(self._create)
            self._inode = None if self._memory else os.stat(self.path).st_ino
        except BaseException:
            self._db.close()
            raise

    @staticmethod
    def _create(db: sqlite3.Connection) -> None:
        if db.execute("PRAGMA user_version").fetchone()[0] >= _SCHEMA_VERSION:
            return
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)
        for table, column, kind in _ADDED_COLUMNS:
            have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def _explain(self, err: sqlite3.Error | OSError) -> str:
        """`cannot use the run history PATH: CAUSE`, with a cause a person can act on."""
        if isinstance(err, OSError):
            why = cause(err, self.path.parent)
        elif _code(err) == _FULL:
            why = f"no space left on device: {self.path.parent}"
        elif "readonly" in str(err) or (
            not self._memory and not os.access(self.path.parent, os.W_OK)
        ):
            why = f"{self.path.parent} is read-only (no permission, or a read-only file system)"
        else:
            why = str(err)
        return f"cannot use the run history {self.path}: {why}"

    @classmethod
    def for_state_dir(cls, state_dir: Path, warn: Callable[[str], None] = warn_stderr) -> History:
        """The history of the project whose `.pipedeck/` is `state_dir` (a new connection)."""
        return cls(Path(state_dir) / "history.db", warn=warn)

    def close(self) -> None:
        """Apply the queued writes and close the connection."""
        self.flush()
        with self._lock:
            self._db.close()

    # -- failures -------------------------------------------------------------------------

    @property
    def _reserve(self) -> Path:
        return self.path.with_name(self.path.name + "-reserve")

    def _keep_reserve(self) -> None:
        """Make sure the reserve file exists (when there is room for it)."""
        if self._memory or self._reserve.exists():
            return
        for size in (RESERVE_BYTES, RESERVE_BYTES // 2, RESERVE_BYTES // 4):  # a nearly full disk
            try:
                with open(self._reserve, "xb") as f:
                    os.posix_fallocate(f.fileno(), 0, size)
                return
            except FileExistsError:
                return
            except OSError:
                self._reserve.unlink(missing_ok=True)

    def _release_reserve(self) -> bool:
        """Delete the reserve file to make room; False when there was none."""
        try:
            self._reserve.unlink()
        except OSError:
            return False
        return True

    def _move_aside(self, err: sqlite3.Error) -> None:
        """Move a damaged database aside (never delete it) and open a fresh one."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            try:
                same = os.stat(self.path).st_ino == getattr(self, "_inode", None)
            except OSError:
                same = False
            if same or not hasattr(self, "_inode"):
                stamp = time.strftime("%Y%m%d-%H%M%S")
                aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
                n = 1
                while aside.exists():
                    n += 1
                    aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
                for suffix in ("", "-wal", "-shm"):
                    source = Path(f"{self.path}{suffix}")
                    if source.exists():
                        os.replace(source, f"{aside}{suffix}")
                self.warn(f"the run history {self.path} is damaged ({err}): moved it to "
                          f"{aside.name} and started a new one")  # fmt: skip
            self._open()  # another connection already moved it: use the fresh one

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warn(message)

    # -- transactions ---------------------------------------------------------------------

    def _once(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(db)` in one `BEGIN IMMEDIATE` transaction: committed, or rolled back on error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db)
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            return result

    def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(db)` in one write transaction. A full disk releases the reserve and tries again;
        a damaged database is moved aside and `fn` runs on the fresh one. Raises HistoryError."""
        for last in (False, False, True):
            try:
                return self._once(fn)
            except sqlite3.DatabaseError as err:
                if not last and _code(err) == _FULL and self._release_reserve():
                    continue
                if not last and _code(err) in _CORRUPT:
                    self._move_aside(err)
                    continue
                raise HistoryError(self._explain(err)) from None
        raise AssertionError("unreachable")

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        for history in list(_open_histories):  # whichever connection of ours recorded it
            if history is not self and history.path.absolute() == self.path.absolute():
                history.flush()
        self.flush()
        with self._lock:
            try:
                return self._db.execute(sql, tuple(args)).fetchall()
            except sqlite3.DatabaseError as err:
                if _code(err) not in _CORRUPT:
                    raise HistoryError(self._explain(err)) from None
                self._move_aside(err)
                return self._db.execute(sql, tuple(args)).fetchall()

    # -- the writer thread ----------------------------------------------------------------

    def submit(self, job: Job, hurry: bool = False) -> None:
        """Queue `job(db)` for the writer thread, which applies queued jobs in one transaction
        (`hurry`: without waiting `BATCH_WAIT` for more). Never blocks; errors are reported
        through `warn`."""
        with self._idle:
            self._pending += 1
            if hurry:
                self._hurry.set()
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name=f"history-writer {self.path}", daemon=True
                )
                self._writer.start()
                _open_histories.add(self)
        self._jobs.put(job)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the queued writes are applied (or failed); False on timeout."""
        if threading.current_thread() is self._writer:
            return True
        with self._idle:
            if self._pending:
                self._hurry.set()
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _write_loop(self) -> None:
        while True:
            batch = [self._jobs.get()]
            self._hurry.wait(BATCH_WAIT)
            with contextlib.suppress(queue.Empty):
                while len(batch) < 10_000:
                    batch.append(self._jobs.get_nowait())
            self._apply(batch)
            with self._idle:
                self._pending -= len(batch)
                if not self._pending:
                    self._hurry.clear()
                self._idle.notify_all()

    def _apply(self, batch: list[Job]) -> None:
        jobs = [*self._unwritten, *batch]

        def apply_all(db: sqlite3.Connection) -> None:
            for job in jobs:
                job(db)

        try:
            self.transaction(apply_all)
            self._unwritten = []
        except HistoryError as err:
            self._unwritten = jobs[-_UNWRITTEN_LIMIT:]
            self._warn_once(str(err), f"{err}; the run goes on, not fully recorded")
        except Exception as err:  # a fault of ours must not kill the writer
            self._unwritten = []
            self._warn_once(repr(err), f"cannot record in the run history {self.path}: {err!r}")

    # -- recording ------------------------------------------------------------------------

    def recorder(
        self,
        run_id: str,
        trigger: str = "manual",
        fingerprints: Mapping[str, str] | None = None,
        file: str | None = None,
    ) -> Callable[[Event], None]:
        """A `Run` subscriber that records the run and its attempts through the writer thread.

        The `reason` of a `running` (or `cached`) StageStatus is stored as the attempt's `why`;
        `fingerprints` (e.g. `StageCache.fingerprints`) supplies each stage's fingerprint;
        `file` is the run's pipeline file (`pipeline_file`), which scopes the queries.
        """
        fps = fingerprints if fingerprints is not None else {}
        pid = os.getpid()
        pid_start = process_start(pid)

        def record(event: Event) -> None:
            if isinstance(event, RunStarted):
                self.submit(partial(_run_started, run_id, event.pipeline, file, trigger,
                                    event.ts, pid, pid_start), hurry=True)  # fmt: skip
            elif isinstance(event, StageStatus):
                if event.status in FINISHED or event.status == RUNNING:
                    self.submit(partial(_stage_status, event, fps.get(event.stage)))
            elif isinstance(event, RunFinished):
                self.submit(partial(_run_finished, run_id, event), hurry=True)
            elif isinstance(event, StepStatus):
                self.submit(partial(_step_status, event))
            elif isinstance(event, HostStatus) and event.synced is not None:
                self.submit(partial(_synced, event))

        return record

    def record_resources(
        self,
        run_id: str,
        stage: str,
        attempt: int,
        peak_rss: int | None = None,
        cpu_seconds: float | None = None,
    ) -> None:
        """Record an attempt's peak memory (bytes) and CPU time (seconds) so far; each only
        grows. Queued for the writer thread: safe to call from the event loop."""

        def job(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE attempts SET peak_rss=coalesce(max(peak_rss, ?), ?, peak_rss), "
                "cpu_seconds=max(coalesce(cpu_seconds, 0), coalesce(?, 0)) WHERE rowid="
                "(SELECT max(rowid) FROM attempts WHERE run_id=? AND stage=? AND attempt=?)",
                (peak_rss, peak_rss, cpu_seconds, run_id, stage, attempt),  # unknown stays NULL
            )

        self.submit(job)

    def mark_interrupted_soon(self) -> None:
        """`mark_interrupted()` in a background thread, once per history: never blocks the caller
        (the event loop) on SQLite, /proc or the sweep of leftover processes."""
        with self._idle:
            if self._marking:
                return
            self._marking = True
        threading.Thread(
            target=self._mark_quietly, name="pipedeck-interrupted", daemon=True
        ).start()

    def _mark_quietly(self) -> None:
        try:
            self.mark_interrupted()
        except HistoryError as err:
            self._warn_once(str(err), str(err))

    def mark_interrupted(self) -> list[str]:
        """Mark runs left `running` by a dead process as `interrupted`; sweep their processes.

        Returns the interrupted run ids. Call once when pipedeck starts (in a worker thread:
        it reads /proc and waits for processes). On a full disk the marking waits for later.
        """
        candidates = self._query("SELECT run_id, pid, pid_start FROM runs WHERE status='running'")
        dead = [run_id for run_id, pid, start in candidates if not pid_alive(pid, start)]
        if not dead:
            return []
        try:
            self.transaction(partial(_interrupt, dead))
        except HistoryError as err:
            self._warn_once(str(err), str(err))
            return []
        _sweep(dead)
        return dead

    # -- reading --------------------------------------------------------------------------

    def runs(self, limit: int | None = 20, file: str | None = None) -> list[RunRow]:
        """The most recent runs (of the pipeline `file`; None: of every pipeline), newest first."""
        rows = self._query(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE ? IS NULL OR file=? "
            "ORDER BY started DESC, rowid DESC LIMIT ?",
            (file, file, -1 if limit is None else min(limit, MAX_LIMIT)),
        )
        return [_run_row(row) for row in rows]

    def run(self, run_id: str) -> RunRow | None:
        """One run, or None when unknown."""
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id=?", (run_id,))
        return _run_row(rows[0]) if rows else None

    def attempts(self, run_id: str) -> list[AttemptRow]:
        """Every recorded attempt of a run, in the order they were first recorded."""
        rows = self._query(
            f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE run_id=? ORDER BY rowid", (run_id,)
        )
        attempts = [AttemptRow(*row) for row in rows]
        if any(a.status in UNFINISHED for a in attempts):  # like its run, when that reads so
            run = self.run(run_id)
            if run is not None and run.status == INTERRUPTED:
                return [dataclasses.replace(a, status=INTERRUPTED) if a.status in UNFINISHED
                        else a for a in attempts]  # fmt: skip
        return attempts

    def steps(self, run_id: str) -> list[StepRow]:
        """The recorded steps of a run's GitHub Actions jobs, by job, attempt and step. A step
        left running by an interrupted run reads `interrupted`, like its attempt."""
        rows = self._query(
            f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id=? ORDER BY stage, attempt, step",
            (run_id,),
        )
        steps = [_step_row(row) for row in rows]
        if any(s.status in UNFINISHED for s in steps):
            run = self.run(run_id)
            if run is not None and run.status == INTERRUPTED:
                return [dataclasses.replace(s, status=INTERRUPTED) if s.status in UNFINISHED
                        else s for s in steps]  # fmt: skip
        return steps

    def syncs(self, run_id: str) -> list[SyncRow]:
        """The workspace syncs a run made to its hosts, in order."""
        rows = self._query(
            "SELECT host, stage, files, bytes, deleted, method FROM syncs WHERE run_id=? "
            "ORDER BY rowid",
            (run_id,),
        )
        return [SyncRow(*row) for row in rows]

    def latest_run_id(self, file: str | None = None) -> str | None:
        """The id of the most recently started run (of the pipeline `file`), or None."""
        rows = self.runs(1, file)
        return rows[0].run_id if rows else None

    def durations(self, stage: str, limit: int = 20, file: str | None = None) -> list[float]:
        """Durations of the stage's last attempts (in runs of the pipeline `file`) that ran to
        their own end (`WHOLE`), oldest first: what estimates and sparklines show."""
        whole = ",".join(f"'{s}'" for s in WHOLE)
        rows = self._query(
            f"SELECT ended - started FROM attempts WHERE stage=? AND ({_of_file('attempts')}) "
            f"AND status IN ({whole}) AND ended > started ORDER BY started DESC LIMIT ?",
            (stage, file, file, min(limit, MAX_LIMIT)),
        )
        return [max(0.0, row[0]) for row in reversed(rows)]

    # -- metrics --------------------------------------------------------------------------

    def record_metrics(
        self, run_id: str, stage: str, values: Mapping[str, float], ts: float
    ) -> None:
        """Store a stage's metric values for a run (replacing earlier ones of that run)."""

        def store(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM metrics WHERE run_id=? AND stage=?", (run_id, stage))
            db.executemany(
                "INSERT INTO metrics (run_id, stage, name, value, ts) VALUES (?, ?, ?, ?, ?)",
                [(run_id, stage, name, value, ts) for name, value in values.items()],
            )

        self.transaction(store)

    def metric_stages(self, file: str | None = None) -> list[str]:
        """Every stage id that has recorded metrics (in runs of the pipeline `file`)."""
        rows = self._query(
            f"SELECT DISTINCT stage FROM metrics WHERE {_of_file('metrics')} ORDER BY stage",
            (file, file),
        )
        return [row[0] for row in rows]

    def metrics(
        self, stage: str, runs: int, file: str | None = None
    ) -> list[tuple[str, dict[str, float]]]:
        """The stage's metrics in its last `runs` recorded runs (of the pipeline `file`), oldest
        first."""
        recent = self._query(
            f"SELECT run_id, max(ts) AS t FROM metrics WHERE stage=? AND ({_of_file('metrics')}) "
            "GROUP BY run_id ORDER BY t DESC LIMIT ?",
            (stage, file, file, min(runs, MAX_LIMIT)),
        )
        result = []
        for run_id, _ in reversed(recent):
            rows = self._query(
                "SELECT name, value FROM metrics WHERE run_id=? AND stage=? ORDER BY name",
                (run_id, stage),
            )
            result.append((run_id, dict(rows)))
        return result

    # -- cache storage --------------------------------------------------------------------

    def successes(self, pipeline: str) -> dict[str, Success]:
        """The last success of every stage of a pipeline (its `pipeline_file`), by stage id."""
        rows = self._query(
            "SELECT stage, fingerprint, run_id, parts, outputs FROM successes WHERE pipeline=?",
            (pipeline,),
        )
        return {
            stage: Success(fp, run_id, json.loads(parts), json.loads(outputs))
            for stage, fp, run_id, parts, outputs in rows
        }

    def record_success(
        self, pipeline: str, stage: str, success: Success, input_files: Mapping[str, str] | None
    ) -> None:
        """Store a stage's last success and its input files (path -> sha256; None when that
        set is already stored), which are kept once per digest for explaining changes."""
        digest = success.parts.get("inputs") if input_files is not None else None

        def store(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO successes VALUES (?, ?, ?, ?, ?, ?)",
                (pipeline, stage, success.fingerprint, success.run_id,
                 json.dumps(success.parts, sort_keys=True), json.dumps(success.outputs)),
            )  # fmt: skip
            if digest:
                db.execute(
                    "INSERT OR IGNORE INTO input_sets VALUES (?, ?)",
                    (digest, json.dumps(input_files, separators=(",", ":"))),
                )
            db.execute(
                "DELETE FROM input_sets WHERE digest NOT IN "
                "(SELECT json_extract(parts, '$.inputs') FROM successes "
                "WHERE json_extract(parts, '$.inputs') IS NOT NULL)"
            )

        self.transaction(store)

    def input_set(self, digest: str) -> dict[str, str] | None:
        """The input files (path -> sha256) recorded under a digest, or None."""
        rows = self._query("SELECT files FROM input_sets WHERE digest=?", (digest,))
        return json.loads(rows[0][0]) if rows else None

    def file_hashes(self) -> dict[str, tuple[int, int, int, str]]:
        """The stat cache: workspace-relative path -> (size, mtime_ns, inode, sha256)."""
        rows = self._query("SELECT path, size, mtime_ns, inode, sha256 FROM file_hashes")
        return {path: (size, mtime, inode, sha) for path, size, mtime, inode, sha in rows}

    def store_file_hashes(
        self, entries: Mapping[str, tuple[int, int, int, str]], gone: Iterable[str] = ()
    ) -> None:
        """Add or replace stat-cache entries, and delete those of `gone` paths."""

        def store(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?, ?)",
                [(path, *entry) for path, entry in entries.items()],
            )
            db.executemany("DELETE FROM file_hashes WHERE path=?", [(p,) for p in gone])

        self.transaction(store)


def _run_row(row: tuple[Any, ...]) -> RunRow:
    """A run as recorded; one left `running` by a dead process reads `interrupted` even when
    that could not be written yet (a full disk)."""
    *fields, pid_start = row
    run = RunRow(*fields)
    if run.status == RUNNING and not pid_alive(run.pid, pid_start):
        return dataclasses.replace(run, status=INTERRUPTED)
    return run


def _step_row(row: tuple[Any, ...]) -> StepRow:
    stage, attempt, step, name, status, started, duration, exit_code, reason, allowed = row
    return StepRow(stage, attempt, step, name, status, started, duration, exit_code, reason,
                   bool(allowed))  # fmt: skip


def _run_started(
    run_id: str, pipeline: str, file: str | None, trigger: str, ts: float, pid: int,
    pid_start: int | None, db: sqlite3.Connection,
) -> None:  # fmt: skip
    db.execute(
        "INSERT INTO runs (run_id, pipeline, file, status, started, trigger, pid, pid_start) "
        "VALUES (?, ?, ?, 'running', ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
        "status='running', ended=NULL, duration=NULL, exit_code=NULL, pid=excluded.pid, "
        "pid_start=excluded.pid_start",
        (run_id, pipeline, file, ts, trigger, pid, pid_start),
    )


def _run_finished(run_id: str, event: RunFinished, db: sqlite3.Connection) -> None:
    db.execute(
        "UPDATE runs SET status=?, ended=?, duration=?, exit_code=? WHERE run_id=?",
        (event.status, event.ts, event.duration, event.exit_code, run_id),
    )


def _synced(ev: HostStatus, db: sqlite3.Connection) -> None:
    synced = ev.synced or {}
    fields = ("stage", "files", "bytes", "deleted", "method")
    db.execute(
        "INSERT INTO syncs (run_id, host, stage, files, bytes, deleted, method) "
        "VALUES (?,?,?,?,?,?,?)",
        (ev.run_id, ev.host, *(synced.get(k) for k in fields)),
    )


def _stage_status(ev: StageStatus, fingerprint: str | None, db: sqlite3.Connection) -> None:
    """Start an attempt row on `running` and finish it on the status that follows; a finished
    status without a running attempt (cached, skipped...) is a row of its own. Statuses before
    a stage starts (pending, queued, waiting) are not recorded."""
    ended = ev.ts if ev.status in FINISHED else None
    started = ev.ts if ended is None else (ended - ev.duration if ev.duration else None)
    why = ev.reason if ev.status in (RUNNING, CACHED) else None
    reason = None if why is not None else ev.reason
    current = db.execute(
        "SELECT rowid FROM attempts WHERE run_id=? AND stage=? AND attempt=? "
        "AND status=? ORDER BY rowid DESC LIMIT 1",
        (ev.run_id, ev.stage, ev.attempt, RUNNING),
    ).fetchone()
    if current is None:
        db.execute(
            "INSERT INTO attempts (run_id, stage, attempt, status, started, ended, "
            "exit_code, host, fingerprint, why, reason, job_id, node) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (ev.run_id, ev.stage, ev.attempt, ev.status, started or ended, ended,
             ev.exit_code, ev.host, fingerprint, why, reason, ev.job_id, ev.node),
        )  # fmt: skip
    else:
        db.execute(
            "UPDATE attempts SET status=?, ended=?, exit_code=?, host=?, "
            "why=coalesce(?, why), reason=?, job_id=coalesce(?, job_id), "
            "node=coalesce(?, node) WHERE rowid=?",
            (ev.status, ended, ev.exit_code, ev.host, why, reason, ev.job_id, ev.node, current[0]),
        )


def _step_status(ev: StepStatus, db: sqlite3.Connection) -> None:
    """A step's row: made by its first status (`running`, or `skipped` for a step that never
    started), updated by the following ones; it keeps when the step started."""
    started = ev.ts - ev.duration if ev.duration is not None and ev.status != RUNNING else ev.ts
    db.execute(
        f"INSERT INTO steps ({_STEP_COLUMNS}, run_id) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT (run_id, stage, attempt, step) DO UPDATE SET name=excluded.name, "
        "status=excluded.status, started=coalesce(steps.started, excluded.started), "
        "duration=excluded.duration, exit_code=excluded.exit_code, reason=excluded.reason, "
        "allowed=excluded.allowed",
        (ev.stage, ev.attempt, ev.step, ev.name, ev.status, started, ev.duration, ev.exit_code,
         ev.reason, 1 if ev.allowed else 0, ev.run_id),
    )  # fmt: skip


def _interrupt(dead: list[str], db: sqlite3.Connection) -> None:
    """Mark the runs `dead` and their unfinished attempts interrupted."""
    marks = ",".join("?" * len(dead))
    unfinished = ",".join(f"'{s}'" for s in UNFINISHED)
    db.execute(
        f"UPDATE runs SET status='{INTERRUPTED}', "
        f"ended=coalesce((SELECT max(coalesce(ended, started)) FROM attempts a "
        f"WHERE a.run_id=runs.run_id), started) WHERE run_id IN ({marks})",
        dead,
    )
    db.execute("UPDATE runs SET duration=ended-started WHERE run_id IN (" + marks + ")", dead)
    for table in ("attempts", "steps"):
        db.execute(
            f"UPDATE {table} SET status='{INTERRUPTED}' "
            f"WHERE run_id IN ({marks}) AND status IN ({unfinished})",
            dead,
        )


_open_histories: weakref.WeakSet[History] = weakref.WeakSet()  # those with a writer thread
_shared: dict[Path, History] = {}
_shared_lock = threading.Lock()


def open_history(state_dir: Path, warn: Callable[[str], None] | None = None) -> History:
    """The project's shared history (one connection and one writer thread per database in this
    process, however many runs use it); `warn` replaces its notice handler when given."""
    db = (Path(state_dir) / "history.db").absolute()
    with _shared_lock:
        history = _shared.get(db)
        if history is None:
            history = _shared[db] = History(db, warn=warn or warn_stderr)
        elif warn is not None:
            history.warn = warn
    return history


@atexit.register
def _flush_all() -> None:
    """At exit, apply what the writer threads still hold (they are daemons)."""
    for history in list(_open_histories):
        history.flush(timeout=10)
        if history._unwritten:  # a full disk: one last try
            history.submit(lambda db: None)
            history.flush(timeout=10)


def _sweep(run_ids: Iterable[str]) -> None:
    """Kill the processes interrupted runs left behind (marked with their PIPEDECK_RUN_ID)."""
    from engine import procs

    for run_id in run_ids:
        procs.sweep({"PIPEDECK_RUN_ID": run_id})
