"""What the TUI knows about each stage, built from the run's events, and how it is drawn."""

from __future__ import annotations

from dataclasses import dataclass

from engine.events import (
    BAD,
    CACHED,
    CANCELLED,
    FAILED,
    LOST,
    PENDING,
    QUEUED,
    READY,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    TIMED_OUT,
    WAITING,
    StageStatus,
)

ALLOWED = "allowed"  # the status shown for a failure the stage was allowed to have

ICONS: dict[str, str] = {
    PENDING: "·",
    WAITING: "‖",
    QUEUED: "○",
    RUNNING: "▶",
    SUCCEEDED: "✔",
    FAILED: "✘",
    TIMED_OUT: "◷",
    CANCELLED: "⊘",
    SKIPPED: "↷",
    CACHED: "≡",
    LOST: "⚠",
    ALLOWED: "✗",  # failed, timed out or lost with allow_failure: not a failure of the run
    READY: "◉",  # a service whose probe passed (SPEC §10)
}
"""One cell-wide icon per status (SPEC §2)."""


def shown_status(status: str, allow_failure: bool) -> str:
    """`allowed` for a failed, timed out or lost stage with `allow_failure`, else `status`."""
    return ALLOWED if status in BAD and allow_failure else status


SERVICE_STARTING = "◌"  # a service that runs but is not ready yet
LIVE = (RUNNING, READY)  # statuses whose duration ticks

STATUS_COLOURS: dict[str, str] = {
    PENDING: "foreground-muted",
    WAITING: "warning",
    QUEUED: "foreground-muted",
    RUNNING: "accent",
    SUCCEEDED: "success",
    FAILED: "error",
    TIMED_OUT: "error",
    CANCELLED: "warning",
    SKIPPED: "foreground-muted",
    CACHED: "success",
    LOST: "error",
    READY: "success",
}
"""The theme variable each status is drawn in."""

# Most urgent first: the status a matrix parent shows for its instances.
_URGENCY = (
    RUNNING,
    READY,
    FAILED,
    TIMED_OUT,
    LOST,
    WAITING,
    QUEUED,
    CANCELLED,
    PENDING,
    SUCCEEDED,
    CACHED,
    SKIPPED,
)


@dataclass
class StageView:
    """The latest known state of one stage instance."""

    status: str = PENDING
    attempt: int = 0
    host: str = "local"
    started: float | None = None  # ts of the current attempt's `running`
    duration: float | None = None  # final duration of the current attempt
    exit_code: int | None = None
    reason: str | None = None
    job_id: str | None = None  # a Slurm attempt's job and node (SPEC §12)
    node: str | None = None

    def apply(self, event: StageStatus) -> None:
        """Update from a `stage_status` event."""
        if event.status == RUNNING and (self.status != RUNNING or event.attempt != self.attempt):
            self.started, self.duration = event.ts, None
        elif event.status in (PENDING, WAITING, QUEUED):
            self.started, self.duration = None, None
        self.status, self.attempt, self.host = event.status, event.attempt, event.host or "local"
        self.exit_code, self.reason = event.exit_code, event.reason
        self.job_id, self.node = event.job_id, event.node
        if event.duration is not None:
            self.duration = event.duration
        elif event.status not in LIVE and self.started is not None and self.duration is None:
            self.duration = max(0.0, event.ts - self.started)

    def elapsed(self, now: float) -> float | None:
        """Seconds the current attempt has run (ticking while running)."""
        if self.status in LIVE and self.started is not None:
            return max(0.0, now - self.started)
        return self.duration

    @property
    def job(self) -> str:
        """A Slurm attempt's job and node, `#1234 @node1` (`#1234` while queued); else ""."""
        if self.job_id is None:
            return ""
        return f"#{self.job_id} @{self.node}" if self.node else f"#{self.job_id}"

    @property
    def has_log(self) -> bool:
        """True when an attempt has started, so a log may exist."""
        return self.attempt > 0 and self.status not in (PENDING, WAITING, QUEUED, SKIPPED, CACHED)


def summary_status(statuses: list[str]) -> str:
    """The status a group of instances shows: the most urgent one."""
    present = set(statuses)
    return next((s for s in _URGENCY if s in present), PENDING)


def format_duration(seconds: float | None) -> str:
    """`0.4s`, `12s`, `3m05s`, `1h02m`; empty when unknown."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def format_bytes(size: int | None) -> str:
    """`512K`, `140M`, `1.2G`; empty when unknown."""
    if size is None:
        return ""
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= scale:
            value = size / scale
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    return f"{size}B"


def format_attempt(attempt: int, retries: int) -> str:
    """`2/3` while within the retries, `#4` for later reruns, empty for a first attempt."""
    if attempt <= 1:
        return ""
    if retries and attempt <= retries + 1:
        return f"{attempt}/{retries + 1}"
    return f"#{attempt}"
