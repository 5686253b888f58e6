"""`--runner LABEL=HOST`: a job runs on an SSH host of the root pipedeck.yaml, its runner
shipped with it (the host's python3 has no pipedeck), with its steps reported as events."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import pipedeck_bin
from tests.ssh.conftest import USER, Sshd, sshd  # noqa: F401  (the fixture)

pytestmark = pytest.mark.ssh


def _root_pipeline(sshd: Sshd, tmp_path: Path) -> Path:  # noqa: F811
    """A pipedeck.yaml beside the workflow naming the SSH host `box`; its workdir."""
    workdir = sshd.root / "gha" / "box"
    (tmp_path / "pipedeck.yaml").write_text(
        "version: 1\nhosts:\n  box:\n    address: 127.0.0.2\n"
        f"    port: {sshd.port}\n    user: {USER}\n    identity_file: {sshd.client_key}\n"
        f"    known_hosts: {sshd.known_hosts}\n    workdir: {workdir}\n"
        "stages:\n  unused: {run: 'true'}\n"
    )
    return workdir


def _workflow(sshd: Sshd, tmp_path: Path, text: str) -> Path:  # noqa: F811
    """`.github/workflows/ci.yml` holding `text` (dedented), beside the root pipeline."""
    _root_pipeline(sshd, tmp_path)
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    (folder / "ci.yml").write_text(textwrap.dedent(text))
    return folder / "ci.yml"


def _run_on_box(workflow: Path, exit_code: int = 0) -> list[dict[str, Any]]:
    """`pipedeck run WORKFLOW --runner gpu=box` (it must exit `exit_code`): its JSON events."""
    done = subprocess.run(
        [pipedeck_bin(), "run", str(workflow), "--runner", "gpu=box", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == exit_code, done.stdout[-3000:] + done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_runs_on_label_mapped_to_an_ssh_host(sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    workdir = _root_pipeline(sshd, tmp_path)
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    (tmp_path / "data.txt").write_text("synced\n")
    (folder / "ci.yml").write_text(
        "on: push\njobs:\n  remote:\n    runs-on: [self-hosted, gpu]\n    steps:\n"
        '      - run: echo "on $PWD = $(cat data.txt) ${{ runner.os }}"\n'
        "      - id: o\n        run: echo 'v=1' >> \"$GITHUB_OUTPUT\"\n"
        '      - run: echo "out ${{ steps.o.outputs.v }}"\n'
    )
    events = _run_on_box(folder / "ci.yml")
    logs = [e["text"] for e in events if e["type"] == "log"]
    assert f"on {workdir} = synced Linux" in logs
    assert "out 1" in logs
    final = [e for e in events if e["type"] == "stage_status"][-1]
    assert (final["stage"], final["status"], final["host"]) == ("remote", "succeeded", "box")
    steps = [e["status"] for e in events if e["type"] == "step_status" and e["status"] != "running"]
    assert steps == ["succeeded"] * 3


def test_results_and_outputs_cross_between_local_and_remote_jobs(
    sshd: Sshd,  # noqa: F811
    tmp_path: Path,
) -> None:
    """local -> remote -> local: each job reads the outputs and result of the one it needs."""
    workflow = _workflow(
        sshd,
        tmp_path,
        """
        on: push
        jobs:
          here:
            runs-on: ubuntu-latest
            outputs: {v: "${{ steps.o.outputs.v }}"}
            steps:
              - {id: o, run: echo "v=from-here" >> "$GITHUB_OUTPUT"}
          there:
            needs: here
            runs-on: [self-hosted, gpu]
            outputs: {w: "${{ steps.o.outputs.w }}"}
            steps:
              - id: o
                run: echo "w=${{ needs.here.outputs.v }}+there" >> "$GITHUB_OUTPUT"
          back:
            needs: there
            runs-on: ubuntu-latest
            steps:
              - run: echo "got ${{ needs.there.outputs.w }} ${{ needs.there.result }}"
        """,
    )
    events = _run_on_box(workflow)
    logs = [e["text"] for e in events if e["type"] == "log" and e["stage"] == "back"]
    assert "got from-here+there success" in logs


def test_a_failed_remote_jobs_result_and_outputs_come_back(
    sshd: Sshd,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A remote job that fails: the local job that runs on `failure()` sees its result and the
    outputs its steps set before the failure."""
    workflow = _workflow(
        sshd,
        tmp_path,
        """
        on: push
        jobs:
          remote:
            runs-on: [self-hosted, gpu]
            outputs: {w: "${{ steps.o.outputs.w }}"}
            steps:
              - {id: o, run: echo "w=set-before" >> "$GITHUB_OUTPUT"}
              - run: exit 3
          report:
            needs: remote
            if: failure()
            runs-on: ubuntu-latest
            steps:
              - run: echo "saw ${{ needs.remote.result }} ${{ needs.remote.outputs.w }}"
        """,
    )
    events = _run_on_box(workflow, exit_code=1)
    final = {e["stage"]: e["status"] for e in events if e["type"] == "stage_status"}
    assert final == {"remote": "failed", "report": "succeeded"}
    logs = [e["text"] for e in events if e["type"] == "log" and e["stage"] == "report"]
    assert "saw failure set-before" in logs
