"""`pipedeck run` plain output of a GitHub Actions workflow: a job skipped before it starts (its
runner is not available here) is never said to be running."""

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
