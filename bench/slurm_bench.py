"""Slurm benchmark: pipedeck's Slurm executor against a shell loop of `sbatch --wait`.

On a throwaway single-node cluster (started like the tests' fixture: 8 CPUs, one per job):

1. N one-second jobs: pipedeck (one stage per job on a Slurm host, `slots` = P) against
   `xargs -P P` running `sbatch --wait` once per job, the same parallelism. Goal: <= 1.2x.
2. Slurm commands pipedeck issues (sbatch, squeue, sacct/scontrol, scancel) per minute of run,
   at 10 and at 100 jobs: bounded by the poll interval, not by the number of jobs.

Needs root, slurm-wlm and munge. Prints one markdown section.

    .venv/bin/python bench/slurm_bench.py [--jobs 100] [--parallel 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.executors.slurm import SlurmExecutor  # noqa: E402
from engine.run import Run  # noqa: E402
from tests.slurm.conftest import (  # noqa: E402
    Cluster,
    make_pipeline,
    running_cluster,
    slurm_missing,
    slurm_stage,
)


async def pipedeck_run(
    cluster: Cluster, root: Path, jobs: int, parallel: int
) -> tuple[float, int, int]:
    """Wall time of `jobs` one-second stages as Slurm jobs; Slurm commands issued, polls."""
    workspace = Path(tempfile.mkdtemp(dir=root))
    stages = [slurm_stage(f"j{i}", "sleep 1") for i in range(jobs)]
    pipeline = make_pipeline(workspace, {"cluster": cluster.host(slots=parallel)}, stages)
    run = Run(pipeline)
    start = time.perf_counter()
    try:
        code = await run.execute()
        elapsed = time.perf_counter() - start
        executor = run.hosts.executor("cluster")
        assert isinstance(executor, SlurmExecutor)
        commands, polls = executor.commands, executor.poller.commands
    finally:
        await run.close()
    if code != 0:
        raise SystemExit(f"pipedeck run failed with exit code {code}")
    return elapsed, commands, polls


def sbatch_loop(cluster: Cluster, jobs: int, parallel: int) -> float:
    """Wall time of `xargs -P parallel` running `sbatch --wait` once per job."""
    script = (
        f"seq {jobs} | xargs -P {parallel} -I{{}} "
        "sbatch --wait --quiet --output=/dev/null --cpus-per-task=1 --wrap 'sleep 1'"
    )
    start = time.perf_counter()
    subprocess.run(["sh", "-c", script], env=cluster.env, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print("## Slurm: N one-second jobs, pipedeck vs a shell loop of `sbatch --wait`\n")
    reason = slurm_missing()
    if reason is not None:
        print(f"Not measured: {reason}.")
        return
    with tempfile.TemporaryDirectory(prefix="pipedeck-slurm-bench-") as tmp:
        root = Path(tmp)
        (root / "cluster").mkdir()
        with running_cluster(root / "cluster") as cluster:
            ours: list[float] = []
            peer: list[float] = []
            counts: dict[int, tuple[float, int, int]] = {}
            for _ in range(args.rounds):  # alternate, so load elsewhere hits both alike
                counts[args.jobs] = asyncio.run(
                    pipedeck_run(cluster, root, args.jobs, args.parallel)
                )
                ours.append(counts[args.jobs][0])
                peer.append(sbatch_loop(cluster, args.jobs, args.parallel))
            counts[10] = asyncio.run(pipedeck_run(cluster, root, 10, args.parallel))
            proctrack = cluster.proctrack
    ratio = statistics.median(ours) / statistics.median(peer)
    print(
        f"{args.jobs} jobs of `sleep 1`, {args.parallel} at once (one CPU each, 8-CPU node,"
        f" {proctrack}), {args.rounds} alternating rounds; median wall time.\n"
    )
    print("| case | median | runs |")
    print("|---|---|---|")
    print(f"| pipedeck | {statistics.median(ours):.2f} s | {', '.join(f'{t:.2f}' for t in ours)} |")
    print(
        f"| `xargs -P{args.parallel} sbatch --wait` | {statistics.median(peer):.2f} s"
        f" | {', '.join(f'{t:.2f}' for t in peer)} |"
    )
    verdict = "met" if ratio <= 1.2 else "MISSED"
    print(f"\nRatio pipedeck / sbatch loop: **{ratio:.2f}x** (goal <= 1.2x: {verdict}).\n")
    print("Slurm commands pipedeck issued (sbatch, squeue, scontrol/sacct, scancel):\n")
    print("| jobs | run time | all commands | per minute | state polls | polls per minute |")
    print("|---|---|---|---|---|---|")
    for jobs in sorted(counts):
        elapsed, commands, polls = counts[jobs]
        print(
            f"| {jobs} | {elapsed:.1f} s | {commands} | {commands / elapsed * 60:.0f}"
            f" | {polls} | {polls / elapsed * 60:.0f} |"
        )
    print(
        "\nOne `sbatch` per job; state comes from one `squeue` per host per poll for all jobs"
        " (0.5 s while jobs change, backing off to 5 s), so polls per minute do not grow with"
        " the number of jobs."
    )


if __name__ == "__main__":
    main()
