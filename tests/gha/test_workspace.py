"""`--workspace copy`: jobs work in a copy of the repository with the user's uncommitted changes,
and whatever they delete or write stays out of the user's tree."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from engine.gha.loader import Options, load_workflow
from engine.gha.workspace import SPARE_DAYS
from tests.conftest import pipedeck_bin
from tests.gha.test_runner import run, workflow

JOBS = """
on: push
jobs:
  tests:
    runs-on: ubuntu-latest
    steps:
      - run: |
          cat src/app.py new.txt
          test ! -e gone.txt && echo gone is gone
          test ! -e left-by-last-run && echo clean
          rm -rf src && touch left-by-last-run
          echo "## done" >> "$GITHUB_STEP_SUMMARY"
"""


def commit(cwd: Path) -> None:
    """A git repository at `cwd` with everything in it committed."""
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t",
                 "commit", "-qm", "one"]):  # fmt: skip
        subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def repository(tmp_path: Path) -> Path:
    path = workflow(tmp_path, JOBS)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("committed\n")
    (tmp_path / "gone.txt").write_text("x\n")
    commit(tmp_path)
    (tmp_path / "src" / "app.py").write_text("changed, not committed\n")
    (tmp_path / "new.txt").write_text("untracked\n")
    (tmp_path / "gone.txt").unlink()
    return path


async def test_copy_runs_jobs_in_a_copy_with_uncommitted_changes(tmp_path: Path) -> None:
    path = repository(tmp_path)
    for _ in range(2):  # the second run finds the copy as the first left it
        recorder, code, the_run = await run(path, Options(workspace="copy"))
        assert code == 0, recorder.lines("tests")
        lines = recorder.lines("tests")
        assert "changed, not committed" in lines and "untracked" in lines
        assert "gone is gone" in lines and "clean" in lines
        summary = tmp_path / ".pipedeck" / "gha" / the_run.run_id / "summary" / "tests.md"
        assert summary.read_text().strip() == "## done"  # where pipedeck show reads it
    assert (tmp_path / "src" / "app.py").read_text() == "changed, not committed\n"
    assert not (tmp_path / "left-by-last-run").exists()
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=tmp_path, capture_output=True, text=True
    )
    assert status.stdout.split("\n")[:3] == [" D gone.txt", " M src/app.py", "?? new.txt"]


async def test_copy_outside_a_git_repository_fails_the_job_saying_why(tmp_path: Path) -> None:
    path = workflow(tmp_path, JOBS)
    recorder, code, _ = await run(path, Options(workspace="copy"))
    assert code != 0
    assert any("--workspace copy: git rev-parse" in x for x in recorder.lines("tests"))
    assert recorder.final("tests").status == "failed"


def test_the_default_is_a_copy_in_a_git_checkout_and_here_elsewhere(tmp_path: Path) -> None:
    plain = workflow(tmp_path / "plain", JOBS)
    assert '"workspace":"here"' in load_workflow(plain).pipeline.stages["tests"].run
    checkout = repository(tmp_path / "checkout")
    assert '"workspace":"copy"' in load_workflow(checkout).pipeline.stages["tests"].run
    chosen = load_workflow(checkout, Options(workspace="here"))
    assert '"workspace":"here"' in chosen.pipeline.stages["tests"].run


async def test_a_workflow_in_a_folder_of_the_checkout_runs_in_that_folder_of_the_copy(
    tmp_path: Path,
) -> None:
    """A sample's workflow (sample_pipelines/github) inside a bigger git checkout."""
    path = workflow(tmp_path / "sub", "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n"
                    "    steps:\n      - run: cat data.txt; pwd\n")  # fmt: skip
    commit(tmp_path)
    (tmp_path / "sub" / "data.txt").write_text("untracked\n")
    recorder, code, _ = await run(path)
    assert code == 0, recorder.lines("j")
    lines = recorder.lines("j")
    assert "untracked" in lines and str(tmp_path / "sub/.pipedeck/workspace/sub") in lines


CONCURRENT = """
on: push
jobs:
  j:
    runs-on: ubuntu-latest
    steps:
      - run: |
          echo "$WHO" > mine.txt
          echo "ready $PWD"
          read -r go < "$GO"
          echo "kept $(cat mine.txt)"
"""


def start_run(path: Path, who: str, go: Path) -> tuple[subprocess.Popen[str], str]:
    """A `pipedeck run` of the workflow, once its job is ready: (the process, the job's folder)."""
    env = {**os.environ, "WHO": who, "GO": str(go)}
    proc = subprocess.Popen(
        [pipedeck_bin(), "run", str(path), "--format", "json"],
        cwd=path.parents[2], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        text = json.loads(line).get("text") or ""
        if text.startswith("ready "):
            return proc, text.removeprefix("ready ")
    raise AssertionError(f"run {who} ended before its job was ready")


def finish(proc: subprocess.Popen[str], go: Path) -> list[str]:
    """Let the run's job go on; the lines it printed after."""
    go.write_text("go\n")  # opening the FIFO waits for the job's `read`
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return [json.loads(line).get("text") for line in out.splitlines()]


def test_two_runs_at_once_each_get_a_copy_and_spare_copies_go(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = workflow(tmp_path, CONCURRENT)
    commit(tmp_path)
    fifos = tmp_path_factory.mktemp("fifos")
    go_a, go_b = fifos / "go-a", fifos / "go-b"
    os.mkfifo(go_a)
    os.mkfifo(go_b)
    first, where_a = start_run(path, "A", go_a)
    try:
        second, where_b = start_run(path, "B", go_b)  # while the first one's job runs
    except BaseException:
        first.terminate()  # its job waits for a `go` that never comes: pipedeck cancels it
        raise
    try:
        assert where_a != where_b
        assert "kept B" in finish(second, go_b)
        assert "kept A" in finish(first, go_a)  # the second run did not reset the first's copy
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    # the spare copy, unused for longer than SPARE_DAYS, goes when a run next takes a copy
    spare = tmp_path / ".pipedeck" / "workspace-1"
    assert Path(where_b) == spare and spare.is_dir()
    claim = tmp_path / ".pipedeck" / "gha" / "workspaces" / "1.run"
    long_ago = time.time() - (SPARE_DAYS + 1) * 86400
    os.utime(claim, (long_ago, long_ago))
    third, where = start_run(path, "C", go_a)
    assert Path(where) == tmp_path / ".pipedeck" / "workspace"  # the first copy, warm
    assert "kept C" in finish(third, go_a)
    assert not spare.exists()
