"""A job skipped before it starts (a macOS runner, an `if:` that is false) goes from pending to
`skipped` with its reason: it is never `running` and no job runner starts for it; the jobs that
need it see its result as GitHub would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.gha.loader import Options
from tests.gha.test_runner import run, workflow
from tests.gha.test_workspace import commit

WORKFLOW = """
on: push
jobs:
  mac:
    runs-on: macos-latest
    steps: [{run: echo never}]
  never:
    if: false
    runs-on: ubuntu-latest
    steps: [{run: echo never}]
  pr:
    if: github.event_name == 'pull_request'
    runs-on: ubuntu-latest
    steps: [{run: echo never}]
  after-mac:
    needs: mac
    if: always() && needs.mac.result == 'skipped'
    runs-on: ubuntu-latest
    steps: [{run: 'echo "mac was ${{ needs.mac.result }}"'}]
  after-never:
    needs: never
    runs-on: ubuntu-latest
    steps: [{run: echo never}]
  implicit:
    needs: pr
    if: needs.pr.result == 'skipped'  # no status function: `success() && ...`
    runs-on: ubuntu-latest
    steps: [{run: echo never}]
"""
SKIPPED = {
    "mac": "runs-on macos-latest: a macOS runner is not available here",
    "never": "if: False is false",
    "pr": "if: github.event_name == 'pull_request' is false",
}


@pytest.mark.parametrize("workspace", ["here", "copy"])
async def test_a_job_skipped_before_it_starts_is_never_running(
    tmp_path: Path, workspace: str
) -> None:
    path = workflow(tmp_path, WORKFLOW)
    if workspace == "copy":
        commit(tmp_path)
    recorder, code, the_run = await run(path, Options(workspace=workspace))
    assert code == 0
    jobs = tmp_path / ".pipedeck" / "gha" / the_run.run_id / "jobs"
    for job, reason in SKIPPED.items():
        assert recorder.statuses(job) == ["skipped"]
        assert recorder.final(job).reason == reason
        assert recorder.final(job).attempt == 0  # no attempt: no runner process
        assert recorder.lines(job) == []  # a runner would have said "job skipped"
        result = json.loads((jobs / f"{job}.json").read_text())  # as the runner records it
        assert (result["result"], result["reason"]) == ("skipped", reason)
    assert recorder.statuses("after-mac") == ["queued", "running", "succeeded"]
    assert "mac was skipped" in recorder.lines("after-mac")
    # GitHub skips a job whose need was skipped unless its `if:` uses a status function
    assert recorder.final("after-never").reason == "upstream never skipped"
    assert recorder.final("implicit").reason == "upstream pr skipped"
    assert not (tmp_path / ".pipedeck" / "gha" / the_run.run_id / "tmp" / "mac").exists()
