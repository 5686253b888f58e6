"""Issue 9's status truths with real processes and the real CLI: what a run says is what happened."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from engine.events import RunFinished, RunStarted
from engine.loader import load
from engine.run import Run
from tests.conftest import Recorder, pipedeck_bin

Write = Callable[..., Path]


def finished(recorder: Recorder) -> list[RunFinished]:
    return [e for e in recorder.events if isinstance(e, RunFinished)]


def execute(
    path: Path, recorder: Recorder, command: Callable[[Run], None] | None = None, once: str = ""
) -> int:
    """Run the pipeline at `path`; with `command`, apply it once stage `once` printed a line."""
    pipeline = load(path)

    async def go() -> int:
        run = Run(pipeline)
        run.subscribe(recorder)
        task = asyncio.create_task(run.execute())
        if command is not None:
            while not recorder.lines(once):
                await asyncio.sleep(0.02)
            command(run)
        return await task

    return asyncio.run(go())


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [pipedeck_bin(), *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


def test_a_cancelled_stage_rerun_to_success_makes_the_run_succeed(
    write_pipeline: Write, recorder: Recorder
) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          a: {kill_grace: 0.2s, run: 'echo "a $PIPEDECK_ATTEMPT"; test "$PIPEDECK_ATTEMPT" = 2 || sleep 30'}
    """)

    async def go() -> tuple[int, int]:
        run = Run(load(path))
        run.subscribe(recorder)
        task = asyncio.create_task(run.execute())
        while not recorder.lines("a"):
            await asyncio.sleep(0.02)
        run.cancel("a")
        first = await task
        run.rerun("a")
        return first, await run.execute()

    assert asyncio.run(go()) == (130, 0)  # cancelled by a person: interrupted (SPEC §3)
    assert [(f.status, f.exit_code) for f in finished(recorder)] == [
        ("cancelled", 130),
        ("succeeded", 0),
    ]


def test_run_duration_is_wall_time_across_approve_and_rerun(
    write_pipeline: Write, recorder: Recorder
) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          build: {run: sleep 0.4}
          deploy: {needs: [build], when: manual, run: echo deployed}
    """)

    async def go() -> None:
        run = Run(load(path), manual="wait")
        run.subscribe(recorder)
        await run.execute()
        await asyncio.sleep(0.3)  # a person reading the screen before pressing `a`
        run.approve("deploy")
        await run.execute()
        run.rerun("deploy")
        await run.execute()

    asyncio.run(go())
    start = next(e for e in recorder.events if isinstance(e, RunStarted)).ts
    durations = [f.duration for f in finished(recorder)]
    assert durations[0] >= 0.4
    assert durations == sorted(durations) and durations[1] >= durations[0] + 0.3
    assert abs(durations[-1] - (finished(recorder)[-1].ts - start)) < 0.05


def test_a_superseded_run_says_superseded(write_pipeline: Write, recorder: Recorder) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          test: {kill_grace: 0.2s, run: 'echo up; sleep 30'}
          lint: {run: 'true'}
    """)

    assert execute(path, recorder, lambda run: run.supersede("test"), once="test") == 1
    assert (finished(recorder)[-1].status, finished(recorder)[-1].exit_code) == ("superseded", 1)
    assert recorder.final("test").reason.startswith("superseded by a change")


def test_a_death_by_signal_is_named(write_pipeline: Write, recorder: Recorder) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          crash: {run: 'kill -SEGV $$'}
          plain: {run: 'exit 139'}
    """)

    assert execute(path, recorder) == 1
    crash, plain = recorder.final("crash"), recorder.final("plain")
    assert (crash.exit_code, crash.reason) == (139, "killed by SIGSEGV")
    assert (plain.exit_code, plain.reason) == (139, "exit code 139")


def test_a_huge_script_runs(write_pipeline: Write, recorder: Recorder) -> None:
    """4.9 MB of script: more than one argument may hold (128 KiB), so it goes by file."""
    filler = "# " + "x" * 98 + "\n"
    script = filler * 49_000 + 'echo "done $0"\n'
    path = write_pipeline("version: 1\nstages:\n  big:\n    run: " + json.dumps(script) + "\n")
    assert execute(path, recorder) == 0
    assert recorder.lines("big")[0].startswith("done ")


def test_headless_trigger_and_approved_reason(write_pipeline: Write, tmp_path: Path) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          deploy: {when: manual, run: echo deployed}
    """)
    done = cli("run", str(path), "--approve", "deploy", "--format", "json")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    running = [e for e in events if e.get("status") == "running"]
    assert running[0]["reason"] == "approved"
    history = cli("history", "--json", cwd=tmp_path)
    assert json.loads(history.stdout)[0]["trigger"] == "cli", history.stdout


def test_a_process_that_exited_while_pipedeck_was_stopped_is_not_timed_out(
    write_pipeline: Write,
) -> None:
    """SIGSTOP pipedeck for 6 s while `sleep 3` (timeout 5s) runs: the stage succeeded."""
    path = write_pipeline("""
        version: 1
        stages:
          nap: {run: 'echo start; sleep 3', timeout: 5s}
          after: {needs: [nap], run: echo after}
    """)
    proc = subprocess.Popen(
        [pipedeck_bin(), "run", str(path), "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if '"text": "start"' in line:
            break
    proc.send_signal(signal.SIGSTOP)
    time.sleep(6)  # the scenario itself: a laptop suspended, a debugger attached
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=30)
    events = [json.loads(line) for line in out.splitlines()]
    nap = [e for e in events if e.get("stage") == "nap" and e["type"] == "stage_status"]
    assert nap[-1]["status"] == "succeeded", (nap, err)
    assert proc.returncode == 0


def test_ui_takes_the_run_options(write_pipeline: Write) -> None:
    """`pipedeck ui` checks --stage like `run` does, before any terminal is touched."""
    path = write_pipeline("""
        version: 1
        stages:
          lint: {run: 'true'}
    """)
    done = cli("ui", str(path), "--stage", "lnt", "--no-cache", "--jobs", "2")
    assert done.returncode == 2
    assert "--stage lnt: no such stage (did you mean 'lint'?)" in done.stderr
