"""`pipedeck artifacts` lists what a workflow's `actions/upload-artifact` steps kept, under each
artifact's name, for the run, as it lists pipedeck's own artifacts."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from tests.conftest import pipedeck_bin
from tests.gha.test_runner import workflow
from tests.gha.test_workspace import commit

WORKFLOW = """
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: mkdir -p dist/sub && echo wheel > dist/pkg.whl && echo note > dist/sub/n.txt
      - uses: actions/upload-artifact@v4
        with: {name: dist, path: dist/}
  report:
    runs-on: ubuntu-latest
    steps:
      - run: echo covered > coverage.xml
      - uses: actions/upload-artifact@v4
        with: {name: coverage, path: coverage.xml}
"""


def pipedeck(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [pipedeck_bin(), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_artifacts_lists_uploaded_artifacts_of_a_workflow_run(tmp_path: Path) -> None:
    path = workflow(tmp_path, WORKFLOW)
    commit(tmp_path)  # jobs run in the copy (--workspace copy): its uploads are still listed
    ran = pipedeck(tmp_path, "run", str(path), "--format", "json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    run_id = json.loads(ran.stdout.splitlines()[0])["run_id"]
    listed = pipedeck(tmp_path, "artifacts", "-f", str(path), "--run", run_id, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["path"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {"dist/pkg.whl", "dist/sub/n.txt", "coverage/coverage.xml"}
    wheel = rows["dist/pkg.whl"]
    assert (wheel["run_id"], wheel["stage"], wheel["size"]) == (run_id, "build", 6)
    assert wheel["sha256"] == hashlib.sha256(b"wheel\n").hexdigest() and wheel["intact"]
    assert Path(wheel["stored"]).read_text() == "wheel\n"
    assert rows["coverage/coverage.xml"]["stage"] == "report"
    Path(rows["dist/sub/n.txt"]["stored"]).write_text("changed\n")
    table = pipedeck(tmp_path, "artifacts", "-f", str(path)).stdout.splitlines()
    line = next(x for x in table if "dist/sub/n.txt" in x)
    assert run_id in line and "build" in line and "changed since kept" in line
