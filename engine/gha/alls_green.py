"""`re-actors/alls-green` done natively: the job that branch protection waits for (pytest's and
fastapi's `check`) decides from `jobs: ${{ toJSON(needs) }}` whether every needed job succeeded.
Skipped as a remote action, it succeeded whatever its needs ended as. As the action does, a job
in `allowed-failures` may also fail and one in `allowed-skips` may be skipped. A job skipped here
because it cannot run here (a macOS runner) is skipped, so it fails the check unless allowed:
pipedeck cannot say that it would have passed; so does a matrix job some of whose instances
could not run here, though `needs.<job>.result` says success (the others succeeded)."""

from __future__ import annotations

import json

from engine.gha.actions import _fail, _ok
from engine.gha.runner import read_results

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.gha.actions import Result
    from engine.gha.runner import JobRunner

NAME = "re-actors/alls-green"


def _names(text: str) -> set[str]:
    """A JSON list or a comma-separated one, as the action reads it."""
    try:
        value = json.loads(text)
    except ValueError:
        value = text.split(",")
    return {str(name).strip() for name in (value if isinstance(value, list) else [])} - {""}


def alls_green(runner: JobRunner, with_: Mapping[str, str]) -> Result:
    try:
        jobs = json.loads(with_.get("jobs", "") or "{}")
    except ValueError:
        jobs = None
    if not isinstance(jobs, dict) or not jobs:
        return _fail(f"{NAME}: invalid input jobs matrix, give it a non-empty `needs` context")
    may_fail = _names(with_.get("allowed-failures", ""))
    may_skip = _names(with_.get("allowed-skips", ""))
    lines, succeeded = [], True
    for name, job in jobs.items():
        result = job.get("result") if isinstance(job, dict) else None
        instances = read_results(runner.state, name)
        away = [data["instance"] for data in instances if data.get("not_here")]
        if away and result == "success":  # not all green: some of its matrix did not run
            result = f"skipped ({len(away)} of {len(instances)} instances could not run here)"
        allowed = {
            "success",
            *(["failure"] * (name in may_fail)),
            *(["skipped"] * (name in may_skip)),
        }
        succeeded = succeeded and str(result).split(" ")[0] in allowed
        status = "allowed to fail" if name in may_fail else "required to succeed"
        status += " or be skipped" * (name in may_skip and name not in may_fail)
        mark = "✓" if result == "success" else "❌" if result == "failure" else "⬜"
        lines.append(f"📝 {name} → {mark} {result} [{status}]")
    head = (
        "# ✓ All of the required dependency jobs succeeded"
        if succeeded
        else "# ❌ Some of the required to succeed jobs failed"
    )
    runner.summary.append("\n".join([head, "", *lines]) + "\n")
    print("\n".join(lines), flush=True)
    outputs = {
        "failure": str(not succeeded).lower(),
        "result": "success" if succeeded else "failure",
        "success": str(succeeded).lower(),
    }
    if not succeeded:
        _fail(f"{NAME}: {head[2:]}")
        return "failure", outputs, 1
    return _ok(f"{NAME}: {head[2:]}", **outputs)
