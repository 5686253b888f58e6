"""Stages as jobs on a real single-node Slurm cluster: output, states, cancel, timeout, lost, secrets."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from engine.events import Event, LogLines, StageStatus
from engine.executors.slurm import SlurmExecutor
from engine.executors.slurm_jobs import POLL_MIN
from engine.hosts import Hosts
from engine.run import Run
from engine.spec import Resources, SlurmOptions, Stage
from tests.conftest import Recorder, marked_pids
from tests.slurm.conftest import Cluster, slurm_stage
from tests.ssh.conftest import make_pipeline
from tests.waiting import until

pytestmark = pytest.mark.slurm


def start(cluster: Cluster, workspace: Path, stages: list[Stage], **kw: object) -> Run:
    pipeline = make_pipeline(workspace, {"cluster": cluster.host()}, stages, **kw)  # type: ignore[arg-type]
    return Run(pipeline)


def job_of(recorder: Recorder, stage: str) -> StageStatus | None:
    """The stage's latest status event that carries a job id."""
    found = [
        e for e in recorder.events if isinstance(e, StageStatus) and e.stage == stage and e.job_id
    ]
    return found[-1] if found else None


async def execute(run: Run) -> int:
    try:
        return await run.execute()
    finally:
        await run.close()


async def test_output_streams_while_the_job_runs_and_exit_codes_map(
    cluster: Cluster, workspace: Path, recorder: Recorder
) -> None:
    gate = workspace / "gate"
    run = start(
        cluster,
        workspace,
        [
            slurm_stage(
                "talk",
                f"echo first; echo warn >&2; while [ ! -e {gate} ]; do sleep 0.1; done;"
                " echo second; exit 3",
            ),
            slurm_stage("fine", "echo ok"),
        ],
    )

    def subscriber(event: Event) -> None:
        recorder(event)
        if isinstance(event, LogLines) and "first" in event.lines:
            gate.touch()  # only streamed output opens the gate: the job waits for it

    run.subscribe(subscriber)
    code = await asyncio.wait_for(execute(run), 60)
    assert code == 1
    final = recorder.final("talk")
    assert (final.status, final.exit_code) == ("failed", 3)
    assert final.job_id and final.node == cluster.node
    assert recorder.lines("talk", "stdout") == ["first", "second"]
    assert recorder.lines("talk", "stderr") == ["warn"]
    assert recorder.final("fine").status == "succeeded"
    assert recorder.lines("fine") == ["ok"]
    assert "running" in recorder.statuses("talk")
    running = [e for e in recorder.events if isinstance(e, StageStatus) and e.status == "running"]
    assert any(e.node == cluster.node and e.job_id for e in running)


async def test_a_job_waiting_for_a_full_node_is_queued_with_slurms_reason(
    cluster: Cluster, workspace: Path, recorder: Recorder
) -> None:
    gate = workspace / "gate"
    big = start(
        cluster,
        workspace,
        [
            slurm_stage(
                "big",
                f"echo started; while [ ! -e {gate} ]; do sleep 0.1; done",
                resources=Resources(cpus=8),
            )
        ],
    )
    small = start(cluster, workspace, [slurm_stage("small", "echo small ran")])
    big.subscribe(recorder)
    small.subscribe(recorder)
    big_task = asyncio.create_task(execute(big))
    small_task: asyncio.Task[int] | None = None
    try:
        await until(lambda: "started" in recorder.lines("big"), "big to fill the node", 30)
        small_task = asyncio.create_task(execute(small))

        def small_waits() -> bool:
            return any(
                isinstance(e, StageStatus)
                and e.stage == "small"
                and e.status == "queued"
                and e.reason in ("Slurm: Resources", "Slurm: Priority")
                for e in recorder.events
            )

        await until(small_waits, "small to be queued with Slurm's reason", 30)
        assert small.states["small"].status == "queued"
        assert "small ran" not in recorder.lines("small")
    finally:
        gate.touch()
        assert await asyncio.wait_for(big_task, 60) == 0
        if small_task is not None:
            assert await asyncio.wait_for(small_task, 60) == 0
    assert recorder.final("small").status == "succeeded"
    assert recorder.lines("small") == ["small ran"]


@pytest.mark.parametrize("tracking", ["cluster", "linuxproc_cluster"])
async def test_cancel_scancels_the_job_and_leaves_no_process_and_an_empty_queue(
    tracking: str, request: pytest.FixtureRequest, workspace: Path, recorder: Recorder
) -> None:
    cluster: Cluster = request.getfixturevalue(tracking)
    run = start(
        cluster,
        workspace,
        [
            slurm_stage(
                "spin",
                "(setsid sh -c 'sleep 300' &) ; trap 'echo got TERM; exit 7' TERM;"
                " echo ready; while :; do sleep 0.1; done",
            )
        ],
    )
    run.subscribe(recorder)
    task = asyncio.create_task(execute(run))
    await until(lambda: "ready" in recorder.lines("spin"), "the job to start", 30)
    assert marked_pids(run.run_id), "the job's processes carry the run marker"
    run.cancel("spin")
    await asyncio.wait_for(task, 60)
    assert recorder.final("spin").status == "cancelled"
    assert "got TERM" in recorder.lines("spin")  # TERM first, with kill_grace to act on it
    assert cluster.queue() == []
    # cgroup: Slurm kills it; linuxproc: the job's own sweep by its mark does
    await until(lambda: not marked_pids(run.run_id), "the double-forked sleeper to die", 10)


@pytest.mark.parametrize("tracking", ["cluster", "linuxproc_cluster"])
async def test_pipedeck_timeout_kills_a_job_ignoring_term_and_leaves_nothing(
    tracking: str, request: pytest.FixtureRequest, workspace: Path, recorder: Recorder
) -> None:
    cluster: Cluster = request.getfixturevalue(tracking)
    stubborn = "trap '' TERM; (setsid sleep 300 &); echo begun; while :; do sleep 0.1; done"
    run = start(cluster, workspace, [slurm_stage("slow", stubborn, timeout=3.0)])
    run.subscribe(recorder)
    assert await asyncio.wait_for(execute(run), 60) == 1
    assert recorder.final("slow").status == "timed_out"
    assert recorder.lines("slow", "stdout") == ["begun"]
    assert cluster.queue() == []
    await until(lambda: not marked_pids(run.run_id), "every process of the job to be gone", 10)


async def test_slurm_time_limit_ends_the_attempt_timed_out(
    cluster: Cluster, workspace: Path, recorder: Recorder
) -> None:
    """`resources.time: 1m`: Slurm itself ends the job (TIMEOUT), pipedeck says `timed_out`.
    Slurm checks time limits every 30 s (slurmctld's PERIODIC_TIMEOUT, not configurable), so
    this takes 60 to 90 s plus KillWait (5 s in the fixture)."""
    limited = slurm_stage("slow", "echo begun; sleep 300", resources=Resources(cpus=1, time=60))
    run = start(cluster, workspace, [limited])
    run.subscribe(recorder)
    began = time.monotonic()
    assert await asyncio.wait_for(execute(run), 150) == 1
    final = recorder.final("slow")
    assert (final.status, final.reason) == ("timed_out", f"job {final.job_id}: Slurm TIMEOUT")
    assert time.monotonic() - began >= 60
    assert recorder.lines("slow", "stdout") == ["begun"]
    assert cluster.queue() == []


async def test_a_node_failure_makes_the_attempt_lost_and_retries_apply(
    cluster: Cluster, workspace: Path, recorder: Recorder
) -> None:
    run = start(cluster, workspace, [slurm_stage("doomed", "echo up; sleep 300", retries=1)])
    run.subscribe(recorder)
    task = asyncio.create_task(execute(run))
    try:
        await until(lambda: "up" in recorder.lines("doomed"), "the job to start", 30)
        cluster.run(
            "scontrol", "update", f"nodename={cluster.node}", "state=down", "reason=pipedeck-test"
        )
        await until(lambda: "lost" in recorder.statuses("doomed"), "lost", 30)
        lost = [e for e in recorder.events if isinstance(e, StageStatus) and e.status == "lost"]
        assert lost[0].attempt == 1
        assert "NODE_FAIL" in (lost[0].reason or "")
        await until(
            lambda: (
                run.states["doomed"].attempt == 2
                and run.states["doomed"].status == "queued"
                and (run.states["doomed"].reason or "").startswith("Slurm:")
            ),
            "the retry to wait for the downed node",
            30,
        )
        run.cancel("doomed")
        await asyncio.wait_for(task, 60)
    finally:
        cluster.run("scontrol", "update", f"nodename={cluster.node}", "state=resume", check=False)
        if not task.done():
            run.cancel_all()
            await asyncio.wait_for(task, 60)
        await until(lambda: cluster.node_state() == "idle", "the node to be idle again", 30)
    assert cluster.queue() == []


async def test_secrets_reach_the_job_but_no_command_line_nor_scontrol(
    cluster: Cluster, workspace: Path, recorder: Recorder
) -> None:
    secret = "s3cr3t-" + os.urandom(6).hex()
    gate = workspace / "gate"
    run = start(
        cluster,
        workspace,
        [
            slurm_stage(
                "deploy",
                f'echo "token=$DEPLOY_TOKEN"; [ ${{#DEPLOY_TOKEN}} = {len(secret)} ] && echo match;'
                f" while [ ! -e {gate} ]; do sleep 0.1; done",
            )
        ],
        secrets={"DEPLOY_TOKEN": secret},
    )
    run.subscribe(recorder)
    task = asyncio.create_task(execute(run))
    try:
        await until(lambda: "match" in recorder.lines("deploy"), "the job to run", 30)
        job = job_of(recorder, "deploy")
        assert job is not None and job.job_id
        shown = cluster.run("scontrol", "show", "job", "-dd", job.job_id)
        assert f"JobId={job.job_id}" in shown
        assert secret not in shown
        ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
        assert secret not in ps
        scripts = list((workspace / ".pipedeck" / "slurm").glob("*/job.sh"))
        assert scripts and all(p.stat().st_mode & 0o777 == 0o600 for p in scripts)
    finally:
        gate.touch()
        await asyncio.wait_for(task, 60)
    assert recorder.lines("deploy") == ["token=***", "match"]


async def test_the_next_start_cancels_jobs_a_crashed_pipedeck_left(
    cluster: Cluster, workspace: Path
) -> None:
    stage = slurm_stage("orphan", "sleep 300")
    pipeline = make_pipeline(workspace, {"cluster": cluster.host()}, [stage])
    code = "import sys, time\nprint(1, flush=True)\ntime.sleep(300)\n"
    crashed = subprocess.Popen(["python3", "-c", code], stdout=subprocess.PIPE)
    try:
        assert crashed.stdout is not None and crashed.stdout.readline() == b"1\n"
        job_id = cluster.run(
            "sbatch", "--parsable", "--output=/dev/null", "--wrap", "sleep 300"
        ).strip()
        records = pipeline.state_dir / "slurm-jobs" / "cluster"
        records.mkdir(parents=True)
        import psutil

        started = psutil.Process(crashed.pid).create_time()
        (records / job_id).write_text(f'{{"pid": {crashed.pid}, "started": {started}}}')
        executor = SlurmExecutor(pipeline, "cluster")
        assert await executor.cancel_leftovers() == []  # its pipedeck still runs: hands off
        assert job_id in cluster.queue()
    finally:
        crashed.kill()
        crashed.wait()
    assert await executor.cancel_leftovers() == [job_id]
    await executor.close()
    cluster.wait_queue_empty(30)
    assert not (records / job_id).exists()


async def test_a_local_workdir_gets_the_workspace_and_upstream_artifacts_and_outputs_come_back(
    cluster: Cluster, workspace: Path, tmp_path: Path, recorder: Recorder
) -> None:
    (workspace / ".gitignore").write_text("build/\nscratch.txt\n")
    (workspace / "src.txt").write_text("source\n")
    (workspace / "scratch.txt").write_text("ignored\n")
    workdir = tmp_path / "shared"
    stages = [
        Stage(
            id="make",
            name="make",
            run="mkdir -p build && echo built > build/lib.txt",
            outputs=("build/*.txt",),
        ),
        slurm_stage(
            "train",
            "cat src.txt build/lib.txt; ls scratch.txt 2>/dev/null || echo no-scratch;"
            " mkdir -p out && echo weights > out/model.txt",
            needs=("make",),
            outputs=("out/*.txt",),
        ),
    ]
    host = cluster.host(workdir=str(workdir))
    run = Run(make_pipeline(workspace, {"cluster": host}, stages))
    run.subscribe(recorder)
    assert await asyncio.wait_for(execute(run), 60) == 0
    assert recorder.lines("train", "stdout") == ["source", "built", "no-scratch"]
    assert (workspace / "out" / "model.txt").read_text() == "weights\n"
    assert not list((workdir / ".pipedeck" / "slurm").iterdir()), "job dirs are removed"


async def test_a_failed_github_actions_jobs_result_comes_back_a_failed_stages_outputs_stay(
    cluster: Cluster, workspace: Path, tmp_path: Path, recorder: Recorder
) -> None:
    """A job's result file (its declared output, SPEC §11) is fetched whatever its exit; other
    stages' outputs only after a success, as on SSH hosts."""
    workdir = tmp_path / "shared"
    made = "mkdir -p out && echo '{}' > out/$PIPEDECK_STAGE.json; exit 3"
    stages = [
        slurm_stage("job", made, outputs=("out/job.json",), steps=True),
        slurm_stage("plain", made, outputs=("out/plain.json",)),
    ]
    run = Run(make_pipeline(workspace, {"cluster": cluster.host(workdir=str(workdir))}, stages))
    run.subscribe(recorder)
    assert await asyncio.wait_for(execute(run), 60) == 1
    assert [recorder.final(s.id).exit_code for s in stages] == [3, 3]
    assert (workspace / "out" / "job.json").read_text() == "{}\n"
    assert not (workspace / "out" / "plain.json").exists()
    assert (workdir / "out" / "plain.json").exists()


async def test_a_local_workdir_loses_files_removed_from_the_workspace(
    cluster: Cluster, workspace: Path, tmp_path: Path, recorder: Recorder
) -> None:
    """As on SSH hosts: what was sent and is gone here goes there; what jobs made stays."""
    (workspace / "keep.txt").write_text("kept\n")
    (workspace / "old.txt").write_text("old\n")
    workdir = tmp_path / "shared"
    stage = slurm_stage("list", "ls *.txt; echo made > made.txt")
    pipeline = make_pipeline(workspace, {"cluster": cluster.host(workdir=str(workdir))}, [stage])
    first = Run(pipeline)
    assert await asyncio.wait_for(execute(first), 60) == 0
    assert (workdir / "old.txt").exists() and (workdir / "made.txt").exists()
    (workspace / "old.txt").unlink()
    again = Run(pipeline)
    again.subscribe(recorder)
    assert await asyncio.wait_for(execute(again), 60) == 0
    assert recorder.lines("list", "stdout") == ["keep.txt", "made.txt"]
    assert not (workdir / "old.txt").exists()


async def test_one_poll_per_interval_for_all_jobs_of_a_host(
    cluster: Cluster, workspace: Path, recorder: Recorder
) -> None:
    stages = [slurm_stage(f"j{i}", "sleep 2") for i in range(8)]
    pipeline = make_pipeline(workspace, {"cluster": cluster.host()}, stages)
    executor = SlurmExecutor(pipeline, "cluster")
    run = Run(pipeline, hosts=Hosts(pipeline, executors={"cluster": executor}))
    run.subscribe(recorder)
    began = time.monotonic()
    code = await asyncio.wait_for(execute(run), 60)
    assert code == 0, [(s.id, recorder.final(s.id).reason) for s in stages]
    elapsed = time.monotonic() - began
    # polls are spaced by at least POLL_MIN whatever the number of jobs (one job per poll
    # would be 8 per interval); the +2 are a first poll and the last one
    assert executor.poller.commands <= elapsed / POLL_MIN + 2
    sbatches = len(stages)
    assert executor.commands - executor.poller.commands == sbatches  # no cancels, nothing else


async def test_a_job_cancelled_outside_pipedeck_is_cancelled(
    cluster: Cluster, workspace: Path, recorder: Recorder
) -> None:
    run = start(cluster, workspace, [slurm_stage("victim", "echo up; sleep 300")])
    run.subscribe(recorder)
    task = asyncio.create_task(execute(run))
    await until(lambda: "up" in recorder.lines("victim"), "the job to start", 30)
    job = job_of(recorder, "victim")
    assert job is not None and job.job_id
    cluster.run("scancel", job.job_id)  # an admin, or the user in another terminal
    await asyncio.wait_for(task, 60)
    final = recorder.final("victim")
    assert final.status == "cancelled"
    assert final.reason == f"job {job.job_id} cancelled in Slurm"
    assert cluster.queue() == []


async def test_a_cancel_while_sbatch_runs_cancels_the_job_it_made(
    cluster: Cluster, workspace: Path, tmp_path: Path, recorder: Recorder
) -> None:
    slow = tmp_path / "bin"
    slow.mkdir()
    started, finished = tmp_path / "sbatch-started", tmp_path / "sbatch-finished"
    real = shutil.which("sbatch")
    (slow / "sbatch").write_text(
        f'#!/bin/sh\ntouch {started}\nsleep 1\n{real} "$@"\ns=$?\ntouch {finished}\nexit $s\n'
    )
    (slow / "sbatch").chmod(0o755)
    options = replace(
        cluster.host().slurm or SlurmOptions(),
        env={"SLURM_CONF": str(cluster.conf), "PATH": f"{slow}:{os.environ['PATH']}"},
    )
    host = cluster.host(slurm=options)
    run = Run(make_pipeline(workspace, {"cluster": host}, [slurm_stage("s", "sleep 300")]))
    run.subscribe(recorder)
    task = asyncio.create_task(execute(run))
    await until(started.exists, "sbatch to start", 30)
    run.cancel("s")
    await asyncio.wait_for(task, 60)
    assert recorder.final("s").status == "cancelled"
    await until(finished.exists, "the slow sbatch to finish", 30)
    assert cluster.queue() == [], "the job sbatch made is cancelled"
    assert not list((workspace / ".pipedeck" / "slurm-jobs" / "cluster").iterdir())
