"""Slurm through a login node reached over SSH (the loopback sshd; same machine as the node)."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from engine.run import Run
from engine.spec import Host
from tests.conftest import Recorder
from tests.slurm.conftest import Cluster, slurm_stage
from tests.slurm.test_slurm_executor import execute
from tests.ssh.conftest import Sshd, make_pipeline
from tests.waiting import until

pytestmark = [pytest.mark.slurm, pytest.mark.ssh]


def login_host(cluster: Cluster, sshd: Sshd, workdir: Path) -> Host:
    ssh = sshd.host("cluster", "127.0.0.2", workdir=str(workdir))
    return cluster.host(
        address=ssh.address,
        port=ssh.port,
        user=ssh.user,
        identity_file=ssh.identity_file,
        known_hosts=ssh.known_hosts,
        workdir=ssh.workdir,
    )


async def test_jobs_go_through_the_login_node_with_the_workspace_synced(
    cluster: Cluster, sshd: Sshd, workspace: Path, tmp_path: Path, recorder: Recorder
) -> None:
    (workspace / "data.txt").write_text("from the workspace\n")
    workdir = tmp_path / "remote"
    stages = [
        slurm_stage(
            "train",
            "cat data.txt; echo oops >&2; mkdir -p out; echo model > out/model.txt",
            outputs=("out/*.txt",),
        )
    ]
    host = login_host(cluster, sshd, workdir)
    run = Run(make_pipeline(workspace, {"cluster": host}, stages))
    run.subscribe(recorder)
    assert await asyncio.wait_for(execute(run), 90) == 0
    final = recorder.final("train")
    assert final.status == "succeeded" and final.node == cluster.node and final.job_id
    assert recorder.lines("train", "stdout") == ["from the workspace"]
    assert recorder.lines("train", "stderr") == ["oops"]
    assert (workdir / "data.txt").exists(), "the workspace was synced to workdir"
    assert (workspace / "out" / "model.txt").read_text() == "model\n"  # the output came back
    assert cluster.queue() == []


async def test_cancel_over_the_login_node_empties_the_queue(
    cluster: Cluster, sshd: Sshd, workspace: Path, tmp_path: Path, recorder: Recorder
) -> None:
    host = login_host(cluster, sshd, tmp_path / "remote")
    stages = [slurm_stage("spin", "echo ready; sleep 300")]
    run = Run(make_pipeline(workspace, {"cluster": host}, stages))
    run.subscribe(recorder)
    task = asyncio.create_task(execute(run))
    await until(lambda: "ready" in recorder.lines("spin"), "the job to start", 60)
    run.cancel_all()
    await asyncio.wait_for(task, 60)
    assert recorder.final("spin").status == "cancelled"
    assert cluster.queue() == []


async def test_without_workdir_jobs_run_in_the_workspace_on_the_shared_file_system(
    cluster: Cluster, sshd: Sshd, workspace: Path, recorder: Recorder
) -> None:
    host = login_host(cluster, sshd, workspace)
    host = replace(host, workdir=None)
    stages = [slurm_stage("here", "pwd; echo made > made.txt")]
    run = Run(make_pipeline(workspace, {"cluster": host}, stages))
    run.subscribe(recorder)
    assert await asyncio.wait_for(execute(run), 90) == 0
    assert recorder.lines("here", "stdout") == [str(workspace)]
    assert (workspace / "made.txt").read_text() == "made\n"  # no sync: the job wrote it here


async def test_a_dropped_login_connection_does_not_lose_the_job(
    cluster: Cluster, sshd: Sshd, workspace: Path, tmp_path: Path, recorder: Recorder
) -> None:
    gate = tmp_path / "gate"
    host = login_host(cluster, sshd, tmp_path / "remote")
    run_text = f"echo before; while [ ! -e {gate} ]; do sleep 0.1; done; echo after"
    run = Run(make_pipeline(workspace, {"cluster": host}, [slurm_stage("train", run_text)]))
    run.subscribe(recorder)
    task = asyncio.create_task(execute(run))
    try:
        await until(lambda: "before" in recorder.lines("train"), "the job to start", 60)
        dropped = sshd.connection_pids()
        assert dropped
        for pid in dropped:
            os.kill(pid, signal.SIGKILL)  # the login connection drops mid-job
        gate.touch()
        assert await asyncio.wait_for(task, 90) == 0
    finally:
        gate.touch()
        if not task.done():
            run.cancel_all()
            await asyncio.wait_for(task, 60)
    assert recorder.final("train").status == "succeeded"
    assert recorder.lines("train", "stdout") == ["before", "after"]
