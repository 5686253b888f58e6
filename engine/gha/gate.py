"""Jobs skipped (or, under a matrix's fail-fast, cancelled) before they start, decided by the
engine: a job that cannot run here (`runs-on: macos-latest`) or whose `if:` is false goes from
pending to `skipped` with its reason, and no runner process starts (it is never `running`). The
decision is the job runner's own (`engine.gha.runner.skipped_before_start`), with what the
runner would see: the needed jobs' result files, the stage's environment. The result is recorded
as the runner records it, so the jobs that need this one see `needs.<job>.result == 'skipped'`
as before.

What only the job's workspace or host can tell is left to the runner: an `if:` calling
`hashFiles`, and on an SSH host one reading `needs` or following a need that did not succeed (a
failed remote job's result file stays on its host)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from engine.attempt import stage_env
from engine.gha import expr
from engine.gha.loader import job_description
from engine.gha.runner import (
    FAIL_FAST,
    JobRunner,
    cancel_file,
    ignore_state,
    sibling_failed,
    skipped_before_start,
    write_result,
)
from engine.spec import Pipeline, Stage
from engine.status import CACHED, SUCCEEDED, Status

_FILES = re.compile(r"hashfiles\s*\(", re.IGNORECASE)
_NEEDS = re.compile(r"\bneeds\b", re.IGNORECASE)


def skip_before_start(
    pipeline: Pipeline, stage: Stage, run_id: str, needs: Mapping[str, Status]
) -> str | None:
    """Why the job `stage` is skipped, recorded for the jobs that need it; None when it may
    run (or when only its runner can tell). `needs`: the finished statuses of its needs."""
    job = job_description(stage.run)
    if job is None:
        return None
    condition = job.get("if")
    if not job.get("skip"):
        if condition is None:
            return None  # `success()`: the scheduler has seen to that
        if isinstance(condition, str) and _FILES.search(condition):
            return None
        if stage.is_remote and (
            (isinstance(condition, str) and _NEEDS.search(condition))
            or any(status not in (SUCCEEDED, CACHED) for status in needs.values())
        ):
            return None
    environ = stage_env(pipeline, stage, run_id, 0)
    probe = JobRunner(job, job["matrix"], job["instance"], 0, pipeline.workspace, environ)
    try:
        reason = skipped_before_start(job, probe)
    except expr.ExprError:
        return None  # the runner reports it in the job's log
    if reason is not None:
        try:
            ignore_state(pipeline.state_dir)
            state = pipeline.state_dir / "gha" / run_id
            here = not job.get("skip")
            write_result(state, job["job"], job["instance"], "skipped", {}, reason, here=here)
        except OSError:
            return None  # a full disk: the runner fails the job saying so
    return reason


def fail_fast_before_start(pipeline: Pipeline, stage: Stage, run_id: str) -> str | None:
    """FAIL_FAST for a matrix instance that was still queued when another instance of its
    matrix failed under `fail-fast`: GitHub never starts it, so neither do we (recorded as the
    runner records it). None: it starts. Reads result files: call it from a thread."""
    job = job_description(stage.run)
    if job is None or job["strategy"].get("fail-fast") is not True:
        return None
    state = pipeline.state_dir / "gha" / run_id
    if not sibling_failed(state, job["job"], job["instance"]):
        return None
    try:
        write_result(state, job["job"], job["instance"], "cancelled", {}, FAIL_FAST)
    except OSError:
        return None  # a full disk: the runner says so
    return FAIL_FAST


def tell_cancel(pipeline: Pipeline, run_id: str, sid: str, attempt: int, why: str) -> None:
    """Tell a local job's runner why pipedeck cancels it (read when its SIGTERM comes)."""
    path = cancel_file(pipeline.state_dir / "gha" / run_id, sid, attempt)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(why)
    except OSError:
        pass  # the runner names the signal instead
