"""`pipedeck logs JOB` prints a workflow job's log as the plain console shows it: each step's
marker as its step line, never the job runner's `##pipedeck[step] {...}` marker (issue 12)."""

from __future__ import annotations

from pathlib import Path

from tests.test_cli import pipedeck

WORKFLOW = """\
on: push
jobs:
  lint:
    runs-on: ubuntu-latest
    steps:
      - name: Check
        run: |
          echo "::group::Run checks"
          echo "inside the group"
          echo "::endgroup::"
          echo "::error file=src/app.py,line=3::bad import"
"""


def test_logs_prints_step_lines_not_markers(tmp_path: Path) -> None:
    workflow = tmp_path / ".github" / "workflows" / "ci.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(WORKFLOW)
    assert pipedeck("run", str(workflow), cwd=tmp_path).returncode == 0
    done = pipedeck("logs", "lint", "-f", str(workflow), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "##pipedeck[" not in done.stdout
    assert lines[-1].startswith("step 1 Check: succeeded in ")
    assert "inside the group" in lines
    assert "##[error]src/app.py:3: bad import" in lines  # GitHub's raw log format, as stored
