"""Cancel, timeout and dropped connections on a real sshd (SPEC §4, §8).

sshd runs on this machine, so the remote /proc is our /proc: `marked_pids` finds every process
still carrying the attempt's PIPEDECK_RUN_ID.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import uuid
from pathlib import Path

import pytest

from engine.events import LogLines, StageStatus
from engine.executors import ssh as ssh_module
from engine.executors.ssh import SshExecutor
from engine.run import Run
from engine.spec import Stage
from tests.conftest import marked_pids
from tests.ssh.conftest import USER, Output, Sshd, make_pipeline, stage_env

pytestmark = pytest.mark.ssh

STUBBORN = (
    "trap '' TERM; "
    "(trap '' TERM; setsid sh -c 'trap \"\" TERM; sleep 300' & sleep 300 &) ; "
    "echo ready; sleep 300"
)


class Watch(Output):
    """A sink that also signals when a word appears on stdout."""

    def __init__(self, word: bytes = b"ready") -> None:
        super().__init__()
        self.word = word
        self.seen = asyncio.Event()

    def __call__(self, stream: str, chunk: bytes) -> None:
        super().__call__(stream, chunk)
        if self.word in self.stdout:
            self.seen.set()


def kill_connections(sshd: Sshd) -> None:
    """Kill the per-connection sshd processes: the client sees its connection drop."""
    for pid in sshd.connection_pids():
        os.kill(pid, signal.SIGKILL)


async def test_timeout_leaves_nothing_of_a_stubborn_forking_stage(
    sshd: Sshd, workspace: Path
) -> None:
    run_id = f"kill-{uuid.uuid4().hex}"
    stage = Stage(id="s", name="s", host="a", run=STUBBORN, kill_grace=0.5)
    executor = SshExecutor(
        make_pipeline(workspace, {"a": sshd.host("a", "127.0.0.2")}, [stage]), "a"
    )
    out = Watch()
    before: list[int] = []
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(60) as deadline:
                task = asyncio.ensure_future(executor.execute(stage, stage_env(stage, run_id), out))
                await out.seen.wait()
                for _ in range(100):  # `ready` may come before the background ones exist
                    before = marked_pids(run_id)
                    if len(before) >= 4:
                        break
                    await asyncio.sleep(0.05)
                deadline.reschedule(asyncio.get_running_loop().time())  # the timeout fires now
                await task
        assert len(before) >= 4  # the shells and the three sleeps, one in its own session
        assert marked_pids(run_id) == []
        assert executor.connection_state == "connected"  # the connection survives a kill
    finally:
        await executor.close()


@pytest.mark.parametrize("relative", [False, True], ids=["absolute-workdir", "home-workdir"])
async def test_cancel_sends_sigterm_to_the_group_first(
    sshd: Sshd, workspace: Path, relative: bool
) -> None:
    """Also with a workdir relative to the remote home, as the default one is."""
    run_id = f"term-{uuid.uuid4().hex}"
    workdir = f".cache/pipedeck-tests/{run_id}"
    overrides = {"workdir": workdir} if relative else {}
    stage = Stage(
        id="s",
        name="s",
        host="a",
        kill_grace=30,
        run="trap 'echo got-term; exit 0' TERM; echo ready; sleep 300 & wait",
    )
    executor = SshExecutor(
        make_pipeline(workspace, {"a": sshd.host("a", "127.0.0.2", **overrides)}, [stage]), "a"
    )
    out = Watch()
    try:
        task = asyncio.ensure_future(executor.execute(stage, stage_env(stage, run_id), out))
        await asyncio.wait_for(out.seen.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await executor.close()
        shutil.rmtree(Path(pwd.getpwnam(USER).pw_dir) / workdir, ignore_errors=True)
    assert b"got-term" in out.stdout  # the stage ended on TERM, well before kill_grace
    assert out.stderr == b""  # the pid file was written where the kill looks for it
    assert marked_pids(run_id) == []


async def test_dropped_connection_is_lost_then_the_next_attempt_reconnects(
    sshd: Sshd, workspace: Path
) -> None:
    run_id = f"lost-{uuid.uuid4().hex}"
    stage = Stage(id="s", name="s", host="a", run="echo ready; sleep 300")
    states: list[str] = []
    executor = SshExecutor(
        make_pipeline(workspace, {"a": sshd.host("a", "127.0.0.2")}, [stage]),
        "a",
        on_state_change=lambda _h, s, *_: states.append(s),
    )
    out = Watch()
    try:
        task = asyncio.ensure_future(executor.execute(stage, stage_env(stage, run_id), out))
        await asyncio.wait_for(out.seen.wait(), 60)
        assert marked_pids(run_id)
        kill_connections(sshd)
        result = await asyncio.wait_for(task, 60)
        assert result.lost and result.exit_code is None
        assert result.reason.startswith("connection to a lost: ")
        assert states[-1] == "lost"

        again = Output()
        retry = Stage(id="s", name="s", host="a", run="echo second")
        result = await executor.execute(retry, stage_env(retry, run_id, 2), again)
        assert result.exit_code == 0 and again.stdout == b"second\n"
        assert states[-2:] == ["connecting", "connected"]
        assert marked_pids(run_id) == []  # the lost attempt's leftovers were swept on reconnect
    finally:
        await executor.close()


async def test_background_child_holding_the_output_does_not_block(
    sshd: Sshd, workspace: Path
) -> None:
    run_id = f"bg-{uuid.uuid4().hex}"
    stage = Stage(id="s", name="s", host="a", run="sleep 300 & echo main-done")
    executor = SshExecutor(
        make_pipeline(workspace, {"a": sshd.host("a", "127.0.0.2")}, [stage]), "a"
    )
    out = Output()
    try:
        result = await asyncio.wait_for(executor.execute(stage, stage_env(stage, run_id), out), 60)
    finally:
        await executor.close()
        for pid in marked_pids(run_id):
            os.kill(pid, signal.SIGKILL)
    assert result.exit_code == 0 and out.stdout == b"main-done\n"


async def test_run_marks_a_dropped_stage_lost_and_retries_it(sshd: Sshd, workspace: Path) -> None:
    flag = sshd.root / f"first-attempt-{uuid.uuid4().hex}"
    stage = Stage(
        id="s",
        name="s",
        host="a",
        retries=1,
        run=f"if [ ! -e {flag} ]; then touch {flag}; echo ready; sleep 300; fi; echo retried",
    )
    run = Run(make_pipeline(workspace, {"a": sshd.host("a", "127.0.0.2")}, [stage]))
    events: list[object] = []

    def watch(event: object) -> None:
        events.append(event)
        if isinstance(event, LogLines) and "ready" in event.lines:
            kill_connections(sshd)

    run.subscribe(watch)
    try:
        code = await asyncio.wait_for(run.execute(), 120)
    finally:
        await run.close()
    statuses = [(e.status, e.attempt) for e in events if isinstance(e, StageStatus)]
    assert ("lost", 1) in statuses
    lost = next(e for e in events if isinstance(e, StageStatus) and e.status == "lost")
    assert lost.reason.startswith("connection to a lost")
    assert statuses[-1] == ("succeeded", 2)
    assert code == 0
    assert any(isinstance(e, LogLines) and "retried" in e.lines for e in events)


async def test_a_silent_drop_is_noticed_by_keepalive(
    sshd: Sshd, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ssh_module, "KEEPALIVE_INTERVAL", 0.3)  # 10 s in real use
    stage = Stage(id="s", name="s", host="a", run="echo ready; sleep 300")
    executor = SshExecutor(
        make_pipeline(workspace, {"a": sshd.host("a", "127.0.0.2")}, [stage]), "a"
    )
    out = Watch()
    frozen = []
    run_id = f"silent-{uuid.uuid4().hex}"
    try:
        task = asyncio.ensure_future(executor.execute(stage, stage_env(stage, run_id), out))
        await asyncio.wait_for(out.seen.wait(), 60)
        frozen = sshd.connection_pids()
        for pid in frozen:  # the server stops answering; the TCP connection stays open
            os.kill(pid, signal.SIGSTOP)
        result = await asyncio.wait_for(task, 60)
    finally:
        for pid in [*frozen, *marked_pids(run_id)]:
            os.kill(pid, signal.SIGKILL)
        await executor.close()
    assert result.lost
    assert "keepalive" in result.reason.lower()


async def test_run_timeout_of_a_remote_stage_leaves_nothing(sshd: Sshd, workspace: Path) -> None:
    stage = Stage(id="s", name="s", host="a", run=STUBBORN, timeout=6, kill_grace=0.5)
    run = Run(make_pipeline(workspace, {"a": sshd.host("a", "127.0.0.2")}, [stage]))
    running: list[int] = []

    def watch(event: object) -> None:
        if isinstance(event, LogLines) and "ready" in event.lines:
            running.extend(marked_pids(run.run_id))

    run.subscribe(watch)
    try:
        code = await asyncio.wait_for(run.execute(), 120)
    finally:
        await run.close()
    assert code == 1
    assert run.states["s"].status == "timed_out"
    assert len(running) >= 4
    assert marked_pids(run.run_id) == []


async def test_a_drop_on_one_host_leaves_the_other_hosts_stages_alone(
    sshd: Sshd, workspace: Path
) -> None:
    doomed = Stage(id="doomed", name="doomed", host="a", run="echo ready; sleep 300")
    steady = Stage(
        id="steady", name="steady", host="b", run="echo ready; sleep 2; echo steady-done"
    )
    hosts = {"a": sshd.host("a", "127.0.0.2"), "b": sshd.host("b", "127.0.0.3")}
    run = Run(make_pipeline(workspace, hosts, [doomed, steady]))
    ready: set[str] = set()

    def watch(event: object) -> None:
        if isinstance(event, LogLines) and "ready" in event.lines:
            ready.add(event.stage)
            if ready == {"doomed", "steady"}:
                marked = [
                    p
                    for p in marked_pids(run.run_id)
                    if b"PIPEDECK_STAGE=doomed" in Path(f"/proc/{p}/environ").read_bytes()
                ]
                os.kill(sshd.connection_of(marked[0]), signal.SIGKILL)

    run.subscribe(watch)
    try:
        code = await asyncio.wait_for(run.execute(), 120)
    finally:
        await run.close()
    assert ready == {"doomed", "steady"}
    assert marked_pids(run.run_id) == []  # closing reconnected to kill the lost stage's sleep
    assert run.states["doomed"].status == "lost"
    assert run.states["steady"].status == "succeeded"
    assert code == 1
