"""CPU and memory of Slurm jobs (`u`, history): one `sstat` per interval for all jobs of a host,
and one note where sstat has no figures; on the real single-node cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.executors.slurm import SlurmExecutor
from tests.conftest import Recorder
from tests.measured import MIB, Measured, burner, busy, run_measured
from tests.slurm.conftest import Cluster, slurm_stage
from tests.ssh.conftest import make_pipeline

pytestmark = pytest.mark.slurm


def _executor(measured: Measured) -> SlurmExecutor:
    executor = measured.run.hosts.executor("cluster")
    assert isinstance(executor, SlurmExecutor)
    return executor


async def test_jobs_show_cpu_and_memory_with_one_sstat_per_interval(
    cluster: Cluster, workspace: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    names = ("one", "two")
    stages = [slurm_stage(n, burner(gate, 40)) for n in names]
    pipeline = make_pipeline(workspace, {"cluster": cluster.host()}, stages)

    async def during(measured: Measured) -> None:
        await measured.until(busy(names, 40), 60)
        executor = _executor(measured)
        await measured.one_call_per_interval(lambda: executor.sstats)  # for the two jobs
        gate.touch()

    code, attempts = await run_measured(pipeline, during)
    assert code == 0
    for row in attempts:
        assert row.job_id
        assert row.peak_rss is not None and row.peak_rss >= 40 * MIB
        assert row.cpu_seconds is not None and row.cpu_seconds >= 1


async def test_without_job_accounting_the_log_says_so_once(
    linuxproc_cluster: Cluster, workspace: Path, recorder: Recorder
) -> None:
    stages = [slurm_stage(n, "echo up; sleep 4") for n in ("one", "two")]
    pipeline = make_pipeline(workspace, {"cluster": linuxproc_cluster.host()}, stages)
    executors: list[SlurmExecutor] = []
    asked: list[int] = []  # sstat calls when the note came

    def notes() -> list[str]:
        lines = [line for sid in ("one", "two") for line in recorder.lines(sid, "stderr")]
        return [line for line in lines if "no CPU or memory figures" in line]

    async def during(measured: Measured) -> None:
        measured.run.subscribe(recorder)
        await measured.until(lambda _: bool(notes()), 60)
        asked.append(_executor(measured).sstats)
        executors.append(_executor(measured))

    code, _ = await run_measured(pipeline, during)
    assert code == 0
    assert notes() == ["pipedeck: host cluster: no CPU or memory figures for its jobs: sstat: "
                       "no job accounting gathered"]  # fmt: skip
    assert executors[0].sstats == asked[0]  # never asked again while the jobs ran on (4 s)
