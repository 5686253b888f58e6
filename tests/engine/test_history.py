"""The SQLite run history: recording, interrupted runs, concurrent writers (SPEC §6)."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.events import HostStatus, LogLines, RunFinished, RunStarted, StageStatus
from engine.history import History, SyncRow


def record_run(history: History, run_id: str, trigger: str = "manual") -> None:
    rec = history.recorder(run_id, trigger, fingerprints={"build": "fp-build"})
    rec(RunStarted(run_id, "shop", ("lint", "build"), ts=100.0))
    rec(StageStatus(run_id, "lint", "pending", 0, "local", ts=100.0))
    rec(StageStatus(run_id, "lint", "cached", 0, "local", reason="up to date", ts=100.5))
    rec(StageStatus(run_id, "build", "running", 1, "local", reason="src/a.py changed", ts=101.0))
    rec(LogLines(run_id, "build", 1, "stdout", ("hello",), ts=101.5))
    rec(StageStatus(run_id, "build", "failed", 1, "local", exit_code=3, duration=2.0,
                    reason="exit code 3", ts=103.0))  # fmt: skip
    rec(StageStatus(run_id, "build", "running", 2, "local", reason="retry", ts=104.0))
    rec(StageStatus(run_id, "build", "succeeded", 2, "local", exit_code=0, duration=1.5,
                    ts=105.5))  # fmt: skip
    rec(RunFinished(run_id, "succeeded", 0, 5.5, ts=105.5))


def test_recorder_stores_the_run_and_each_attempt_with_why(tmp_path: Path) -> None:
    history = History(tmp_path / "history.db")
    record_run(history, "r1", trigger="watch")
    run = history.run("r1")
    assert run is not None
    assert (run.status, run.trigger, run.exit_code, run.duration) == ("succeeded", "watch", 0, 5.5)
    assert (run.pipeline, run.started, run.pid) == ("shop", 100.0, os.getpid())
    rows = {(a.stage, a.attempt): a for a in history.attempts("r1")}
    assert (rows["lint", 0].status, rows["lint", 0].why) == ("cached", "up to date")
    first, second = rows["build", 1], rows["build", 2]
    assert (first.status, first.exit_code, first.why, first.reason) == (
        "failed", 3, "src/a.py changed", "exit code 3")  # fmt: skip
    assert (first.started, first.ended, first.duration) == (101.0, 103.0, 2.0)
    assert (second.status, second.why, second.fingerprint) == ("succeeded", "retry", "fp-build")
    assert history.durations("build") == [2.0, 1.5]
    assert history.durations("lint") == []  # cached: it did not run


def test_a_second_round_in_one_run_adds_rows_and_pending_is_not_recorded(tmp_path: Path):
    history = History(tmp_path / "history.db")
    record_run(history, "r1")
    rec = history.recorder("r1")
    rec(StageStatus("r1", "build", "pending", 2, "local"))  # a rerun of the finished run
    rec(StageStatus("r1", "build", "queued", 2, "local"))
    rec(StageStatus("r1", "build", "cached", 2, "local", reason="up to date"))
    rows = [(a.stage, a.attempt, a.status) for a in history.attempts("r1")]
    assert rows == [("lint", 0, "cached"), ("build", 1, "failed"), ("build", 2, "succeeded"),
                    ("build", 2, "cached")]  # fmt: skip


def test_runs_newest_first_with_limit_and_latest(tmp_path: Path) -> None:
    history = History(tmp_path / "history.db")
    assert history.latest_run_id() is None
    for i, run_id in enumerate(["a", "b", "c"]):
        history.recorder(run_id)(RunStarted(run_id, "p", (), ts=10.0 + i))
    assert [r.run_id for r in history.runs(limit=2)] == ["c", "b"]
    assert history.latest_run_id() == "c"
    assert history.run("nope") is None


RECORD_AND_HANG = """
import os, subprocess, sys, time
from engine.events import RunStarted, StageStatus
from engine.history import History
h = History(sys.argv[1])
rec = h.recorder("dead-run")
rec(RunStarted("dead-run", "p", ("s",)))
rec(StageStatus("dead-run", "s", "running", 1, "local", reason="no earlier run"))
stage = subprocess.Popen(["sleep", "300"], start_new_session=True,
                         env={**os.environ, "PIPEDECK_RUN_ID": "dead-run"})
print(stage.pid, flush=True)
time.sleep(60)
"""


def gone(pid: int) -> bool:
    """True once `pid` no longer runs (a zombie counts as gone), waiting up to 10 s."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_a_run_whose_process_died_is_marked_interrupted(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    proc = subprocess.Popen([sys.executable, "-c", RECORD_AND_HANG, str(db)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    stage_pid = int(proc.stdout.readline())
    history = History(db)
    history.recorder("live-run")(RunStarted("live-run", "p", ()))
    assert history.mark_interrupted() == []  # both processes still alive
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert Path(f"/proc/{stage_pid}").exists()  # the stage outlived its engine
    assert history.mark_interrupted() == ["dead-run"]
    assert gone(stage_pid)  # swept: it carried the run's PIPEDECK_RUN_ID
    run = history.run("dead-run")
    assert run is not None and run.status == "interrupted"
    assert [a.status for a in history.attempts("dead-run")] == ["interrupted"]
    live = history.run("live-run")
    assert live is not None and live.status == "running"
    assert history.mark_interrupted() == []


WRITER = """
import sys
from engine.events import RunFinished, RunStarted, StageStatus
from engine.history import History
h = History(sys.argv[1])
for i in range(150):
    run_id = f"{sys.argv[2]}-{i}"
    rec = h.recorder(run_id)
    rec(RunStarted(run_id, "p", ("a", "b")))
    for stage in ("a", "b"):
        rec(StageStatus(run_id, stage, "running", 1, "local"))
        rec(StageStatus(run_id, stage, "succeeded", 1, "local", exit_code=0, duration=0.1))
    h.store_file_hashes({f"{sys.argv[2]}/{i}": (1, 2, 3, "x")})
    rec(RunFinished(run_id, "succeeded", 0, 0.2))
"""


def test_two_processes_writing_at_once_corrupt_nothing(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(db), name], stderr=subprocess.PIPE)
        for name in ("one", "two")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    history = History(db)
    runs = history.runs(limit=None)
    assert len(runs) == 300
    assert {r.status for r in runs} == {"succeeded"}
    assert sum(len(history.attempts(r.run_id)) for r in runs) == 600
    assert len(history.file_hashes()) == 300


PIPELINE = """\
version: 1
name: demo
stages:
  gen:
    run: |
      mkdir -p out
      cat src/*.txt > out/all.txt
      echo '{"loss": '$(wc -c < out/all.txt)', "eval": {"acc": 0.5}}' > out/m.json
    inputs: ["src/*.txt"]
    outputs: ["out/all.txt"]
    metrics: out/m.json
  use:
    needs: [gen]
    run: wc -c out/all.txt
"""


async def run_once(path: Path, trigger: str = "manual") -> str:
    """One real run of the pipeline with the cache and the history recorder subscribed."""
    from engine.cache import track_run
    from engine.loader import load
    from engine.run import Run

    run = Run(load(path), trigger=trigger)
    track_run(run)
    try:
        assert await run.execute() == 0
    finally:
        await run.close()
    return run.run_id


def pipedeck(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("pipedeck")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)


async def test_runs_are_cached_recorded_and_shown_by_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "pipedeck.yaml"
    path.write_text(PIPELINE)
    (tmp_path / "src").mkdir()
    (tmp_path / "src/a.txt").write_text("hello\n")
    first = await run_once(path)
    second = await run_once(path, trigger="watch")
    (tmp_path / "src/a.txt").write_text("hello world\n")
    third = await run_once(path)
    history = History.for_state_dir(tmp_path / ".pipedeck")
    why = {run: {a.stage: (a.status, a.why) for a in history.attempts(run)}
           for run in (first, second, third)}  # fmt: skip
    assert why[first]["gen"] == ("succeeded", "no earlier run")
    assert why[first]["use"] == ("succeeded", "no inputs/outputs declared")
    assert why[second]["gen"] == ("cached", "up to date")
    assert why[third]["gen"] == ("succeeded", "src/a.txt changed")

    listed = json.loads(pipedeck("history", "-f", str(path), "--json").stdout)
    assert [(r["run_id"], r["status"], r["trigger"]) for r in listed] == [
        (third, "succeeded", "manual"), (second, "succeeded", "watch"),
        (first, "succeeded", "manual")]  # fmt: skip
    assert pipedeck("history", "-f", str(path), "--limit", "1").stdout.count("succeeded") == 1

    shown = pipedeck("show", "-f", str(path)).stdout
    assert third in shown and "src/a.txt changed" in shown and "no inputs/outputs" in shown
    assert "up to date" in pipedeck("show", second[:-2], "-f", str(path)).stdout
    missing = pipedeck("show", "nope", "-f", str(path))
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr

    kept = json.loads(pipedeck("artifacts", "-f", str(path), "--json").stdout)
    assert sorted((a["run_id"], a["path"]) for a in kept) == sorted(
        [(first, "out/all.txt"), (third, "out/all.txt")])  # fmt: skip
    assert "out/all.txt" in pipedeck("artifacts", "--run", third, "-f", str(path)).stdout

    table = json.loads(pipedeck("metrics", "-f", str(path), "--json").stdout)
    assert table == [{"stage": "gen", "runs": [first, third], "metrics": {
        "eval.acc": {"values": [0.5, 0.5], "delta": 0.0},
        "loss": {"values": [6.0, 12.0], "delta": 6.0}}}]  # fmt: skip
    text = pipedeck("metrics", "--stage", "gen", "-f", str(path)).stdout
    assert "loss" in text and "+6" in text
    assert pipedeck("metrics", "--stage", "nope", "-f", str(path)).returncode == 2


def test_the_cli_reports_an_empty_project(tmp_path: Path) -> None:
    path = str(tmp_path / "pipedeck.yaml")
    assert json.loads(pipedeck("history", "-f", path, "--json").stdout) == []
    assert "no runs recorded" in pipedeck("history", "-f", path).stdout
    assert pipedeck("show", "-f", path).returncode == 2
    assert "no artifacts" in pipedeck("artifacts", "-f", path).stdout
    assert "no metrics" in pipedeck("metrics", "-f", path).stdout
    assert not (tmp_path / ".pipedeck").exists()  # reading creates nothing


CRASHING = """\
version: 1
name: crash
stages:
  quick:
    run: echo quick
  slow:
    needs: [quick]
    run: |
      setsid sleep 300 &
      echo started
      sleep 300
"""


def marked(run_id: str) -> list[int]:
    """Pids of live processes whose environment carries PIPEDECK_RUN_ID=run_id."""
    needle = f"PIPEDECK_RUN_ID={run_id}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def test_sigkill_mid_run_leaves_a_sound_db_an_interrupted_run_and_no_processes(tmp_path: Path):
    path = tmp_path / "pipedeck.yaml"
    path.write_text(CRASHING)
    exe = Path(sys.executable).with_name("pipedeck")
    proc = subprocess.Popen([str(exe), "run", str(path)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "started" in line:
            break
    history = History(tmp_path / ".pipedeck/history.db")
    run_id = history.latest_run_id()  # a run's start is written at once
    assert run_id is not None
    assert marked(run_id)  # the stage and its escaped grandchild are running
    deadline = time.monotonic() + 10  # its events are written in batches (BATCH_WAIT)
    while [a.status for a in history.attempts(run_id)] != ["succeeded", "running"]:
        assert time.monotonic() < deadline, history.attempts(run_id)
        time.sleep(0.01)
    proc.kill()
    proc.wait()

    with sqlite3.connect(tmp_path / ".pipedeck/history.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    listed = json.loads(pipedeck("history", "-f", str(path), "--json").stdout)
    assert [(r["run_id"], r["status"]) for r in listed] == [(run_id, "interrupted")]
    statuses = {a.stage: a.status for a in history.attempts(run_id)}
    assert statuses == {"quick": "succeeded", "slow": "interrupted"}
    deadline = time.monotonic() + 10
    while marked(run_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marked(run_id) == []


def test_the_recorder_never_waits_for_the_database(tmp_path: Path) -> None:
    """Issue 10: recording is queued for the writer thread; the caller (the event loop) goes on
    even while another process holds the write lock, and a read waits for the queued writes."""
    history = History(tmp_path / "history.db", timeout=30)
    blocker = sqlite3.connect(tmp_path / "history.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    record_run(history, "r1")
    assert time.monotonic() - started < 1.0
    assert not history.flush(timeout=0.2)  # still queued behind the other writer
    blocker.execute("ROLLBACK")
    assert history.flush(timeout=30)
    run = history.run("r1")
    assert run is not None and run.status == "succeeded"
    assert len(history.attempts("r1")) == 3


def test_old_databases_gain_the_resource_columns(tmp_path: Path) -> None:
    """Issue 14: peak memory and CPU time per attempt, added to an existing history."""
    db = tmp_path / "history.db"
    old = sqlite3.connect(db)
    old.executescript(
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, pipeline TEXT, status TEXT NOT NULL, "
        "started REAL, ended REAL, duration REAL, trigger TEXT, exit_code INTEGER, pid INTEGER, "
        "pid_start INTEGER);"
        "CREATE TABLE attempts (run_id TEXT NOT NULL, stage TEXT NOT NULL, attempt INTEGER NOT "
        "NULL, status TEXT NOT NULL, started REAL, ended REAL, exit_code INTEGER, host TEXT, "
        "fingerprint TEXT, why TEXT, reason TEXT);"
        "INSERT INTO attempts VALUES ('r0', 'old', 1, 'succeeded', 1, 2, 0, 'local', 'f', 'w', "
        "NULL);"
    )
    old.commit()
    old.close()
    history = History(db)
    (kept,) = history.attempts("r0")
    assert (kept.stage, kept.peak_rss, kept.cpu_seconds) == ("old", None, None)
    record_run(history, "r1")
    history.record_resources("r1", "build", 2, peak_rss=50_000_000, cpu_seconds=1.5)
    history.record_resources("r1", "build", 2, peak_rss=20_000_000, cpu_seconds=2.5)
    rows = {(a.stage, a.attempt): a for a in history.attempts("r1")}
    assert (rows["build", 2].peak_rss, rows["build", 2].cpu_seconds) == (50_000_000, 2.5)
    assert rows["build", 1].peak_rss is None
    history.close()
    assert History(db).attempts("r1")[2].cpu_seconds == 2.5  # the migration runs once


def test_huge_limits_are_no_overflow(tmp_path: Path) -> None:
    path = tmp_path / "pipedeck.yaml"
    path.write_text("version: 1\nstages:\n  a:\n    run: echo hi\n    metrics: m.json\n")
    (tmp_path / "m.json").write_text('{"x": 1}')
    assert pipedeck("run", str(path)).returncode == 0
    huge = "99999999999999999999999"
    for command, option in (("history", "--limit"), ("metrics", "--runs")):
        done = pipedeck(command, option, huge, "-f", str(path))  # "all", never an overflow
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "succeeded" in pipedeck("history", "--limit", huge, "-f", str(path)).stdout
    history = History(tmp_path / ".pipedeck/history.db")  # and the store clamps what it gets
    assert len(history.runs(limit=10**30)) == 1
    assert len(history.metrics("a", 10**30)) == 1
    assert history.durations("a", 10**30)


def damage_one_page(db: Path, page: int = 2) -> None:
    """Checkpoint the database, then overwrite one of its pages with garbage."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(db, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\xde\xad" * (size // 2))


def damaged_project(tmp_path: Path) -> Path:
    path = tmp_path / "pipedeck.yaml"
    path.write_text("version: 1\nstages:\n  a:\n    run: echo hi\n")
    assert pipedeck("run", str(path)).returncode == 0
    damage_one_page(tmp_path / ".pipedeck/history.db")
    return path


def assert_moved_aside(tmp_path: Path, stderr: str) -> None:
    notes = [line for line in stderr.splitlines() if "damaged" in line]
    assert len(notes) == 1 and "Traceback" not in stderr, stderr
    (aside,) = (tmp_path / ".pipedeck").glob("history.db.damaged-*[0-9]")
    assert aside.name in notes[0] and str(tmp_path / ".pipedeck/history.db") in notes[0]
    assert aside.stat().st_size > 0  # kept, not deleted


def test_a_damaged_history_is_moved_aside_and_the_run_goes_on(tmp_path: Path) -> None:
    """Issue 9.12: one line naming the damage, the file kept aside, a fresh database."""
    path = damaged_project(tmp_path)
    done = pipedeck("run", str(path))
    assert done.returncode == 0, done.stderr
    assert_moved_aside(tmp_path, done.stderr)
    shown = pipedeck("history", "-f", str(path))
    assert shown.returncode == 0 and "succeeded" in shown.stdout and not shown.stderr


def test_show_on_a_damaged_history_moves_it_aside(tmp_path: Path) -> None:
    path = damaged_project(tmp_path)
    shown = pipedeck("show", "-f", str(path))
    assert_moved_aside(tmp_path, shown.stderr)
    assert "no runs recorded yet" in shown.stderr  # the fresh history is empty


def test_a_file_that_is_not_a_database_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / ".pipedeck").mkdir()
    (tmp_path / ".pipedeck/history.db").write_bytes(b"this is not sqlite" * 100)
    result = pipedeck("history", "-f", str(tmp_path / "pipedeck.yaml"))
    assert result.returncode == 0, result.stderr
    assert_moved_aside(tmp_path, result.stderr)


def test_a_second_connection_does_not_move_the_fresh_database_aside(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    recording = History(db)
    record_run(recording, "r1")
    recording.close()
    damage_one_page(db)
    first, second = History(db, warn=lambda m: None), History(db, warn=lambda m: None)
    assert first.runs() == [] and second.runs() == []
    assert len(list(tmp_path.glob("history.db.damaged-*[0-9]"))) == 1


@pytest.mark.parametrize("problem", ["file", "read-only"])
def test_an_unusable_state_directory_names_the_path_and_cause(tmp_path: Path, problem: str):
    path = tmp_path / "pipedeck.yaml"
    path.write_text("version: 1\nstages:\n  a:\n    run: echo hi\n")
    state = tmp_path / ".pipedeck"
    if problem == "file":
        state.write_text("")
        expected = f"{state} is a file, not a directory"
    else:
        state.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(state)],
                       check=True)  # fmt: skip
        expected = "read-only"
    try:
        done = pipedeck("run", str(path))
    finally:
        if problem != "file":
            subprocess.run(["umount", str(state)], check=True)
    assert done.returncode == 1
    assert "cannot use the run history" in done.stderr and expected in done.stderr, done.stderr
    assert "move it away" not in done.stderr and "Traceback" not in done.stderr


def test_pipedeck_run_caches_the_second_run_and_no_cache_runs_everything(tmp_path: Path):
    path = tmp_path / "pipedeck.yaml"
    path.write_text(PIPELINE)
    (tmp_path / "src").mkdir()
    (tmp_path / "src/a.txt").write_text("hello\n")

    def statuses(*extra: str) -> dict[str, tuple[str, str]]:
        done = pipedeck("run", str(path), "--format", "json", *extra)
        assert done.returncode == 0, done.stderr
        events = [json.loads(line) for line in done.stdout.splitlines()]
        return {
            e["stage"]: (e["status"], e.get("reason", ""))
            for e in events
            if e["type"] == "stage_status" and e["status"] in ("running", "cached")
        }

    assert statuses()["gen"] == ("running", "no earlier run")
    assert statuses()["gen"] == ("cached", "up to date")
    assert statuses("--no-cache")["gen"] == ("running", "--no-cache")


def test_show_lists_peak_memory_and_cpu_time_when_recorded(tmp_path: Path) -> None:
    path = tmp_path / "pipedeck.yaml"
    path.write_text("version: 1\nstages:\n  a:\n    run: echo hi\n")
    assert pipedeck("run", str(path)).returncode == 0
    plain = pipedeck("show", "-f", str(path))  # CPU time exact; too quick for a memory sample
    assert re.search(r"\ba +succeeded +1 +\S+ +- +0\.0s ", plain.stdout), plain.stdout
    history = History(tmp_path / ".pipedeck/history.db")
    run_id = history.latest_run_id()
    assert run_id is not None
    history.record_resources(run_id, "a", 1, peak_rss=3 * 1024 * 1024, cpu_seconds=0.25)
    history.close()
    shown = pipedeck("show", "-f", str(path))
    assert "PEAK MEM" in shown.stdout and "3.0 MiB" in shown.stdout and "0.2s" in shown.stdout
    body = json.loads(pipedeck("show", "--json", "-f", str(path)).stdout)
    assert body["attempts"][0]["peak_rss"] == 3 * 1024 * 1024


def test_track_run_marks_interrupted_runs_without_waiting_for_the_database(tmp_path: Path):
    """Issue 10: starting a run never waits on SQLite; the marking happens in a thread."""
    from engine.cache import track_run
    from engine.run import Run
    from engine.spec import Pipeline, Stage

    db = tmp_path / ".pipedeck/history.db"
    history = History(db, timeout=30)
    gone_pid = subprocess.Popen(["true"])
    gone_pid.wait()
    history.recorder("dead-run")(RunStarted("dead-run", "p", ()))
    history.flush()
    history.transaction(lambda db: db.execute("UPDATE runs SET pid=?", (gone_pid.pid,)))
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    stage = Stage(id="a", name="a", run="true")
    run = Run(Pipeline(tmp_path / "pipedeck.yaml", "p", {"a": stage}, {"a": ("a",)}))
    started = time.monotonic()
    track_run(run, history)
    assert time.monotonic() - started < 1.0
    blocker.execute("ROLLBACK")

    def stored() -> str:  # what the file says (reads show a dead run interrupted anyway)
        return str(blocker.execute("SELECT status FROM runs WHERE run_id='dead-run'").fetchone()[0])

    deadline = time.monotonic() + 30
    while stored() == "running":
        assert time.monotonic() < deadline, "the dead run was never marked"
        time.sleep(0.05)
    assert stored() == "interrupted"


def test_a_dead_run_that_could_not_be_marked_reads_interrupted(tmp_path: Path) -> None:
    """A full disk can keep `mark_interrupted` from writing: reads still tell the truth."""
    history = History(tmp_path / "history.db")
    rec = history.recorder("r1")
    rec(RunStarted("r1", "p", ("a",), ts=1.0))
    rec(StageStatus("r1", "a", "running", 1, "local", ts=2.0))
    gone_pid = subprocess.Popen(["true"])
    gone_pid.wait()
    history.flush()
    history.transaction(lambda db: db.execute("UPDATE runs SET pid=?", (gone_pid.pid,)))
    run = history.run("r1")
    assert run is not None and run.status == "interrupted"
    assert [r.status for r in history.runs()] == ["interrupted"]
    assert [a.status for a in history.attempts("r1")] == ["interrupted"]
    raw = sqlite3.connect(tmp_path / "history.db").execute("SELECT status FROM runs").fetchone()
    assert raw == ("running",)  # nothing was written: only read as it is


def test_version_1_databases_gain_the_slurm_columns(tmp_path: Path) -> None:
    """Issue 13: a history made before job ids (user_version 1) gains job_id and node."""
    db = tmp_path / "history.db"
    History(db).close()
    old = sqlite3.connect(db)
    old.executescript(
        "ALTER TABLE attempts DROP COLUMN job_id; ALTER TABLE attempts DROP COLUMN node;"
        "PRAGMA user_version = 1;"
    )
    old.close()
    history = History(db)
    record_run(history, "r1")
    (first, *_) = history.attempts("r1")
    assert (first.job_id, first.node) == (None, None)
    history.close()


def test_syncs_are_recorded_and_version_2_databases_gain_their_table(tmp_path: Path) -> None:
    """Issue 11: a HostStatus carrying `synced` is one row of `syncs`; others are not."""
    db = tmp_path / "history.db"
    History(db).close()
    old = sqlite3.connect(db)
    old.executescript("DROP TABLE syncs; PRAGMA user_version = 2;")
    old.close()
    history = History(db)
    rec = history.recorder("r1")
    rec(HostStatus("r1", "gpu", "syncing"))
    synced = {"stage": "train", "files": 3, "bytes": 2048, "deleted": 1, "method": "rsync",
              "wire_bytes": 900}  # fmt: skip
    rec(HostStatus("r1", "gpu", "connected", synced=synced))
    rec(HostStatus("r2", "gpu", "connected", synced={**synced, "stage": "other"}))
    assert history.syncs("r1") == [SyncRow("gpu", "train", 3, 2048, 1, "rsync")]
    history.close()


def test_stage_events_close_together_share_a_few_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer waits BATCH_WAIT for more writes: quick stages, an event every millisecond,
    are not a transaction each. Reads still see every event recorded before them."""
    history = History(tmp_path / "history.db")
    commits = []
    once = history._once
    monkeypatch.setattr(history, "_once", lambda fn: commits.append(fn) or once(fn))
    rec = history.recorder("r1")
    rec(RunStarted("r1", "shop", tuple(f"s{i}" for i in range(60)), ts=100.0))
    for i in range(60):  # the load: two events of a quick stage every millisecond or two
        rec(StageStatus("r1", f"s{i}", "running", 1, "local", ts=101.0))
        rec(StageStatus("r1", f"s{i}", "succeeded", 1, "local", exit_code=0, duration=0.0,
                        ts=101.0))  # fmt: skip
        time.sleep(0.002)
    rec(RunFinished("r1", "succeeded", 0, 1.0, ts=102.0))
    assert history.flush(timeout=30)
    assert len(commits) < 30, len(commits)  # 122 writes; one transaction each without the wait
    run = history.run("r1")
    assert run is not None and run.status == "succeeded"
    assert [a.status for a in history.attempts("r1")] == ["succeeded"] * 60
