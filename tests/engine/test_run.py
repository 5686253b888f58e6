"""The scheduler with real processes: order, jobs, when, retries, timeouts, matrix, commands."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from engine.events import HostState, HostStatus, LogLines, RunFinished, RunStarted, StageStatus
from engine.history import History
from engine.loader import load
from engine.run import Run
from engine.session import Session
from tests.conftest import Recorder, marked_pids
from tests.waiting import until

Write = Callable[..., Path]


def _run(path: Path, recorder: Recorder, **options: object) -> tuple[Run, int]:
    pipeline = load(path)

    async def go() -> tuple[Run, int]:
        run = Run(pipeline, **options)  # type: ignore[arg-type]
        run.subscribe(recorder)
        return run, await run.execute()

    return asyncio.run(go())


def _intervals(recorder: Recorder) -> dict[str, tuple[float, float]]:
    start: dict[str, float] = {}
    spans = {}
    for e in recorder.events:
        if isinstance(e, StageStatus) and e.status == "running":
            start[e.stage] = e.ts
        elif isinstance(e, StageStatus) and e.stage in start and e.duration is not None:
            spans[e.stage] = (start[e.stage], e.ts)
    return spans


def test_needs_order_and_event_stream_shape(write_pipeline: Write, recorder: Recorder) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          build: {needs: [lint], run: echo built}
          lint: {run: echo linted}
    """)
    _, code = _run(path, recorder)
    assert code == 0
    assert isinstance(recorder.events[0], RunStarted)
    assert recorder.events[0].stages == ("lint", "build")
    assert isinstance(recorder.events[-1], RunFinished)
    assert recorder.events[-1].status == "succeeded"
    spans = _intervals(recorder)
    assert spans["lint"][1] <= spans["build"][0]
    assert recorder.statuses("build") == ["queued", "running", "succeeded"]
    assert recorder.lines("build") == ["built"]


def test_jobs_bounds_concurrency(write_pipeline: Write, recorder: Recorder) -> None:
    stages = "\n".join(f"          s{i}: {{run: sleep 0.2}}" for i in range(4))
    path = write_pipeline(
        "version: 1\nstages:\n" + "\n".join(line[8:] for line in stages.splitlines())
    )
    _run(path, recorder, jobs=2)
    spans = sorted(_intervals(recorder).values())
    overlaps = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert overlaps == 2


def test_when_allow_failure_and_skips(write_pipeline: Write, recorder: Recorder) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          bad: {run: exit 3}
          meh: {run: exit 4, allow_failure: true}
          after_bad: {needs: [bad], run: echo no}
          after_meh: {needs: [meh], run: echo yes}
          on_fail: {needs: [bad], when: on_failure, run: echo reporting}
          not_on_fail: {needs: [meh], when: on_failure, run: echo no}
          always: {needs: [bad], when: always, run: echo always}
    """)
    _, code = _run(path, recorder)
    assert code == 1
    final = {
        s: recorder.final(s)
        for s in ("bad", "meh", "after_bad", "after_meh", "on_fail", "not_on_fail", "always")
    }
    assert final["bad"].status == "failed" and final["bad"].exit_code == 3
    assert final["meh"].status == "failed"
    assert final["after_bad"].status == "skipped" and "bad" in (final["after_bad"].reason or "")
    assert final["after_meh"].status == "succeeded"
    assert final["on_fail"].status == "succeeded"
    assert final["not_on_fail"].status == "skipped"
    assert final["always"].status == "succeeded"


def test_allowed_failure_alone_exits_zero(write_pipeline: Write, recorder: Recorder) -> None:
    path = write_pipeline("version: 1\nstages:\n  a: {run: exit 1, allow_failure: true}\n")
    assert _run(path, recorder)[1] == 0


def test_retries_count_attempts(write_pipeline: Write, recorder: Recorder) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          flaky:
            retries: 2
            run: 'echo "try $PIPEDECK_ATTEMPT"; test "$PIPEDECK_ATTEMPT" -ge 2'
          hopeless: {retries: 1, run: exit 1}
    """)
    _, code = _run(path, recorder)
    assert code == 1
    assert recorder.statuses("flaky") == ["queued", "running", "failed", "running", "succeeded"]
    assert recorder.final("flaky").attempt == 2
    assert recorder.lines("flaky") == ["try 1", "try 2"]
    assert recorder.statuses("hopeless").count("running") == 2
    assert recorder.final("hopeless").attempt == 2


def test_timeout_kills_and_marks_timed_out(write_pipeline: Write, recorder: Recorder) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          slow: {timeout: 0.5s, kill_grace: 0.2s, run: 'sleep 30 & sleep 30'}
    """)
    run, code = _run(path, recorder)
    assert code == 1
    final = recorder.final("slow")
    assert final.status == "timed_out" and "timed out" in (final.reason or "")
    assert marked_pids(run.run_id) == []


def test_matrix_env_and_pipedeck_variables(write_pipeline: Write, recorder: Recorder) -> None:
    path = write_pipeline("""
        version: 1
        env: {GREETING: hello}
        stages:
          t:
            matrix: {py: ["3.11", "3.12"]}
            env: {WHO: "py${{ matrix.py }}"}
            run: 'echo "$GREETING $WHO $MATRIX_PY ${{ matrix.py }} $PIPEDECK_STAGE $PIPEDECK_ATTEMPT"'
          after: {needs: [t], run: 'echo "$PIPEDECK_RUN_ID"'}
    """)
    run, code = _run(path, recorder)
    assert code == 0
    assert recorder.lines("t[py=3.11]") == ["hello py3.11 3.11 3.11 t[py=3.11] 1"]
    assert recorder.lines("t[py=3.12]") == ["hello py3.12 3.12 3.12 t[py=3.12] 1"]
    assert recorder.lines("after") == [run.run_id]


def test_targets_run_only_what_they_need(write_pipeline: Write, recorder: Recorder) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          a: {run: echo a}
          b: {needs: [a], run: echo b}
          c: {needs: [b], run: echo c}
          other: {run: echo other}
    """)
    run, _ = _run(path, recorder, targets=["b"])
    assert run.stage_ids == ["a", "b"]
    assert recorder.statuses("other") == [] and recorder.statuses("c") == []


def test_manual_stages_skip_unless_approved(write_pipeline: Write, recorder: Recorder) -> None:
    text = """
        version: 1
        stages:
          build: {run: echo b}
          deploy: {needs: [build], when: manual, run: echo deployed}
    """
    _, code = _run(write_pipeline(text), recorder)
    assert code == 0 and recorder.final("deploy").status == "skipped"
    approved = Recorder()
    _run(write_pipeline(text), approved, approve=["deploy"])
    assert approved.final("deploy").status == "succeeded"


def test_wait_mode_approve_then_execute_again(write_pipeline: Write, recorder: Recorder) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          deploy: {when: manual, run: echo deployed}
    """)

    async def go() -> None:
        run = Run(load(path), manual="wait")
        run.subscribe(recorder)
        await run.execute()
        assert run.states["deploy"].status == "waiting"
        run.approve("deploy")
        assert await run.execute() == 0
        assert run.states["deploy"].status == "succeeded"

    asyncio.run(go())


def test_stages_left_waiting_are_recorded_skipped_when_the_run_closes(
    write_pipeline: Write,
) -> None:
    """The TUI quit before an approval: the history says so, as a headless run would."""
    path = write_pipeline("""
        version: 1
        stages:
          build: {run: echo b}
          deploy: {needs: [build], when: manual, run: echo deployed}
          notify: {needs: [deploy], run: echo told}
    """)

    async def go() -> str:
        session = Session(load(path), manual="wait")
        run = session.new_run()
        try:
            assert await run.execute() == 0
            assert run.states["deploy"].status == "waiting"
            await run.close()
        finally:
            await session.close()
        return run.run_id

    run_id = asyncio.run(go())
    history = History.for_state_dir(path.parent / ".pipedeck")
    try:
        rows = {row.stage: row for row in history.attempts(run_id)}
    finally:
        history.close()
    assert (rows["build"].status, rows["deploy"].status) == ("succeeded", "skipped")
    assert rows["deploy"].reason == "manual stage not approved"
    assert (rows["notify"].status, rows["notify"].reason) == ("skipped", "upstream deploy skipped")


def test_cancel_one_stage_and_downstream_skips(write_pipeline: Write, recorder: Recorder) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          long: {kill_grace: 0.2s, run: 'echo started; sleep 30'}
          after: {needs: [long], run: echo never}
          other: {run: echo fine}
    """)

    async def go() -> Run:
        run = Run(load(path))
        run.subscribe(recorder)
        task = asyncio.create_task(run.execute())
        while recorder.lines("long") != ["started"]:
            await asyncio.sleep(0.02)
        run.cancel("long")
        assert await task == 130  # never succeeded (SPEC §2), nor failed: interrupted (§3)
        return run

    run = asyncio.run(go())
    finished = recorder.events[-1]
    assert isinstance(finished, RunFinished)
    assert (finished.status, finished.exit_code) == ("cancelled", 130)
    assert recorder.final("long").status == "cancelled"
    assert recorder.final("long").reason.startswith("by request, after ")
    assert recorder.final("after").status == "skipped"
    assert recorder.final("other").status == "succeeded"
    assert marked_pids(run.run_id) == []


def test_cancel_all_finishes_cancelled(write_pipeline: Write, recorder: Recorder) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          a: {kill_grace: 0.2s, run: 'echo up; sleep 30'}
          b: {needs: [a], run: echo never}
    """)

    async def go() -> int:
        run = Run(load(path))
        run.subscribe(recorder)
        task = asyncio.create_task(run.execute())
        while not recorder.lines("a"):
            await asyncio.sleep(0.02)
        run.cancel_all(130)
        return await task

    assert asyncio.run(go()) == 130
    finished = recorder.events[-1]
    assert isinstance(finished, RunFinished) and finished.status == "cancelled"
    assert recorder.final("b").status == "cancelled"


def test_rerun_shows_new_attempts_downstream(write_pipeline: Write, recorder: Recorder) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          a: {run: 'echo "a $PIPEDECK_ATTEMPT"'}
          b: {needs: [a], run: 'echo "b $PIPEDECK_ATTEMPT"'}
          c: {run: echo c}
    """)

    async def go() -> Run:
        run = Run(load(path))
        run.subscribe(recorder)
        await run.execute()
        run.rerun("a")
        await run.execute()
        run.rerun("b", downstream=False)
        await run.execute()
        return run

    run = asyncio.run(go())
    assert recorder.lines("a") == ["a 1", "a 2"]
    assert recorder.lines("b") == ["b 1", "b 2", "b 3"]
    assert recorder.lines("c") == ["c"]
    assert run.states["b"].attempt == 3


def test_rerun_while_running_restarts(write_pipeline: Write, recorder: Recorder) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          a: {kill_grace: 0.2s, run: 'echo "a $PIPEDECK_ATTEMPT"; test "$PIPEDECK_ATTEMPT" = 2 || sleep 30'}
    """)

    async def go() -> int:
        run = Run(load(path))
        run.subscribe(recorder)
        task = asyncio.create_task(run.execute())
        while not recorder.lines("a"):
            await asyncio.sleep(0.02)
        run.rerun("a")
        return await task

    assert asyncio.run(go()) == 0
    assert recorder.lines("a") == ["a 1", "a 2"]
    assert recorder.statuses("a")[-1] == "succeeded"


def test_rerun_failed(write_pipeline: Write, recorder: Recorder) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          ok: {run: echo ok}
          bad: {run: 'echo "bad $PIPEDECK_ATTEMPT"; test "$PIPEDECK_ATTEMPT" = 2'}
          after: {needs: [bad], run: echo after}
    """)

    async def go() -> int:
        run = Run(load(path))
        run.subscribe(recorder)
        assert await run.execute() == 1
        run.rerun_failed()
        return await run.execute()

    assert asyncio.run(go()) == 0
    assert recorder.lines("ok") == ["ok"]
    assert recorder.lines("after") == ["after"]
    assert recorder.final("bad").attempt == 2


def test_secrets_masked_in_events_and_logs(
    write_pipeline: Write, recorder: Recorder, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("FROM_FILE=filesecret42\n")
    path = write_pipeline("""
        version: 1
        secrets: [TOKEN, FROM_FILE]
        stages:
          leak: {run: 'echo "t=$TOKEN f=$FROM_FILE"; printf "spl"; printf "it=%s\\n" "$TOKEN"'}
    """)

    async def go() -> Run:
        run = Run(load(path, environ={"TOKEN": "hunter2secret"}))
        run.subscribe(recorder)
        await run.execute()
        return run

    run = asyncio.run(go())
    lines = recorder.lines("leak")
    assert lines == ["t=*** f=***", "split=***"]
    stored = run.logs.reader(run.run_id, "leak", 1).read_bytes()
    assert b"hunter2secret" not in stored and b"filesecret42" not in stored
    assert all("hunter2" not in str(e) for e in recorder.events if not isinstance(e, LogLines))


def test_stage_output_is_stored_per_attempt(write_pipeline: Write, recorder: Recorder) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          a: {retries: 1, run: 'echo "out $PIPEDECK_ATTEMPT"; echo err >&2; test "$PIPEDECK_ATTEMPT" = 2'}
    """)
    run, _ = _run(path, recorder)
    assert run.logs.attempts(run.run_id, "a") == [1, 2]
    reader = run.logs.reader(run.run_id, "a", 2)
    assert sorted(reader.lines(0, len(reader))) == [("stderr", "err"), ("stdout", "out 2")]


def test_many_quick_stages_all_keep_their_exit_status(
    write_pipeline: Write, recorder: Recorder
) -> None:
    """Orphan reaping must never steal a quick stage's exit status from asyncio (it did: 255)."""
    stages = "".join(f"  s{i}: {{run: 'true'}}\n" for i in range(300))
    _, code = _run(write_pipeline("version: 1\nstages:\n" + stages), recorder, jobs=4)
    failed = [e for e in recorder.events if isinstance(e, StageStatus) and e.status == "failed"]
    assert failed == [] and code == 0


def test_an_engine_fault_fails_the_stage_with_its_reason(
    write_pipeline: Write, recorder: Recorder, tmp_path: Path
) -> None:
    path = write_pipeline(
        "version: 1\nstages:\n  a: {run: echo hi}\n  b: {needs: [a], run: echo b}\n"
    )
    (tmp_path / ".pipedeck").mkdir()
    (tmp_path / ".pipedeck" / "logs").write_text("a file where the log folder belongs")
    _, code = _run(path, recorder)
    assert code == 1
    final = recorder.final("a")
    assert final.status == "failed" and "logs is a file, not a directory" in (final.reason or "")
    assert recorder.final("b").status == "skipped"


def test_host_states_keep_state_and_reason_apart(write_pipeline: Write, recorder: Recorder) -> None:
    """What the hosts report (engine.hosts calls the run's listener) is kept typed, not as
    `state: reason` text for the TUI to parse back."""
    run, _ = _run(write_pipeline("version: 1\nstages:\n  a: {run: 'true'}\n"), recorder)
    assert run.hosts.listener is not None
    run.hosts.listener("lab", "connected")
    run.hosts.listener("gpu", "lost", "connection reset by peer")
    assert run.host_states == {
        "lab": HostState("connected"),
        "gpu": HostState("lost", "connection reset by peer"),
    }
    assert str(run.host_states["gpu"]) == "lost: connection reset by peer"
    assert str(run.host_states["lab"]) == "connected"
    lost = [e for e in recorder.events if isinstance(e, HostStatus) and e.host == "gpu"]
    assert [(e.state, e.reason) for e in lost] == [("lost", "connection reset by peer")]


def test_an_approval_lets_a_manual_stage_run_once(
    write_pipeline: Write, recorder: Recorder
) -> None:
    """A rerun of what a manual stage needs (the `r` key, watch mode's in-place rerun) makes it
    wait for a new approval; it never runs again on the first one."""
    path = write_pipeline("""
        version: 1
        stages:
          keepalive: {kill_grace: 0.2s, run: sleep 60}
          build: {run: echo built}
          deploy: {needs: [build], when: manual, run: echo deployed >> deploys.log}
    """)
    deploys = path.parent / "deploys.log"

    async def go() -> None:
        run = Run(load(path), manual="wait")
        run.subscribe(recorder)
        task = asyncio.create_task(run.execute())
        await until(lambda: run.states["deploy"].status == "waiting", "deploy waiting")
        run.approve("deploy")
        await until(lambda: run.states["deploy"].status == "succeeded", "deploy succeeded")
        run.rerun("build")  # the run is still going (keepalive): rerun in place
        await until(lambda: recorder.statuses("deploy")[-1:] == ["waiting"], "deploy waiting again")
        run.rerun("deploy", downstream=False)  # what watch mode does for a changed input
        await until(lambda: recorder.statuses("deploy")[-2:] == ["pending", "waiting"], "waits")
        run.cancel("keepalive")
        await task
        assert run.states["deploy"].status == "waiting"
        run.approve("deploy")
        await run.execute()

    asyncio.run(go())
    assert deploys.read_text().splitlines() == ["deployed", "deployed"]
    ran = [e for e in recorder.events if isinstance(e, StageStatus) and e.status == "running"]
    assert [e.reason for e in ran if e.stage == "deploy"] == ["approved", "approved"]


def test_standing_approval_holds_for_reruns(write_pipeline: Write, recorder: Recorder) -> None:
    """`--approve deploy` approves every start of deploy in the run."""
    path = write_pipeline("""
        version: 1
        stages:
          build: {run: echo built}
          deploy: {needs: [build], when: manual, run: echo deployed}
    """)

    async def go() -> None:
        run = Run(load(path), approve=["deploy"])
        run.subscribe(recorder)
        await run.execute()
        run.rerun("build")
        assert await run.execute() == 0

    asyncio.run(go())
    assert recorder.statuses("deploy").count("succeeded") == 2


def test_first_attempts_never_say_rerun(write_pipeline: Write, recorder: Recorder) -> None:
    """A rerun of an upstream stage before its downstream ran is no rerun of the downstream;
    --force says so; a real rerun says `rerun requested`."""
    path = write_pipeline("""
        version: 1
        stages:
          slow: {kill_grace: 0.2s, run: 'echo started; [ -e again ] || { touch again; sleep 30; }'}
          down: {needs: [slow], run: echo down}
          forced: {run: echo forced}
    """)

    async def go() -> None:
        run = Run(load(path), force=["forced"])
        run.subscribe(recorder)
        task = asyncio.create_task(run.execute())
        await until(lambda: recorder.lines("slow") == ["started"], "slow started")
        run.rerun("slow")
        await task
        run.rerun("forced")
        await run.execute()

    asyncio.run(go())
    reasons = [
        (e.stage, e.attempt, e.reason)
        for e in recorder.events
        if isinstance(e, StageStatus) and e.status == "running"
    ]
    assert ("slow", 2, "rerun requested") in reasons
    cancelled = [e for e in recorder.events if getattr(e, "status", None) == "cancelled"]
    assert cancelled[0].reason.startswith("restarted (rerun requested), after ")
    assert ("down", 1, None) in reasons  # the cache (none here) says why, not "rerun"
    assert ("forced", 1, "forced (--force)") in reasons
    assert ("forced", 2, "rerun requested") in reasons
    assert all(why != "rerun requested" for _, attempt, why in reasons if attempt == 1)
