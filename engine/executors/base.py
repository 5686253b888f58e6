"""What every executor provides to the scheduler."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from engine.spec import Stage

MAX_SESSIONS = 10  # OpenSSH's default MaxSessions: channels open at once on one connection
AUX_CHANNELS = 3  # kept free of stages: SFTP, the sync transfer, short commands (kill...)
REMOTE_STAGE_LIMIT = MAX_SESSIONS - AUX_CHANNELS  # stages at once on one host, whatever `slots`
DEFAULT_SLOTS = 4  # a host's `slots` when the pipeline does not name the host


def host_slots(slots: int | None) -> int:
    """How many stages may run at once on a remote host: its `slots` (None: not in the
    pipeline's hosts), within the channels one SSH connection offers."""
    return min(DEFAULT_SLOTS if slots is None else slots, REMOTE_STAGE_LIMIT)


OutputSink = Callable[[str, bytes], None]
"""Called with ("stdout" | "stderr", chunk) as output arrives; chunks are raw bytes."""


@dataclass(frozen=True)
class ExecResult:
    """How an attempt ended: an exit code, or `lost` with a reason (dropped connection)."""

    exit_code: int | None
    lost: bool = False
    reason: str | None = None
    status: str | None = None  # an executor that knows better (Slurm: timed_out, cancelled)


JobCallback = Callable[[str, str, "str | None", "str | None", "str | None"], None]
"""Called by executors that hand stages to a scheduler of their own (Slurm) as an attempt's job
changes: (stage id, "queued" | "running", reason, job id, node)."""


@runtime_checkable
class ReportsJobs(Protocol):
    """An executor with a queue of its own; the run sets `on_job` to hear from it."""

    on_job: JobCallback | None


class Executor(Protocol):
    """Runs one stage attempt to its end.

    Contract: `execute` returns when the stage's main process has exited and its output is fully
    delivered to `sink` (a background child holding the pipes open must not block it forever).
    When the awaiting task is cancelled (cancel or timeout, the scheduler uses asyncio
    cancellation for both), the executor sends SIGTERM to the stage's whole process group,
    waits `stage.kill_grace`, SIGKILLs every process the stage started (escapees included),
    and only then re-raises CancelledError.
    """

    async def execute(self, stage: Stage, env: Mapping[str, str], sink: OutputSink) -> ExecResult:
        """Run `stage.run` with exactly `env` as its environment."""
        ...

    async def close(self) -> None:
        """Release connections; kill anything still running."""
        ...
