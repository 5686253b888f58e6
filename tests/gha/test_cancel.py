"""Cancelling a workflow job, as on GitHub: the running step ends `cancelled`, the `always()` and
`cancelled()` steps still run, and every step that started gets a final `step_status` even when
the job's runner is killed (a second cancel)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import textwrap
from pathlib import Path

from engine.events import LogLines, StepStatus
from engine.gha.loader import load_workflow
from engine.run import Run
from tests.conftest import Recorder, marked_pids, pipedeck_bin
from tests.gha.test_runner import run
from tests.waiting import until

# the QA repro: the running step leaves a process in its own session that holds its output open
WORKFLOW = """
on: push
jobs:
  j:
    runs-on: ubuntu-latest
    steps:
      - run: echo one
      - run: echo started; (setsid sleep 777 &) ; sleep 778
      - run: echo never
      - if: always()
        run: echo cleanup-step; ALWAYS_STEP
      - if: cancelled()
        run: echo was-cancelled
"""


def write(tmp_path: Path, always: str = "") -> Path:
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    path = folder / "w.yml"
    path.write_text(textwrap.dedent(WORKFLOW).replace("ALWAYS_STEP", always or "true"))
    return path


def final_steps(statuses: list[tuple[int, str]]) -> dict[int, str]:
    """Each step's last status (the events in order)."""
    return dict(statuses)


def step_statuses(recorder: Recorder) -> list[tuple[int, str]]:
    return [(e.step, e.status) for e in recorder.events if isinstance(e, StepStatus)]


async def start(path: Path, text: str) -> tuple[Run, Recorder, asyncio.Task[int]]:
    the_run = Run(load_workflow(path).pipeline)
    recorder = Recorder()
    the_run.subscribe(recorder)
    task = asyncio.create_task(the_run.execute())
    await until(lambda: text in recorder.lines("j"), f"the job to print {text!r}")
    return the_run, recorder, task


async def test_cancel_ends_the_running_step_and_runs_always_and_cancelled_steps(
    tmp_path: Path,
) -> None:
    the_run, recorder, task = await start(write(tmp_path), "started")
    the_run.cancel("j")
    await asyncio.wait_for(task, 30)
    await the_run.close()
    assert final_steps(step_statuses(recorder)) == {
        0: "succeeded",
        1: "cancelled",
        2: "skipped",
        3: "succeeded",
        4: "succeeded",
    }
    lines = recorder.lines("j")
    assert "cleanup-step" in lines and "was-cancelled" in lines and "never" not in lines
    assert "##[error]The operation was canceled." in lines
    skipped = [e for e in recorder.events if isinstance(e, StepStatus) and e.step == 2]
    assert skipped[-1].reason == "cancelled by request"  # as the TUI's `c` says it
    assert recorder.final("j").status == "cancelled"
    assert marked_pids(the_run.run_id) == []


async def test_a_second_cancel_kills_the_job_and_the_engine_ends_its_open_step(
    tmp_path: Path,
) -> None:
    """The `always()` step hangs: a second cancel SIGKILLs the runner before it can say how the
    step ended, so the engine closes the step as cancelled."""
    the_run, recorder, task = await start(write(tmp_path, "sleep 779"), "started")
    the_run.cancel("j")
    await until(lambda: "cleanup-step" in recorder.lines("j"), "the always() step to start")
    the_run.cancel("j")
    await asyncio.wait_for(task, 30)
    await the_run.close()
    ends = final_steps(step_statuses(recorder))
    assert ends[1] == "cancelled" and ends[3] == "cancelled"
    closed = [e for e in recorder.events if isinstance(e, StepStatus) and e.step == 3][-1]
    assert closed.reason == "the job's runner was killed while the step ran"
    assert closed.duration is not None
    # the closing marker is in the stored log too (the plain output and history read it)
    assert any(
        isinstance(e, LogLines) and any('"step": 3, ' in x and "cancelled" in x for x in e.lines)
        for e in recorder.events
    )
    assert marked_pids(the_run.run_id) == []


def test_sigint_to_a_headless_run_cancels_like_github(tmp_path: Path) -> None:
    path = write(tmp_path)
    proc = subprocess.Popen(
        [pipedeck_bin(), "run", str(path), "--format", "json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    events = []
    for line in proc.stdout:  # ends at the run's end, or the test's timeout
        events.append(json.loads(line))
        if events[-1].get("text") == "started":
            proc.send_signal(signal.SIGINT)
            break
    out, _ = proc.communicate(timeout=30)
    events += [json.loads(line) for line in out.splitlines()]
    assert proc.returncode == 130
    ends = {e["step"]: e["status"] for e in events if e["type"] == "step_status"}
    assert ends == {0: "succeeded", 1: "cancelled", 2: "skipped", 3: "succeeded", 4: "succeeded"}
    # a person cancelled the run: the steps say so as the stage does, not which signal came
    skipped = next(e for e in events if e["type"] == "step_status" and e["step"] == 2)
    assert skipped["reason"] == "run cancelled"
    stage = [e for e in events if e["type"] == "stage_status"][-1]
    assert (stage["status"], stage["reason"][:20]) == ("cancelled", "run cancelled, after")
    assert not any("SIGTERM" in json.dumps(e) for e in events)
    texts = [e.get("text") for e in events if e["type"] == "log"]
    assert "cleanup-step" in texts and "was-cancelled" in texts
    assert marked_pids(events[0]["run_id"]) == []


async def test_a_step_ends_with_its_process_though_a_background_one_holds_its_output(
    tmp_path: Path,
) -> None:
    path = write(tmp_path)
    path.write_text(
        "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: (setsid sleep 300 &) ; echo left\n      - run: echo next\n"
    )
    recorder, code, the_run = await asyncio.wait_for(run(path), 30)
    assert code == 0
    assert final_steps(step_statuses(recorder)) == {0: "succeeded", 1: "succeeded"}
    assert marked_pids(the_run.run_id) == []  # what the step left is killed with the job


async def test_fromjson_of_an_output_a_skipped_step_would_have_set_names_the_step(
    tmp_path: Path,
) -> None:
    """attrs' ci.yml: the matrix comes from a job output set by a step that was skipped."""
    path = write(tmp_path)
    path.write_text(
        textwrap.dedent("""
        on: push
        jobs:
          build:
            runs-on: ubuntu-latest
            outputs:
              versions: ${{ steps.baipp.outputs.versions }}
            steps:
              - id: baipp
                if: github.event_name == 'release'
                run: echo "versions=[]" >> "$GITHUB_OUTPUT"
          tests:
            needs: build
            runs-on: ubuntu-latest
            strategy:
              matrix:
                python: ${{ fromJSON(needs.build.outputs.versions) }}
            steps:
              - run: echo ${{ matrix.python }}
        """)
    )
    recorder, _, _ = await asyncio.wait_for(run(path), 60)
    error = next(x for x in recorder.lines("tests") if "fromJSON()" in x)
    assert "build's step baipp was skipped (if: github.event_name == 'release' is false)" in error


def test_a_cancel_while_a_step_is_being_started_stops_it(tmp_path: Path) -> None:
    """The signal came after the step's `if:` was read, before its process existed."""
    from engine.gha import runner
    from engine.gha.commands import CommandFilter

    job = runner.JobRunner.__new__(runner.JobRunner)  # only its cancel state is read
    job.cancelled, job.hard, job.pending = "", False, False
    runner._job = job
    try:
        job.cancel("cancelled (SIGTERM)")  # no step process yet
        code, _ = runner.stream(
            ["sleep", "30"], dict(os.environ), tmp_path, None, CommandFilter([])
        )
    finally:
        runner._job = None
    assert code == -signal.SIGTERM
