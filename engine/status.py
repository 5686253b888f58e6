"""Stage and run statuses (SPEC §2), the stage state machine's transition table, and the verdict.

`TRANSITIONS` is the whole stage state machine: the scheduler (engine/run.py) moves a stage only
through `StageState.move`, which refuses any move the table does not list.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """Every status of a stage or a run; the values are the wire form (JSON, SQLite)."""

    PENDING = "pending"  # not decided yet: waits for its needs
    WAITING = "waiting"  # a manual stage waiting for approval
    QUEUED = "queued"  # decided to run: asks the cache, then waits for a slot
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    CACHED = "cached"
    LOST = "lost"
    READY = "ready"  # a service whose readiness probe passed; still running (SPEC §10)
    SUPERSEDED = "superseded"  # a run only: a watch run whose stages a file change cancelled


PENDING, WAITING, QUEUED, RUNNING = Status.PENDING, Status.WAITING, Status.QUEUED, Status.RUNNING
SUCCEEDED, FAILED, TIMED_OUT = Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT
CANCELLED, SKIPPED, CACHED, LOST = Status.CANCELLED, Status.SKIPPED, Status.CACHED, Status.LOST
READY, SUPERSEDED = Status.READY, Status.SUPERSEDED

STATUSES = (
    PENDING,
    WAITING,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    FAILED,
    TIMED_OUT,
    CANCELLED,
    SKIPPED,
    CACHED,
    LOST,
    READY,
)  # a stage's statuses


def not_cacheable(inputs: bool, outputs: bool) -> str:
    """Why the cache cannot judge a stage: which of inputs and outputs it does not declare."""
    missing = [name for name, have in (("inputs", inputs), ("outputs", outputs)) if not have]
    return f"no {'/'.join(missing)} declared"


# every `reason` of a RUNNING stage the cache cannot judge: kept in history, not worth a line
# in plain output
NOT_CACHEABLE = frozenset(
    not_cacheable(i, o) for i, o in ((False, False), (False, True), (True, False))
)


FINISHED = frozenset({SUCCEEDED, FAILED, TIMED_OUT, CANCELLED, SKIPPED, CACHED, LOST})
BAD = frozenset({FAILED, TIMED_OUT, LOST})  # fail the run unless allow_failure

# The stage state machine: status -> the statuses it may move to, and why (SPEC §2).
TRANSITIONS: dict[Status, frozenset[Status]] = {
    # needs finished: manual -> waiting; `when`/a broken need -> skipped; else queued.
    # cancel before it starts -> cancelled.
    PENDING: frozenset({WAITING, QUEUED, SKIPPED, CANCELLED}),
    # approve or rerun -> pending; cancel -> cancelled.
    WAITING: frozenset({PENDING, CANCELLED}),
    # the cache says up to date -> cached; a slot is free -> running; cancel -> cancelled;
    # a fault of pipedeck's own (a log it cannot write) -> failed.
    QUEUED: frozenset({CACHED, RUNNING, CANCELLED, FAILED}),
    # the attempt ends; cancel (or a rerun's kill) -> cancelled; a service's probe passed ->
    # ready; an executor with a queue of its own (Slurm) has the job wait there -> queued;
    # a GitHub Actions job whose `if:` said no -> skipped.
    RUNNING: frozenset({SUCCEEDED, FAILED, TIMED_OUT, LOST, CANCELLED, READY, QUEUED, SKIPPED}),
    # a service: it is stopped (succeeded), exits on its own (failed), is cancelled or lost.
    READY: frozenset({SUCCEEDED, FAILED, TIMED_OUT, LOST, CANCELLED}),
    # rerun -> pending; a retry after a bad attempt -> running (the next attempt).
    SUCCEEDED: frozenset({PENDING}),
    FAILED: frozenset({PENDING, RUNNING}),
    TIMED_OUT: frozenset({PENDING, RUNNING}),
    LOST: frozenset({PENDING, RUNNING}),
    CANCELLED: frozenset({PENDING}),
    SKIPPED: frozenset({PENDING}),
    CACHED: frozenset({PENDING}),
}


class TransitionError(RuntimeError):
    """A move the state machine does not allow: a bug in the scheduler."""


@dataclass(slots=True)
class StageState:
    """What the run knows of one stage instance now (slots: a misspelt field is an error)."""

    status: Status = PENDING
    attempt: int = 0
    host: str = "local"
    exit_code: int | None = None
    started: float | None = None
    ended: float | None = None
    reason: str | None = None
    fingerprint: str | None = None
    job_id: str | None = None  # a Slurm attempt's job id and node (extension fields)
    node: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds run so far (running) or in all (finished); None before it starts."""
        if self.started is None:
            return None
        return (self.ended or time.time()) - self.started

    def start_attempt(self) -> None:
        """A new attempt begins: count it and start its clock."""
        self.attempt += 1
        self.started, self.ended, self.exit_code = time.time(), None, None
        self.job_id = self.node = None

    def move(self, to: Status, reason: str | None) -> None:
        """Change status along `TRANSITIONS`, keeping the times and exit code consistent."""
        if to not in TRANSITIONS[self.status]:
            raise TransitionError(f"a stage cannot go from {self.status} to {to}")
        if to == PENDING:
            self.exit_code = self.started = self.ended = None
        elif to in FINISHED and self.started is not None and self.ended is None:
            self.ended = time.time()
        self.status = to
        self.reason = reason
