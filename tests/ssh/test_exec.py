"""Running stages on a real sshd through SshExecutor: output, env, exit codes, secrets, slots."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path

import pytest

from engine.executors.base import ExecResult
from engine.executors.ssh import SshExecutor
from engine.hosts import Hosts
from engine.logs import LogStore
from engine.spec import Stage
from tests.ssh.conftest import Output, Sshd, make_pipeline, stage_env

pytestmark = pytest.mark.ssh


async def test_output_env_and_exit_code_arrive_intact(sshd: Sshd, workspace: Path) -> None:
    stage = Stage(
        id="s",
        name="s",
        host="a",
        env={"GREETING": "hello 'quoted' $world"},
        run="printf 'out\\n'; printf '\\377\\376bad\\n'; echo \"$GREETING\" >&2; "
        'echo "$PIPEDECK_STAGE $PIPEDECK_ATTEMPT"; exit 3',
    )
    executor = SshExecutor(
        make_pipeline(workspace, {"a": sshd.host("a", "127.0.0.2")}, [stage]), "a"
    )
    out = Output()
    try:
        result = await executor.execute(stage, stage_env(stage), out)
    finally:
        await executor.close()
    assert result.exit_code == 3
    assert not result.lost
    assert out.stdout == b"out\n\xff\xfebad\ns 1\n"
    assert out.stderr == b"hello 'quoted' $world\n"


async def test_stage_runs_in_its_cwd_with_bash_pipefail(sshd: Sshd, workspace: Path) -> None:
    (workspace / "sub").mkdir()
    (workspace / "sub" / "data.txt").write_text("synced\n")
    stage = Stage(id="s", name="s", host="a", cwd="sub", run="cat data.txt; false | true")
    executor = SshExecutor(
        make_pipeline(workspace, {"a": sshd.host("a", "127.0.0.2")}, [stage]), "a"
    )
    out = Output()
    try:
        result = await executor.execute(stage, stage_env(stage), out)
    finally:
        await executor.close()
    assert out.stdout == b"synced\n"
    assert result.exit_code == 1  # pipefail: `false | true` fails


async def test_secret_reaches_the_stage_and_is_masked_in_the_log(
    sshd: Sshd, workspace: Path, tmp_path: Path
) -> None:
    secret = "s3cr3t-value"
    stage = Stage(id="s", name="s", host="a", run="echo token=$DEPLOY_TOKEN")
    pipeline = make_pipeline(
        workspace, {"a": sshd.host("a", "127.0.0.2")}, [stage], secrets={"DEPLOY_TOKEN": secret}
    )
    executor = SshExecutor(pipeline, "a")
    store = LogStore(tmp_path / "logs", secrets=[secret])
    writer = store.writer("run1", "s", 1)
    raw = Output()

    def sink(stream: str, data: bytes) -> None:
        raw(stream, data)
        writer.feed(stream, data)

    try:
        env = {**stage_env(stage), "DEPLOY_TOKEN": secret}
        result = await executor.execute(stage, env, sink)
    finally:
        await executor.close()
    writer.finish()
    assert result.exit_code == 0
    assert raw.stdout == f"token={secret}\n".encode()  # the value did reach the remote stage
    logged = store.reader("run1", "s", 1).read_bytes()
    assert b"token=" in logged
    assert secret.encode() not in logged


async def _in_slot(hosts: Hosts, stage: Stage, out: Output) -> ExecResult:
    """Run `stage` as the scheduler does: holding one of its host's slots."""
    async with hosts.slots(stage.host):
        return await hosts.executor(stage.host).execute(stage, stage_env(stage), out)


async def test_one_host_never_runs_more_than_its_slots(sshd: Sshd, workspace: Path) -> None:
    slots = 2
    stages = [
        Stage(
            id=f"s{i}",
            name=f"s{i}",
            host="a",
            run="mkdir -p ../../slots && touch ../../slots/$PIPEDECK_STAGE; "
            "ls ../../slots | wc -l; sleep 1; rm ../../slots/$PIPEDECK_STAGE",
        )
        for i in range(6)
    ]
    host = sshd.host(
        "a", "127.0.0.2", slots=slots, workdir=str(sshd.root / "slots-test" / "work" / "ws")
    )
    hosts = Hosts(make_pipeline(workspace, {"a": host}, stages))
    outputs = [Output() for _ in stages]
    try:
        results = await asyncio.gather(
            *(_in_slot(hosts, s, o) for s, o in zip(stages, outputs, strict=True))
        )
    finally:
        await hosts.close()
    assert [r.exit_code for r in results] == [0] * len(stages)
    seen = [int(o.stdout.strip()) for o in outputs]
    assert max(seen) <= slots


async def test_never_more_channels_than_max_sessions(sshd: Sshd, workspace: Path) -> None:
    stages = [Stage(id=f"s{i}", name=f"s{i}", host="a", run="sleep 1") for i in range(12)]
    host = sshd.host("a", "127.0.0.2", slots=20)  # more than OpenSSH's MaxSessions (10)
    hosts = Hosts(make_pipeline(workspace, {"a": host}, stages))
    try:
        results = await asyncio.gather(*(_in_slot(hosts, s, Output()) for s in stages))
    finally:
        await hosts.close()
    assert [(r.exit_code, r.reason) for r in results] == [(0, None)] * len(stages)


async def test_secret_values_never_show_in_a_remote_command_line(
    sshd: Sshd, workspace: Path
) -> None:
    secret = f"cmdline-secret-{uuid.uuid4().hex}"
    stage = Stage(id="s", name="s", host="a", run="echo ready; sleep 2")
    executor = SshExecutor(
        make_pipeline(
            workspace, {"a": sshd.host("a", "127.0.0.2")}, [stage], secrets={"TOKEN": secret}
        ),
        "a",
    )
    ready = asyncio.Event()

    def sink(_stream: str, data: bytes) -> None:
        if b"ready" in data:
            ready.set()

    try:
        task = asyncio.ensure_future(
            executor.execute(stage, {**stage_env(stage), "TOKEN": secret}, sink)
        )
        await asyncio.wait_for(ready.wait(), 60)
        cmdlines = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    cmdlines.append(Path(f"/proc/{entry}/cmdline").read_bytes())
        assert (await task).exit_code == 0
    finally:
        await executor.close()
    assert not [c for c in cmdlines if secret.encode() in c]


async def test_a_stage_killed_by_a_signal_exits_128_plus_its_number(
    sshd: Sshd, workspace: Path
) -> None:
    stage = Stage(id="s", name="s", host="a", run="kill -KILL $$")
    executor = SshExecutor(
        make_pipeline(workspace, {"a": sshd.host("a", "127.0.0.2")}, [stage]), "a"
    )
    try:
        result = await executor.execute(stage, stage_env(stage), Output())
    finally:
        await executor.close()
    assert result.exit_code == 128 + 9


async def test_a_sink_that_fails_fails_the_attempt_once_it_ended(
    sshd: Sshd, workspace: Path
) -> None:
    """A log that cannot be written (a full disk) is raised from execute(), as locally, after
    the stage ended; the connection stays usable."""
    stage = Stage(id="s", name="s", host="a", run="seq 1 100000")
    executor = SshExecutor(
        make_pipeline(workspace, {"a": sshd.host("a", "127.0.0.2")}, [stage]), "a"
    )
    calls = []

    def full(stream: str, data: bytes) -> None:
        calls.append(stream)
        raise OSError(28, "No space left on device")

    try:
        with pytest.raises(OSError, match="No space left"):
            await executor.execute(stage, stage_env(stage), full)
        assert calls == ["stdout"], "the sink is not called again once it failed"
        again = Output()
        assert (await executor.execute(stage, stage_env(stage), again)).exit_code == 0
    finally:
        await executor.close()
    assert again.stdout.endswith(b"100000\n")
