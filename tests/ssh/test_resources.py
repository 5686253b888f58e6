"""CPU and memory of remote stages (`u`, history): one probe per host per interval over the
pooled connection, on a real sshd."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.executors.ssh import SshExecutor
from engine.procstat import Units, attribute
from engine.spec import Stage
from tests.measured import MIB, Measured, burner, busy, run_measured
from tests.ssh.conftest import Sshd, make_pipeline

pytestmark = pytest.mark.ssh


async def test_remote_stages_show_cpu_and_memory_with_one_probe_per_interval_and_no_new_connection(
    sshd: Sshd, workspace: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    names = ("one", "two")
    stages = [
        Stage(id=n, name=n, host="a", run=burner(gate, 40, clear_env=n == "two")) for n in names
    ]
    pipeline = make_pipeline(workspace, {"a": sshd.host("a", "127.0.0.2")}, stages)
    before = set(await asyncio.to_thread(sshd.connection_pids))

    async def during(measured: Measured) -> None:
        await measured.until(busy(names, 40), 60)
        executor = measured.run.hosts.executor("a")
        assert isinstance(executor, SshExecutor)
        connections = set(await asyncio.to_thread(sshd.connection_pids)) - before
        assert len(connections) == 1, "the stages' one pooled connection"
        await measured.one_call_per_interval(lambda: executor.probes)  # for the two stages
        after = set(await asyncio.to_thread(sshd.connection_pids))
        assert after - before == connections, "no connection of its own"
        gate.touch()

    code, attempts = await run_measured(pipeline, during)
    assert code == 0
    for row in attempts:
        assert row.host == "a"
        assert row.peak_rss is not None and row.peak_rss >= 40 * MIB
        assert row.cpu_seconds is not None and row.cpu_seconds > 0.2


def test_a_probe_finds_group_mates_and_marked_escapees_whatever_the_login_shell_printed() -> None:
    """The parsing alone: a login shell's greeting before the records, an attempt's group
    (leader 50, a member 51 without the token), an escapee in a group of its own carrying the
    token (52), and a stranger (53)."""

    def stat(pid: int, parent: int, group: int, ticks: int) -> bytes:
        return (f"/proc/{pid}/stat:{pid} (a name) S {parent} {group} {group} 0 -1 0 0 0 0 0 "
                f"{ticks} 0 0 0 20 0 1 0 {900 + pid} 0 10 \n").encode()  # fmt: skip

    out = b"\0".join([
        b"Welcome!\nunits:100 4096", b"group:tok:50", stat(50, 1, 50, 10), stat(51, 50, 50, 90),
        stat(52, 1, 52, 200), b"/proc/52/environ:PIPEDECK_SSH_TASK=tok", stat(53, 1, 53, 7), b"",
    ])  # fmt: skip
    groups: dict[str, int] = {}
    units = Units()
    found = attribute(out, ["tok"], groups, units)
    assert (groups, units) == ({"tok": 50}, Units(100, 4096))
    assert [(p.pid, p.ppid, p.cpu, p.rss) for p in found["tok"]] == [
        (50, 1, 0.1, 40960), (51, 50, 0.9, 40960), (52, 1, 2.0, 40960)
    ]  # fmt: skip
