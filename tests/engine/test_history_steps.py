"""The steps of GitHub Actions jobs in the run history (SPEC §6, §11): each step's last status
with the run, recorded by the writer thread; `pipedeck show` lists them under their job."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from engine.events import RunFinished, RunStarted, StageStatus, StepStatus
from engine.history import History, StepRow


def record_job(history: History, run_id: str) -> None:
    """A job `build` whose first attempt fails at its second step; a second attempt whose
    second step fails as `continue-on-error` allows and whose third is skipped by its `if:`."""
    rec = history.recorder(run_id)
    rec(RunStarted(run_id, "ci", ("build",), ts=100.0))
    rec(StageStatus(run_id, "build", "running", 1, "local", ts=100.0))
    rec(StepStatus(run_id, "build", 1, 0, "Checkout", "running", ts=100.5))
    rec(StepStatus(run_id, "build", 1, 0, "Checkout", "succeeded", 0.25, 0, ts=100.8))
    rec(StepStatus(run_id, "build", 1, 1, "Test", "running", ts=101.0))
    rec(StepStatus(run_id, "build", 1, 1, "Test", "failed", 2.0, 1, ts=103.0))
    rec(StageStatus(run_id, "build", "failed", 1, "local", exit_code=1, duration=3.0, ts=103.0))
    rec(StageStatus(run_id, "build", "running", 2, "local", ts=104.0))
    rec(StepStatus(run_id, "build", 2, 0, "Checkout", "running", ts=104.5))
    rec(StepStatus(run_id, "build", 2, 0, "Checkout", "succeeded", 0.5, 0, ts=105.0))
    rec(StepStatus(run_id, "build", 2, 1, "Test", "running", ts=105.0))
    rec(StepStatus(run_id, "build", 2, 1, "Test", "failed", 1.0, 1, allowed=True, ts=106.0))
    rec(StepStatus(run_id, "build", 2, 2, "Deploy", "skipped", reason="if: false", ts=106.0))
    rec(StageStatus(run_id, "build", "succeeded", 2, "local", exit_code=0, duration=2.0, ts=106.0))
    rec(RunFinished(run_id, "succeeded", 0, 6.0, ts=106.0))


def test_each_steps_last_status_is_recorded_with_the_run(tmp_path: Path) -> None:
    history = History(tmp_path / "history.db")
    record_job(history, "r1")
    assert history.steps("r1") == [
        StepRow("build", 1, 0, "Checkout", "succeeded", 100.5, 0.25, 0, None),
        StepRow("build", 1, 1, "Test", "failed", 101.0, 2.0, 1, None),
        StepRow("build", 2, 0, "Checkout", "succeeded", 104.5, 0.5, 0, None),
        StepRow("build", 2, 1, "Test", "failed", 105.0, 1.0, 1, None, allowed=True),
        StepRow("build", 2, 2, "Deploy", "skipped", 106.0, None, None, "if: false"),
    ]
    assert history.steps("r1")[3].shown_status == "failed (allowed)"
    assert history.steps("other") == []
    history.close()


def test_steps_are_written_by_the_writer_thread_in_few_transactions(tmp_path: Path) -> None:
    """The recorder (called on the event loop) never waits for SQLite: a job's step events
    queue behind another process's write lock, and share transactions once it is gone."""
    history = History(tmp_path / "history.db", timeout=30)
    commits = []
    once = history._once
    history._once = lambda fn: commits.append(fn) or once(fn)  # type: ignore[method-assign]
    blocker = sqlite3.connect(tmp_path / "history.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    record_job(history, "r1")
    assert time.monotonic() - started < 1.0
    assert not history.flush(timeout=0.2)  # still queued behind the other writer
    blocker.execute("ROLLBACK")
    assert history.flush(timeout=30)
    assert len(history.steps("r1")) == 5
    assert len(commits) <= 4, len(commits)  # 15 writes; a run's start and end are hurried
    history.close()


def test_version_4_databases_gain_the_steps_table(tmp_path: Path) -> None:
    """A history made before steps were kept (user_version 4) opens and records them."""
    db = tmp_path / "history.db"
    History(db).close()
    old = sqlite3.connect(db)
    old.executescript("DROP TABLE steps; PRAGMA user_version = 4;")
    old.close()
    history = History(db)
    assert history.steps("r1") == []
    record_job(history, "r1")
    assert [s.name for s in history.steps("r1")] == ["Checkout", "Test", "Checkout", "Test",
                                                      "Deploy"]  # fmt: skip
    history.close()
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone() == (5,)


def test_a_step_left_running_by_a_dead_run_is_interrupted(tmp_path: Path) -> None:
    history = History(tmp_path / "history.db")
    rec = history.recorder("dead")
    rec(RunStarted("dead", "ci", ("build",), ts=100.0))
    rec(StageStatus("dead", "build", "running", 1, "local", ts=100.0))
    rec(StepStatus("dead", "build", 1, 0, "Checkout", "succeeded", 0.2, 0, ts=100.5))
    rec(StepStatus("dead", "build", 1, 1, "Test", "running", ts=100.5))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    history.flush()
    history.transaction(lambda db: db.execute("UPDATE runs SET pid=?", (gone.pid,)))
    assert [s.status for s in history.steps("dead")] == ["succeeded", "interrupted"]  # as read
    assert history.mark_interrupted() == ["dead"]
    raw = sqlite3.connect(tmp_path / "history.db").execute("SELECT status FROM steps").fetchall()
    assert sorted(raw) == [("interrupted",), ("succeeded",)]
    history.close()


WORKFLOW = """\
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - name: Greet
        run: echo hello
      - name: Flaky check
        continue-on-error: true
        run: exit 3
      - name: Only on tags
        if: startsWith(github.ref, 'refs/tags/')
        run: echo tagged
      - name: Finish
        run: echo done
  after:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - run: echo after
"""


def pipedeck(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("pipedeck")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_show_lists_each_jobs_steps_under_it(tmp_path: Path) -> None:
    workflow = tmp_path / ".github" / "workflows" / "ci.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(WORKFLOW)
    ran = pipedeck(tmp_path, "run", ".github/workflows/ci.yml")
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr
    shown = pipedeck(tmp_path, "show")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("STAGE"))
    rows = [line.split() for line in lines[header + 1 :]]
    assert [row[:2] for row in rows] == [
        ["build", "succeeded"],
        ["1", "Greet"],
        ["2", "Flaky"],
        ["3", "Only"],
        ["4", "Finish"],
        ["after", "succeeded"],
        ["1", "Run"],
    ]
    table = lines[header:]
    status_at = table[0].index("STATUS")
    duration_at = table[0].index("DURATION")
    flaky = table[3]
    assert flaky[status_at:].startswith("failed (allowed)")
    assert flaky[duration_at:].split()[0].endswith("s")  # its duration, in the stages' column
    assert flaky.rstrip().endswith("exit code 3")
    tagged = table[4]
    assert tagged[status_at:].startswith("skipped")
    assert tagged[duration_at:].startswith("-")
    assert tagged.rstrip().endswith("if: startsWith(github.ref, 'refs/tags/') is false")

    body = json.loads(pipedeck(tmp_path, "show", "--json").stdout)
    build = next(a for a in body["attempts"] if a["stage"] == "build")
    steps = [(s["step"], s["name"], s["status"], s["allowed"]) for s in build["steps"]]
    assert steps == [
        (0, "Greet", "succeeded", False),
        (1, "Flaky check", "failed", True),
        (2, "Only on tags", "skipped", False),
        (3, "Finish", "succeeded", False),
    ]
    assert all(isinstance(s["duration"], float) for s in build["steps"] if s["step"] != 2)
