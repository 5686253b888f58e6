"""Watch mode and approvals: a change that reruns an approved manual stage's upstream (in the
same, still running run) makes the manual stage wait for a new approval (the QA repro)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.events import StageStatus
from engine.loader import load
from engine.run import Run
from engine.watch import WatchSession
from tests.conftest import Recorder
from tests.waiting import until

PIPELINE = """\
version: 1
stages:
  keepalive: {inputs: [none.txt], kill_grace: 0.2s, run: sleep 60}
  build: {inputs: [src.txt], run: echo built $(cat src.txt)}
  deploy:
    needs: [build]
    when: manual
    run: echo DEPLOYED $(cat src.txt) >> deploys.log
"""


async def test_a_change_after_an_approval_waits_for_a_new_one(tmp_path: Path) -> None:
    (tmp_path / "pipedeck.yaml").write_text(PIPELINE)
    (tmp_path / "src.txt").write_text("1\n")
    pipeline = load(tmp_path / "pipedeck.yaml")
    recorder = Recorder()
    runs: list[Run] = []

    def on_run(run: Run) -> None:
        runs.append(run)
        run.subscribe(recorder)

    session = WatchSession(
        pipeline, lambda **kw: Run(pipeline, manual="wait", **kw), on_run=on_run,
        on_notice=lambda _: None,
    )  # fmt: skip
    task = asyncio.create_task(session.run())
    try:
        await until(lambda: recorder.statuses("deploy")[-1:] == ["waiting"], "deploy waiting")
        runs[0].approve("deploy")
        await until(lambda: recorder.statuses("deploy")[-1:] == ["succeeded"], "deployed")
        (tmp_path / "src.txt").write_text("2\n")
        await until(lambda: recorder.lines("build") == ["built 1", "built 2"], "build again")
        await until(lambda: recorder.statuses("deploy")[-1:] == ["waiting"], "waiting again")
        assert runs == runs[:1] and runs[0].running  # rerun in place, keepalive still going
        assert (tmp_path / "deploys.log").read_text() == "DEPLOYED 1\n"
        running = [e for e in recorder.events if isinstance(e, StageStatus)
                   and (e.stage, e.status) == ("build", "running")]  # fmt: skip
        assert running[-1].reason == "a change to src.txt"  # not "rerun requested"
        runs[0].approve("deploy")
        await until(lambda: recorder.statuses("deploy")[-1:] == ["succeeded"], "deployed again")
        assert (tmp_path / "deploys.log").read_text() == "DEPLOYED 1\nDEPLOYED 2\n"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
