"""The command line as a user runs it: exit codes, output formats, signals, logs."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.events import LogLines, RunFinished, RunStarted, StageStatus
from engine.loader import load
from engine.logs import LogStore
from tests.conftest import SAMPLES, marked_pids, pipedeck_bin
from tui.console import GithubReporter, JsonReporter, PlainReporter

Write = Callable[..., Path]


def pipedeck(
    *args: str, cwd: Path | None = None, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [pipedeck_bin(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


SIMPLE = """
version: 1
stages:
  lint: {run: echo linted}
  test: {needs: [lint], run: 'echo tested; echo warn >&2'}
"""


def test_run_exit_0_and_plain_format(write_pipeline: Write) -> None:
    done = pipedeck("run", str(write_pipeline(SIMPLE)))
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert "[lint] linted" in out and "[test] tested" in out and "[test] warn" in out
    assert any(line.startswith("[lint] ▶ running (attempt 1)") for line in out)
    assert any(line.startswith("[test] succeeded in ") for line in out)
    assert out.index("[lint] linted") < out.index("[test] tested")


def test_no_command_and_no_terminal_runs_headless(write_pipeline: Write) -> None:
    done = pipedeck(str(write_pipeline(SIMPLE)))
    assert done.returncode == 0 and "[test] tested" in done.stdout


def test_exit_1_when_a_stage_fails(write_pipeline: Write) -> None:
    path = write_pipeline("version: 1\nstages:\n  a: {run: exit 5}\n")
    done = pipedeck("run", str(path))
    assert done.returncode == 1
    assert "[a] failed" in done.stdout and "exit code 5" in done.stdout


def test_exit_2_for_invalid_file_with_position(write_pipeline: Write) -> None:
    path = write_pipeline("version: 1\nstages:\n  a: {run: echo, neeeds: [b]}\n")
    done = pipedeck("run", str(path))
    assert done.returncode == 2
    assert f"{path}:3:" in done.stderr and "Traceback" not in done.stderr
    assert pipedeck("validate", str(path)).returncode == 2


def test_exit_2_for_usage_errors(write_pipeline: Write, tmp_path: Path) -> None:
    path = write_pipeline(SIMPLE)
    done = pipedeck("run", str(path), "--stage", "tset")
    assert done.returncode == 2 and "did you mean 'test'" in done.stderr
    assert pipedeck("run", str(tmp_path / "missing.yaml")).returncode == 2
    assert pipedeck("run", str(path), "--jobs", "0").returncode == 2
    assert pipedeck("--no-such-flag").returncode == 2


def test_json_event_stream(write_pipeline: Write) -> None:
    done = pipedeck("run", str(write_pipeline(SIMPLE)), "--format", "json")
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert all({"type", "ts", "run_id"} <= e.keys() for e in events)
    assert events[0]["type"] == "run_started" and events[0]["stages"] == ["lint", "test"]
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "succeeded"
    assert events[-1]["exit_code"] == 0 and events[-1]["duration"] >= 0
    logs = [e for e in events if e["type"] == "log"]
    assert {(e["stage"], e["stream"], e["text"], e["attempt"]) for e in logs} == {
        ("lint", "stdout", "linted", 1),
        ("test", "stdout", "tested", 1),
        ("test", "stderr", "warn", 1),
    }
    ends = [e for e in events if e["type"] == "stage_status" and e["status"] == "succeeded"]
    assert {e["stage"] for e in ends} == {"lint", "test"}
    assert all(e["exit_code"] == 0 and e["host"] == "local" and e["duration"] >= 0 for e in ends)


def test_junit_report(write_pipeline: Write, tmp_path: Path) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          good: {run: echo fine}
          bad: {run: 'echo "it broke here"; exit 1'}
          later: {needs: [bad], run: echo never}
    """)
    report = tmp_path / "out" / "junit.xml"
    assert pipedeck("run", str(path), "--junit", str(report)).returncode == 1
    suite = ET.parse(report).getroot()
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    failure = cases["bad"].find("failure")
    assert failure is not None and "it broke here" in (failure.text or "")
    assert cases["later"].find("skipped") is not None
    assert cases["good"].find("failure") is None


def test_junit_allowed_failure_is_no_failure(write_pipeline: Write, tmp_path: Path) -> None:
    """A CI system reads `<failure>` as red: an allowed failure, which passes the run, is a
    skipped testcase saying it failed, with its log."""
    path = write_pipeline("""
        version: 1
        stages:
          ok: {run: echo fine}
          opt: {allow_failure: true, run: 'echo nope; exit 3'}
    """)
    report = tmp_path / "junit.xml"
    assert pipedeck("run", str(path), "--junit", str(report)).returncode == 0
    suite = ET.parse(report).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "0", "0")
    assert suite.get("skipped") == "1"
    opt = next(c for c in suite.iter("testcase") if c.get("name") == "opt")
    skipped = opt.find("skipped")
    assert opt.find("failure") is None and skipped is not None
    assert (skipped.get("message") or "").startswith("allowed to fail: ")
    assert "nope" in (opt.findtext("system-out") or "")


def test_plain_output_hides_every_not_cacheable_why(write_pipeline: Write) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          neither: {run: echo a}
          inputs_only: {inputs: ["*.yaml"], run: echo b}
          outputs_only: {outputs: ["out.txt"], run: echo c > out.txt}
    """)
    done = pipedeck("run", str(path))
    running = [line for line in done.stdout.splitlines() if "▶ running" in line]
    assert len(running) == 3 and all(line.endswith("(attempt 1)") for line in running), running


def _start(path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [pipedeck_bin(), "run", str(path), "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_output(proc: subprocess.Popen[str], text: str) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if text in line:
            return json.loads(line)["run_id"]
    raise AssertionError(f"{text!r} never printed")


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
def test_signals_cancel_in_order(write_pipeline: Write, signum: int, code: int) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          long:
            kill_grace: 5s
            run: |
              trap 'echo "cleaning up"; exit 7' TERM
              echo ready
              sleep 30 & wait
          after: {needs: [long], run: echo never}
    """)
    proc = _start(path)
    run_id = _wait_for_output(proc, "ready")
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == code
    # only a second Ctrl-C kills at once: SIGTERM's notice does not promise it
    assert ("Ctrl-C again" in err) == (signum == signal.SIGINT)
    events = [json.loads(line) for line in out.splitlines()]
    assert any(e.get("text") == "cleaning up" for e in events)
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "cancelled"
    assert marked_pids(run_id) == []


def test_second_ctrl_c_kills_at_once(write_pipeline: Write) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          stubborn:
            kill_grace: 60s
            run: |
              trap '' TERM
              echo ready
              sleep 60 & wait; sleep 60
    """)
    proc = _start(path)
    run_id = _wait_for_output(proc, "ready")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None  # still in its 60 s grace
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert marked_pids(run_id) == []


def test_logs_command_prints_stored_log(write_pipeline: Write, tmp_path: Path) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          a: {retries: 1, run: 'echo "attempt $PIPEDECK_ATTEMPT"; test "$PIPEDECK_ATTEMPT" = 2'}
    """)
    done = pipedeck("run", str(path), "--format", "json")
    run_id = json.loads(done.stdout.splitlines()[0])["run_id"]
    assert pipedeck("logs", "a", cwd=tmp_path).stdout == "attempt 2\n"
    assert pipedeck("logs", "a", "--attempt", "1", cwd=tmp_path).stdout == "attempt 1\n"
    assert pipedeck("logs", "--run", run_id, "a", "-f", str(path)).stdout == "attempt 2\n"
    missing = pipedeck("logs", "nope", cwd=tmp_path)
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_validate_graph_schema_version(write_pipeline: Write) -> None:
    path = write_pipeline(SIMPLE)
    assert "ok, 2 stage(s)" in pipedeck("validate", str(path)).stdout
    assert "lint" in pipedeck("graph", str(path)).stdout
    dot = pipedeck("graph", str(path), "--format", "dot").stdout
    assert "digraph" in dot and "lint" in dot and "test" in dot
    assert "s0 --> s1" in pipedeck("graph", str(path), "--format", "mermaid").stdout
    schema = json.loads(pipedeck("schema").stdout)
    assert "stages" in schema["properties"]
    assert pipedeck("--version").stdout.startswith("pipedeck ")
    assert "run" in pipedeck("--help").stdout


def test_samples_behave_as_documented(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    work = tmp_path / "samples"
    subprocess.run(["cp", "-r", str(SAMPLES), str(work)], check=True)
    ci = pipedeck("run", str(work / "ci.yaml"), "--approve", "deploy", env=env, timeout=120)
    assert ci.returncode == 0, ci.stdout + ci.stderr
    assert list((work / "deployed").glob("shop-*.whl"))
    ml = pipedeck("run", str(work / "ml.yaml"), env=env, timeout=120)
    assert ml.returncode == 0, ml.stdout + ml.stderr
    assert list((work / "ml" / "published").glob("model-*.json"))
    failing = pipedeck("run", str(work / "failing.yaml"), "--format", "json", env=env, timeout=120)
    assert failing.returncode == 1
    final = {}
    for line in failing.stdout.splitlines():
        event = json.loads(line)
        if event["type"] == "stage_status":
            final[event["stage"]] = event
    assert final["flaky"]["status"] == "succeeded" and final["flaky"]["attempt"] == 2
    assert final["slow"]["status"] == "timed_out"
    assert final["optional"]["status"] == "failed"
    assert final["after_optional"]["status"] == "succeeded"
    assert final["broken"]["status"] == "failed"
    assert final["after_broken"]["status"] == "skipped"
    assert final["report"]["status"] == "succeeded"
    assert final["cleanup"]["status"] == "succeeded"


def test_run_watch_reruns_affected_and_stops_on_ctrl_c(
    write_pipeline: Write, tmp_path: Path
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("one\n")
    path = write_pipeline("""
        version: 1
        stages:
          read: {run: cat src/a.txt, inputs: ["src/*.txt"]}
          other: {run: echo other, inputs: ["docs/*"]}
    """)
    proc = subprocess.Popen(
        [pipedeck_bin(), "run", str(path), "--watch"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line.rstrip("\n"))
        if line.startswith("run ") and "succeeded" in line:
            if sum(s.startswith("run ") for s in seen) == 1:
                (tmp_path / "src" / "a.txt").write_text("two\n")
            else:
                break
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "[read] one" in seen and "[read] two" in seen
    separator = [s for s in seen if "changed: src/a.txt" in s]
    assert separator and seen.index(separator[0]) < seen.index("[read] two")
    assert seen.count("[other] other") == 1  # unaffected: kept its result


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_closed_pipe_finishes_the_run_quietly(
    write_pipeline: Write, tmp_path: Path, fmt: str
) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          chatty: {run: seq 1 200000}
          after: {needs: [chatty], run: 'echo done > after.txt'}
    """)
    proc = subprocess.run(
        f"{pipedeck_bin()} run {path} --format {fmt} | head -1; echo status=${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "status=0" in proc.stdout and "Traceback" not in proc.stderr, proc.stderr
    assert (tmp_path / "after.txt").read_text() == "done\n"


def test_graph_into_a_closed_pipe_is_no_traceback(write_pipeline: Write) -> None:
    name = "a_stage_whose_long_name_fills_the_pipe_buffer_quickly_{:04d}"
    stages = "".join(
        f"  {name.format(i)}: {{run: 'true', needs: [{name.format(i - 1)}]}}\n"
        for i in range(1, 999)
    )
    path = write_pipeline(f"version: 1\nstages:\n  {name.format(0)}: {{run: 'true'}}\n{stages}")
    proc = subprocess.run(
        f"{pipedeck_bin()} graph {path} --format dot | head -1; echo status=${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.startswith("digraph") and "Traceback" not in proc.stderr
    assert "status=141" in proc.stdout  # the pipe did close under it


def test_damaged_history_is_a_message_not_a_traceback(
    write_pipeline: Write, tmp_path: Path
) -> None:
    path = write_pipeline(SIMPLE)
    (tmp_path / ".pipedeck").mkdir()
    (tmp_path / ".pipedeck" / "history.db").write_bytes(b"this is not a database" * 100)
    done = pipedeck("run", str(path))
    assert done.returncode == 0 and "Traceback" not in done.stderr  # moved aside; the run goes on
    assert "history.db" in done.stderr and "damaged" in done.stderr


def test_watch_path_missing_is_a_usage_error(write_pipeline: Write) -> None:
    path = write_pipeline("""
        version: 1
        watch: {paths: [no_such_dir]}
        stages:
          a: {run: echo a}
    """)
    done = pipedeck("run", str(path), "--watch")
    assert done.returncode == 2 and "no_such_dir" in done.stderr
    assert "Traceback" not in done.stderr


FAILING = """
version: 1
stages:
  ok: {run: echo fine}
  flaky: {run: 'echo meh; exit 3', allow_failure: true}
  test:
    matrix: {py: ["3.11", "3.12"]}
    run: 'for i in $(seq 1 15); do echo "line $i of ${{ matrix.py }}"; done; exit 1'
  after: {needs: [test], run: echo never}
"""


def _run_id(out: str) -> str:
    return out.strip().splitlines()[-1].split()[1]  # "run ID failed in ..."


def test_a_failed_plain_run_ends_with_a_summary_from_the_logs(
    write_pipeline: Write, tmp_path: Path
) -> None:
    path = write_pipeline(FAILING)
    done = pipedeck("run", str(path), cwd=tmp_path)
    assert done.returncode == 1
    out = done.stdout.splitlines()
    run_id = _run_id(done.stdout)
    summary = out[out.index("2 stage(s) failed:") :]
    first = summary.index("── test[py=3.11] failed: exit code 1")
    assert summary[first + 1 : first + 11] == [f"   line {i} of 3.11" for i in range(6, 16)]
    command = f"pipedeck logs --run {run_id} 'test[py=3.11]'"
    assert summary[first + 11] == f"   whole log: {command}"
    assert "── test[py=3.12] failed: exit code 1" in summary
    assert not any("flaky" in line for line in summary)  # allowed to fail: not a failure
    shown = pipedeck(*command.split()[1:3], run_id, "test[py=3.11]", cwd=tmp_path)
    assert shown.stdout.splitlines() == [f"line {i} of 3.11" for i in range(1, 16)]


def test_the_summary_reads_the_log_store_not_the_printed_lines(tmp_path: Path) -> None:
    logs = LogStore(tmp_path / "logs")
    writer = logs.writer("r1", "a", 1)
    writer.feed("stdout", b"".join(b"stored %d\n" % i for i in range(30)))
    writer.finish()
    out = io.StringIO()
    reporter = PlainReporter(out, logs=logs)
    reporter(RunStarted("r1", "p", ("a",)))
    reporter(StageStatus("r1", "a", "running", 1, "local"))
    reporter(LogLines("r1", "a", 1, "stdout", ("printed",)))
    reporter(StageStatus("r1", "a", "failed", 1, "local", exit_code=2, reason="exit code 2"))
    reporter(RunFinished("r1", "failed", 1, 0.5))
    tail = out.getvalue().split("1 stage(s) failed:\n")[1].splitlines()
    assert tail[0] == "── a failed: exit code 2"
    assert tail[1:11] == [f"   stored {i}" for i in range(20, 30)]
    assert tail[11] == "   whole log: pipedeck logs --run r1 a"


def test_allowed_failures_look_different(write_pipeline: Write) -> None:
    done = pipedeck("run", str(write_pipeline(FAILING)), "--color", "always")
    assert "\x1b[33m[flaky] " not in done.stdout  # the prefix keeps its stage colour
    assert "\x1b[33mfailed (allowed) in " in done.stdout
    assert "\x1b[31mfailed in " in done.stdout  # test[...]: a real failure, in red


def test_logs_of_a_matrix_stage_shows_each_instance(write_pipeline: Write, tmp_path: Path) -> None:
    pipedeck("run", str(write_pipeline(FAILING)), cwd=tmp_path)
    shown = pipedeck("logs", "test", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    heads = [line for line in lines if line.startswith("==> ")]
    assert [h.split(" (")[0] for h in heads] == ["==> test[py=3.11]", "==> test[py=3.12]"]
    assert lines[lines.index(heads[1]) + 1] == "line 1 of 3.12"
    assert pipedeck("logs", "tes", cwd=tmp_path).returncode == 2
    from_elsewhere = pipedeck("logs", "-f", str(tmp_path), "test[py=3.12]", cwd=tmp_path.parent)
    assert from_elsewhere.stdout.splitlines()[0] == "line 1 of 3.12"


def test_logs_of_stages_that_printed_nothing_are_empty_not_missing(
    write_pipeline: Write, tmp_path: Path
) -> None:
    """A silent attempt stores no log files (engine.logs), yet `pipedeck logs` still has it."""
    path = write_pipeline("""
        version: 1
        stages:
          quiet: {run: "true"}
          each: {matrix: {n: ["1", "2"]}, run: 'test ${{ matrix.n }} = 1 || echo two'}
    """)
    assert pipedeck("run", str(path)).returncode == 0
    quiet = pipedeck("logs", "quiet", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stdout == "", quiet.stderr
    assert pipedeck("logs", "quiet", "--attempt", "2", cwd=tmp_path).returncode == 2
    heads = [line for line in pipedeck("logs", "each", cwd=tmp_path).stdout.splitlines()]
    assert [h.split(" (")[0] for h in heads if h.startswith("==> ")] == [
        "==> each[n=1]",
        "==> each[n=2]",
    ]
    assert heads[-1] == "two"


def test_the_summary_names_the_workspace_when_run_from_elsewhere(
    write_pipeline: Write, tmp_path: Path
) -> None:
    path = write_pipeline("version: 1\nstages:\n  a: {run: 'echo oops; exit 1'}\n", "ci.yaml")
    done = pipedeck("run", str(path), cwd=tmp_path.parent)
    command = next(line for line in done.stdout.splitlines() if "whole log:" in line)
    assert command.endswith(f"-f {tmp_path.name} a")
    words = command.split("whole log: pipedeck ")[1].split()
    assert pipedeck(*words, cwd=tmp_path.parent).stdout == "oops\n"


def test_github_actions_folds_stages_and_writes_a_step_summary(
    write_pipeline: Write, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    env = {**os.environ, "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    done = pipedeck("run", str(write_pipeline(FAILING)), cwd=tmp_path, env=env)
    assert done.returncode == 1
    out = done.stdout.splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("::group::[test[py=3.12]]"))
    assert out[start].startswith("::group::[test[py=3.12]] failed in ")
    assert out[start + 1 : start + 16] == [f"line {i} of 3.12" for i in range(1, 16)]
    assert out[start + 16] == "::endgroup::"
    assert out[start + 17].startswith(
        "::error title=pipedeck%3A test[py=3.12]::test[py=3.12] failed"
    )
    assert any(
        line.startswith("::warning title=pipedeck%3A flaky::flaky failed (allowed)") for line in out
    )
    assert not any(line.startswith("[test[py=3.12]] line") for line in out)  # only in its group
    text = summary.read_text()
    assert text.startswith("earlier step\n### pipedeck · pipedeck: failed in ")
    assert "| `ok` | ✅ succeeded |" in text and "| `flaky` | ⚠️ failed (allowed) |" in text
    assert "| `after` | ⏭️ skipped |" in text
    assert "#### ❌ `test[py=3.11]` failed: exit code 1\n\n```text\nline 6 of 3.11\n" in text


def test_junit_into_a_directory_is_refused_before_anything_runs(
    write_pipeline: Write, tmp_path: Path
) -> None:
    path = write_pipeline("version: 1\nstages:\n  a: {run: touch ran.txt}\n")
    done = pipedeck("run", str(path), "--junit", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"pipedeck: --junit {tmp_path}: is a directory; name a file, e.g. {tmp_path / 'junit.xml'}"
    )
    assert not (tmp_path / "ran.txt").exists() and not (tmp_path / ".pipedeck").exists()


@pytest.mark.parametrize("redirect", [">&-", "> /dev/full"])
def test_closed_or_full_stdout_is_no_traceback_and_the_run_is_recorded(
    write_pipeline: Write, tmp_path: Path, redirect: str
) -> None:
    path = write_pipeline("version: 1\nstages:\n  a: {run: 'seq 1 20000; touch ran.txt'}\n")
    done = subprocess.run(
        f"{pipedeck_bin()} run {path} {redirect}",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert (tmp_path / "ran.txt").exists()
    if "full" in redirect:
        assert done.stderr.count("\n") == 1 and "No space left on device" in done.stderr
    history = pipedeck("history", "--json", "-f", str(path))
    assert json.loads(history.stdout)[0]["status"] == "succeeded"


def test_huge_counts_mean_as_many_as_there_are(write_pipeline: Write, tmp_path: Path) -> None:
    path = write_pipeline("version: 1\nstages:\n  a: {run: echo hi}\n")
    huge = "99999999999999999999999"
    done = pipedeck("run", str(path), "--jobs", huge)
    assert done.returncode == 0 and "[a] hi" in done.stdout, done.stderr
    runs = json.loads(pipedeck("history", "--json", "--limit", huge, cwd=tmp_path).stdout)
    missing = pipedeck("logs", "a", "--attempt", huge, cwd=tmp_path)
    assert (
        missing.stderr
        == f"pipedeck: a: run {runs[0]['run_id']} has no attempt 1000000 (attempts: 1)\n"
    )
    assert "expected a number >= 1" in pipedeck("history", "--limit", "0", cwd=tmp_path).stderr


def test_force_reruns_a_cached_stage_but_not_its_upstream(
    write_pipeline: Write, tmp_path: Path
) -> None:
    (tmp_path / "in.txt").write_text("x\n")
    path = write_pipeline("""
        version: 1
        stages:
          setup: {run: 'cp in.txt a.txt', inputs: [in.txt], outputs: [a.txt]}
          test:
            needs: [setup]
            matrix: {py: ["3.11", "3.12"]}
            run: 'cp a.txt b${{ matrix.py }}.txt'
            inputs: [a.txt]
            outputs: ["b${{ matrix.py }}.txt"]
    """)
    assert pipedeck("run", str(path)).returncode == 0

    def statuses(*extra: str) -> dict[str, str]:
        done = pipedeck("run", str(path), "--format", "json", *extra)
        assert done.returncode == 0, done.stderr
        events = [json.loads(line) for line in done.stdout.splitlines()]
        return {e["stage"]: e["status"] for e in events if e["type"] == "stage_status"}

    assert set(statuses().values()) == {"cached"}
    assert statuses("--force", "test[py=3.12]") == {
        "setup": "cached",
        "test[py=3.11]": "cached",
        "test[py=3.12]": "succeeded",
    }
    assert statuses("--force", "test")["test[py=3.11]"] == "succeeded"
    done = pipedeck("run", str(path), "--force", "tset")
    assert done.returncode == 2 and "did you mean 'test'" in done.stderr


def test_color_true_reaches_the_stage_environment(write_pipeline: Write) -> None:
    path = write_pipeline("""
        version: 1
        color: true
        stages:
          a: {run: 'echo "$FORCE_COLOR $CLICOLOR_FORCE $PY_COLORS"'}
    """)
    assert "[a] 1 1 1" in pipedeck("run", str(path)).stdout.splitlines()


def test_color_never_strips_the_stages_own_escapes_and_auto_passes_them(
    write_pipeline: Write,
) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          a: {run: 'printf "\\033[31mred\\033[0m \\033]0;title\\007plain\\033[K\\n"; exit 1'}
    """)
    never = pipedeck("run", str(path), "--color", "never").stdout
    assert "[a] red plain\n" in never and "\x1b" not in never  # the failure summary's too
    assert "\x1b[31mred" in pipedeck("run", str(path)).stdout  # piped, `auto`: passed through


def test_a_10000_stage_monorepo_validates(tmp_path: Path) -> None:
    lines = ["version: 1", "stages:"]
    lines += [f"  pkg{i}: {{run: 'true', inputs: ['pkg{i}/**']}}" for i in range(10_000)]
    (tmp_path / "pipedeck.yaml").write_text("\n".join(lines) + "\n")
    done = pipedeck("validate", cwd=tmp_path)
    assert done.returncode == 0 and "ok, 10000 stage(s)" in done.stdout


def test_ui_takes_force_and_checks_its_stages(write_pipeline: Write) -> None:
    path = write_pipeline(SIMPLE)
    done = pipedeck("ui", str(path), "--force", "tset")
    assert (
        done.returncode == 2 and "--force tset: no such stage (did you mean 'test'?)" in done.stderr
    )


def test_a_reason_that_repeats_the_status_is_not_printed() -> None:
    out = io.StringIO()
    reporter = PlainReporter(out)
    reporter(StageStatus("r1", "a", "cancelled", 1, "local", duration=0.5, reason="cancelled"))
    reporter(StageStatus("r1", "b", "cancelled", 1, "local", reason="run cancelled"))
    # nor the duration its reason repeats (the history keeps the whole reason)
    reason = "run cancelled, after 57.8s"
    reporter(StageStatus("r1", "c", "cancelled", 1, "local", duration=57.84, reason=reason))
    assert out.getvalue().splitlines() == [
        "[a] cancelled in 0.5s",
        "[b] cancelled: run cancelled",
        "[c] cancelled in 57.8s: run cancelled",
    ]


def test_github_output_is_written_off_the_callers_thread(
    write_pipeline: Write, tmp_path: Path
) -> None:
    logs = LogStore(tmp_path / "logs")
    writer = logs.writer("r1", "a", 1)
    writer.feed("stdout", b"one\ntwo\n")
    writer.finish()
    gate = threading.Event()

    class Gated(io.StringIO):
        def write(self, text: str) -> int:
            assert gate.wait(30), "never released"
            return super().write(text)

    out = Gated()
    pipeline = load(write_pipeline("version: 1\nstages:\n  a: {run: x}\n"), environ={})
    reporter = GithubReporter(out, logs, pipeline)
    reporter(RunStarted("r1", "p", ("a",)))
    reporter(StageStatus("r1", "a", "running", 1, "local"))
    reporter(StageStatus("r1", "a", "succeeded", 1, "local", exit_code=0, duration=0.1))
    assert out.getvalue() == ""  # returned although stdout is stuck: nothing waits on it
    gate.set()
    reporter(RunFinished("r1", "succeeded", 0, 0.2))  # returns once everything is written
    assert out.getvalue().splitlines()[1:] == [
        "::group::[a] succeeded in 0.1s",
        "one",
        "two",
        "::endgroup::",
        "run r1 succeeded in 0.2s (exit 0)",
    ]


async def test_ui_runs_with_the_run_options(write_pipeline: Write) -> None:
    """`pipedeck ui --stage S --no-cache --jobs N` runs what `run` would: S and what it needs
    (nothing else), cached stages again, at most N local stages at once."""
    from tests.tui.conftest import until
    from tui.app import PipedeckApp, tui_session
    from tui.cli import _parser, ui_options

    path = write_pipeline("""
        version: 1
        stages:
          gen: {run: 'cp gen.in gen.out', inputs: [gen.in], outputs: [gen.out]}
          b: {needs: [gen], run: 'sleep 0.3'}
          c: {needs: [gen], run: 'sleep 0.3'}
          other: {run: 'true'}
    """)
    (path.parent / "gen.in").write_text("x\n")
    assert pipedeck("run", str(path)).returncode == 0
    assert "[gen] cached" in pipedeck("run", str(path)).stdout  # fresh: only --no-cache runs it
    argv = ["ui", str(path), "--stage", "b", "--stage", "c", "--no-cache", "--jobs", "1"]
    session = tui_session(load(path), **ui_options(_parser("ui").parse_args(argv)))
    run = session.new_run()
    app = PipedeckApp(run, make_run=session.new_run, session=session)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: not run.running and run.states["c"].ended, "the run")
    states = run.states
    assert sorted(run.stage_ids) == ["b", "c", "gen"]
    assert states["gen"].status == "succeeded"  # not "cached"
    first, second = sorted((states[s].started, states[s].ended) for s in "bc")
    assert first[1] is not None and second[0] is not None and first[1] <= second[0]


def test_plain_output_prefixes_every_line_and_hides_step_markers() -> None:
    """A GitHub Actions job's step markers become step lines, never output lines; the search for
    them is one substring test per chunk, not one per line (5,000,000 lines: issue 10)."""
    from engine.gha.commands import STEP_MARKER

    out = io.StringIO()
    reporter = PlainReporter(out)
    reporter(LogLines("r", "a", 1, "stdout", ("one", "two")))
    reporter(LogLines("r", "job", 1, "stdout", ("x", f"{STEP_MARKER}start 0", "y")))
    reporter(LogLines("r", "job", 1, "stdout", (f"{STEP_MARKER}end 0",)))
    reporter(LogLines("r", "b", 1, "stdout", (f"not a marker: {STEP_MARKER}",)))
    assert out.getvalue().splitlines() == [
        "[a] one",
        "[a] two",
        "[job] x",
        "[job] y",
        f"[b] not a marker: {STEP_MARKER}",
    ]


def test_json_output_leaves_step_markers_to_step_status_events() -> None:
    """The markers a job's runner prints are its `step_status` events: JSON log events never
    carry them (a line merely containing one is output)."""
    from engine.gha.commands import STEP_MARKER

    out = io.StringIO()
    reporter = JsonReporter(out)
    reporter(LogLines("r", "job", 1, "stdout", ("x", f"{STEP_MARKER}{{}}", "y")))
    reporter(LogLines("r", "job", 1, "stdout", (f"{STEP_MARKER}{{}}",)))
    reporter(LogLines("r", "b", 1, "stdout", (f"not a marker: {STEP_MARKER}",)))
    texts = [json.loads(line)["text"] for line in out.getvalue().splitlines()]
    assert texts == ["x", "y", f"not a marker: {STEP_MARKER}"]


def test_the_running_line_gives_a_reason_only_where_the_cache_had_one(
    write_pipeline: Write,
) -> None:
    """A stage without inputs and outputs always runs: its plain running line says no more
    than that (history keeps the why); a cacheable stage's line says why it runs."""
    path = write_pipeline("""
        version: 1
        stages:
          plain: {run: 'true'}
          made: {run: 'echo x > out.txt', inputs: [pipedeck.yaml], outputs: [out.txt]}
    """)
    lines = pipedeck("run", str(path)).stdout.splitlines()
    assert "[plain] ▶ running (attempt 1)" in lines
    assert "[made] ▶ running (attempt 1): no earlier run" in lines


def test_collection_resumes_once_started_and_after_any_command(tmp_path: Path) -> None:
    """Start-up runs without the cyclic collector; a run resumes it with what start-up made
    frozen, and a command that never starts anything turns it back on as it returns."""
    (tmp_path / "p.yaml").write_text(SIMPLE)
    script = (
        "import gc, sys\n"
        "from tui.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(gc.isenabled(), gc.get_freeze_count() > 0)\n"
    )
    for argv, frozen in ((["run", "p.yaml"], True), (["validate", "p.yaml"], False)):
        done = subprocess.run(
            [sys.executable, "-c", script, *argv],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.stdout.splitlines()[-1] == f"True {frozen}", (argv, done.stderr)


def test_plain_output_draws_a_jobs_workflow_commands() -> None:
    """Issue 12: groups, errors and warnings read in the plain output as in the log view; a
    group's end and GitHub's raw `##[...]` syntax never show; other `##` lines are output."""
    out = io.StringIO()
    reporter = PlainReporter(out)
    lines = ("##[group]Install", "inside", "##[endgroup]", "##[error]a.py:3: bad", "## title")
    reporter(LogLines("r", "job", 1, "stdout", lines))
    assert out.getvalue().splitlines() == [
        "[job] ▾ Install",
        "[job] inside",
        "[job] ✖ Error: a.py:3: bad",
        "[job] ## title",
    ]


def test_options_are_never_abbreviated(write_pipeline: Write) -> None:
    """`--job tests` (a workflow user picking a job) is no `--jobs tests`."""
    done = pipedeck("run", str(write_pipeline(SIMPLE)), "--job", "2")
    assert done.returncode == 2 and "unrecognized arguments: --job 2" in done.stderr
