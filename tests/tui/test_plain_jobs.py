"""`pipedeck run` plain output of a GitHub Actions workflow: a job skipped before it starts (its
runner is not available here) is never said to be running; a failed job's summary reads as its
live lines do."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import pipedeck_bin

WORKFLOW = """\
on: push
jobs:
  linux:
    runs-on: ubuntu-latest
    steps: [{run: echo on linux}]
  mac:
    runs-on: macos-latest
    steps: [{run: echo never}]
"""


def test_a_job_skipped_for_its_runner_is_never_shown_running(tmp_path: Path) -> None:
    path = tmp_path / ".github" / "workflows" / "ci.yml"
    path.parent.mkdir(parents=True)
    path.write_text(WORKFLOW)
    done = subprocess.run(
        [pipedeck_bin(), "run", str(path), "--color", "never"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    mac = [line for line in lines if line.startswith("[mac] ")]
    assert any("skipped" in line and "macOS runner" in line for line in mac), mac
    assert not any("running" in line for line in mac), mac
    linux = [line for line in lines if line.startswith("[linux] ")]
    ran = next(n for n, line in enumerate(linux) if "▶ running" in line)
    assert ran < next(n for n, line in enumerate(linux) if "on linux" in line), linux


def test_a_failed_jobs_summary_shows_its_lines_as_the_live_output_does(tmp_path: Path) -> None:
    path = tmp_path / ".github" / "workflows" / "ci.yml"
    path.parent.mkdir(parents=True)
    path.write_text(
        "on: push\njobs:\n  lint:\n    runs-on: ubuntu-latest\n"
        "    steps: [{name: Lint, run: 'echo ::warning::style; exit 3'}]\n"
    )
    done = subprocess.run(
        [pipedeck_bin(), "run", str(path), "--color", "never"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    summary = done.stdout.split("1 stage(s) failed:", 1)[1].splitlines()
    assert summary[1] == "── lint failed: step 1 Lint failed: exit code 3", summary
    assert "   ▾ Lint" in summary and "   step 1 Lint: failed in" in "\n".join(summary)
    assert not any("##[" in line or "##pipedeck" in line for line in summary), summary
