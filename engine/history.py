"""The run history: SQLite in `.pipedeck/history.db` (SPEC §6).

Every write is one short `BEGIN IMMEDIATE` transaction on a WAL database with a busy timeout, so
several pipedeck processes can record into one project at once. The same file holds what the
stage cache needs (last successful fingerprints, the file-hash stat cache) and recorded metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import PipedeckError
from engine.events import (
    CACHED,
    FINISHED,
    RUNNING,
    Event,
    RunFinished,
    RunStarted,
    StageStatus,
)

INTERRUPTED = "interrupted"
UNFINISHED = ("pending", "waiting", "queued", "running")
RAN = ("succeeded", "failed", "timed_out", "cancelled", "lost", INTERRUPTED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, pipeline TEXT, status TEXT NOT NULL, started REAL, ended REAL,
    duration REAL, trigger TEXT, exit_code INTEGER, pid INTEGER, pid_start INTEGER);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started);
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL, stage TEXT NOT NULL, attempt INTEGER NOT NULL, status TEXT NOT NULL,
    started REAL, ended REAL, exit_code INTEGER, host TEXT, fingerprint TEXT, why TEXT,
    reason TEXT);
CREATE INDEX IF NOT EXISTS attempts_run ON attempts (run_id, stage, attempt);
CREATE INDEX IF NOT EXISTS attempts_stage ON attempts (stage, started);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL, stage TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,
    ts REAL NOT NULL, PRIMARY KEY (run_id, stage, name));
CREATE INDEX IF NOT EXISTS metrics_stage ON metrics (stage, ts);
CREATE TABLE IF NOT EXISTS successes (
    pipeline TEXT NOT NULL, stage TEXT NOT NULL, fingerprint TEXT NOT NULL, run_id TEXT,
    parts TEXT NOT NULL, outputs TEXT NOT NULL, PRIMARY KEY (pipeline, stage));
CREATE TABLE IF NOT EXISTS input_sets (digest TEXT PRIMARY KEY, files TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, sha256 TEXT);
"""


class HistoryError(PipedeckError):
    """The history database cannot be opened or is not a pipedeck history."""


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
class Success:
    """The last successful fingerprint of a stage, with what it was made of and its outputs."""

    fingerprint: str
    run_id: str | None
    parts: dict[str, Any]
    outputs: dict[str, list[Any]]  # path -> [sha256, size]


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
    """The history database of one project. Thread-safe; cheap to create."""

    def __init__(self, path: Path | str, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._open(timeout)
                return
            except (sqlite3.Error, OSError) as err:
                # Two processes creating the database at once: switching to WAL can answer
                # "locked" at once, without the busy handler; try again until the timeout.
                if "locked" in str(err) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise HistoryError(
                    f"{self.path}: cannot use the run history ({err}); "
                    "move it away to start a new one"
                ) from None

    def _open(self, timeout: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            with self.write() as db:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> History:
        """The history of the project whose `.pipedeck/` is `state_dir`."""
        return cls(Path(state_dir) / "history.db")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (`BEGIN IMMEDIATE`), committed on success, rolled back on error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    # -- recording ------------------------------------------------------------------------

    def recorder(
        self, run_id: str, trigger: str = "manual", fingerprints: Mapping[str, str] | None = None
    ) -> Callable[[Event], None]:
        """A `Run` subscriber that records the run and its attempts.

        The `reason` of a `running` (or `cached`) StageStatus is stored as the attempt's `why`;
        `fingerprints` (e.g. `StageCache.fingerprints`) supplies each stage's fingerprint.
        """
        fps = fingerprints if fingerprints is not None else {}

        def record(event: Event) -> None:
            if isinstance(event, RunStarted):
                self._run_started(run_id, event.pipeline, trigger, event.ts)
            elif isinstance(event, StageStatus):
                self._stage_status(event, fps.get(event.stage))
            elif isinstance(event, RunFinished):
                with self.write() as db:
                    db.execute(
                        "UPDATE runs SET status=?, ended=?, duration=?, exit_code=? WHERE run_id=?",
                        (event.status, event.ts, event.duration, event.exit_code, run_id),
                    )

        return record

    def _run_started(self, run_id: str, pipeline: str, trigger: str, ts: float) -> None:
        pid = os.getpid()
        with self.write() as db:
            db.execute(
                "INSERT INTO runs (run_id, pipeline, status, started, trigger, pid, pid_start) "
                "VALUES (?, ?, 'running', ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
                "status='running', ended=NULL, duration=NULL, exit_code=NULL, pid=excluded.pid, "
                "pid_start=excluded.pid_start",
                (run_id, pipeline, ts, trigger, pid, process_start(pid)),
            )

    def _stage_status(self, ev: StageStatus, fingerprint: str | None) -> None:
        """Start an attempt row on `running` and finish it on the status that follows; a
        finished status without a running attempt (cached, skipped...) is a row of its own.
        Statuses before a stage starts (pending, queued, waiting) are not recorded."""
        if ev.status not in FINISHED and ev.status != RUNNING:
            return
        ended = ev.ts if ev.status in FINISHED else None
        started = ev.ts if ended is None else (ended - ev.duration if ev.duration else None)
        why = ev.reason if ev.status in (RUNNING, CACHED) else None
        reason = None if why is not None else ev.reason
        with self.write() as db:
            current = db.execute(
                "SELECT rowid FROM attempts WHERE run_id=? AND stage=? AND attempt=? "
                "AND status=? ORDER BY rowid DESC LIMIT 1",
                (ev.run_id, ev.stage, ev.attempt, RUNNING),
            ).fetchone()
            if current is None:
                db.execute(
                    "INSERT INTO attempts (run_id, stage, attempt, status, started, ended, "
                    "exit_code, host, fingerprint, why, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (ev.run_id, ev.stage, ev.attempt, ev.status, started or ended, ended,
                     ev.exit_code, ev.host, fingerprint, why, reason),
                )  # fmt: skip
            else:
                db.execute(
                    "UPDATE attempts SET status=?, ended=?, exit_code=?, host=?, "
                    "why=coalesce(?, why), reason=? WHERE rowid=?",
                    (ev.status, ended, ev.exit_code, ev.host, why, reason, current[0]),
                )

    def mark_interrupted(self) -> list[str]:
        """Mark runs left `running` by a dead process as `interrupted`; sweep their processes.

        Returns the interrupted run ids. Call once when pipedeck starts.
        """
        candidates = self._query("SELECT run_id, pid, pid_start FROM runs WHERE status='running'")
        dead = [run_id for run_id, pid, start in candidates if not pid_alive(pid, start)]
        if not dead:
            return []
        marks = ",".join("?" * len(dead))
        unfinished = ",".join(f"'{s}'" for s in UNFINISHED)
        with self.write() as db:
            db.execute(
                f"UPDATE runs SET status='{INTERRUPTED}', "
                f"ended=coalesce((SELECT max(coalesce(ended, started)) FROM attempts a "
                f"WHERE a.run_id=runs.run_id), started) WHERE run_id IN ({marks})",
                dead,
            )
            db.execute(
                "UPDATE runs SET duration=ended-started WHERE run_id IN (" + marks + ")", dead
            )
            db.execute(
                f"UPDATE attempts SET status='{INTERRUPTED}' "
                f"WHERE run_id IN ({marks}) AND status IN ({unfinished})",
                dead,
            )
        _sweep(dead)
        return dead

    # -- reading --------------------------------------------------------------------------

    def runs(self, limit: int | None = 20) -> list[RunRow]:
        """The most recent runs, newest first."""
        rows = self._query(
            "SELECT run_id, pipeline, status, started, ended, duration, trigger, exit_code, pid "
            "FROM runs ORDER BY started DESC, rowid DESC LIMIT ?",
            (-1 if limit is None else limit,),
        )
        return [RunRow(*row) for row in rows]

    def run(self, run_id: str) -> RunRow | None:
        """One run, or None when unknown."""
        rows = self._query(
            "SELECT run_id, pipeline, status, started, ended, duration, trigger, exit_code, pid "
            "FROM runs WHERE run_id=?",
            (run_id,),
        )
        return RunRow(*rows[0]) if rows else None

    def attempts(self, run_id: str) -> list[AttemptRow]:
        """Every recorded attempt of a run, in the order they were first recorded."""
        rows = self._query(
            "SELECT run_id, stage, attempt, status, started, ended, exit_code, host, fingerprint,"
            " why, reason FROM attempts WHERE run_id=? ORDER BY rowid",
            (run_id,),
        )
        return [AttemptRow(*row) for row in rows]

    def latest_run_id(self) -> str | None:
        """The id of the most recently started run, or None when there is none."""
        rows = self._query("SELECT run_id FROM runs ORDER BY started DESC, rowid DESC LIMIT 1")
        return rows[0][0] if rows else None

    def durations(self, stage: str, limit: int = 20) -> list[float]:
        """Durations of the stage's last attempts that really ran, oldest first (sparklines)."""
        ran = ",".join(f"'{s}'" for s in RAN)
        rows = self._query(
            f"SELECT ended - started FROM attempts WHERE stage=? AND status IN ({ran}) "
            "AND ended > started ORDER BY started DESC LIMIT ?",
            (stage, limit),
        )
        return [max(0.0, row[0]) for row in reversed(rows)]

    # -- metrics --------------------------------------------------------------------------

    def record_metrics(
        self, run_id: str, stage: str, values: Mapping[str, float], ts: float
    ) -> None:
        """Store a stage's metric values for a run (replacing earlier ones of that run)."""
        with self.write() as db:
            db.execute("DELETE FROM metrics WHERE run_id=? AND stage=?", (run_id, stage))
            db.executemany(
                "INSERT INTO metrics (run_id, stage, name, value, ts) VALUES (?, ?, ?, ?, ?)",
                [(run_id, stage, name, value, ts) for name, value in values.items()],
            )

    def metric_stages(self) -> list[str]:
        """Every stage id that has recorded metrics."""
        return [row[0] for row in self._query("SELECT DISTINCT stage FROM metrics ORDER BY stage")]

    def metrics(self, stage: str, runs: int) -> list[tuple[str, dict[str, float]]]:
        """The stage's metrics in its last `runs` recorded runs, oldest first."""
        recent = self._query(
            "SELECT run_id, max(ts) AS t FROM metrics WHERE stage=? GROUP BY run_id "
            "ORDER BY t DESC LIMIT ?",
            (stage, runs),
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
        """The last success of every stage of a pipeline, by stage id."""
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
        with self.write() as db:
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
        with self.write() as db:
            db.executemany(
                "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?, ?)",
                [(path, *entry) for path, entry in entries.items()],
            )
            db.executemany("DELETE FROM file_hashes WHERE path=?", [(p,) for p in gone])


def _sweep(run_ids: Iterable[str]) -> None:
    """Kill the processes interrupted runs left behind (marked with their PIPEDECK_RUN_ID)."""
    from engine import procs

    for run_id in run_ids:
        procs.sweep({"PIPEDECK_RUN_ID": run_id})
