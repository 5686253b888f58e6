"""The Slurm keys of the pipeline file, sbatch's arguments, and how Slurm's answers are read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.executors.slurm import shell_command
from engine.executors.slurm_jobs import (
    JobInfo,
    job_result,
    parse_sacct,
    parse_scontrol,
    parse_squeue,
    sbatch_argv,
)
from engine.loader import ConfigError, load
from engine.spec import Resources, SlurmOptions, Stage

PIPELINE = """\
version: 1
hosts:
  cluster:
    executor: slurm
    workdir: /scratch/me/shop
    slurm: {partition: gpu, account: ml, qos: normal, extra_args: ["--exclusive"]}
stages:
  train:
    host: cluster
    resources: {cpus: 8, memory: 32G, gpus: 1, time: 2h}
    run: python train.py
"""


def test_a_slurm_host_and_stage_resources_load(write_pipeline: Callable[[str], Path]) -> None:
    pipeline = load(write_pipeline(PIPELINE))
    host = pipeline.hosts["cluster"]
    assert host.executor == "slurm"
    assert host.address == ""  # no address: the Slurm commands run here
    assert host.slurm == SlurmOptions("gpu", "ml", "normal", ("--exclusive",))
    stage = pipeline.stages["train"]
    assert stage.resources == Resources(cpus=8, memory="32G", gpus=1, time=7200.0)
    argv = sbatch_argv(stage, host.slurm, "/scratch/me/shop/.pipedeck/slurm/x", "n")
    assert argv[-8:] == [
        "--cpus-per-task=8",
        "--mem=32G",
        "--gpus=1",
        "--time=0-02:00:00",
        "--partition=gpu",
        "--account=ml",
        "--qos=normal",
        "--exclusive",
    ]
    assert "--no-requeue" in argv
    assert not any(a.startswith("--export") for a in argv)


def test_bad_slurm_keys_are_reported_with_their_place(
    write_pipeline: Callable[[str], Path],
) -> None:
    bad = PIPELINE.replace("executor: slurm", "executor: slurmm").replace("qos:", "qso:")
    bad = bad.replace("cpus: 8", "cpus: 0").replace("32G", "32X")
    with pytest.raises(ConfigError) as caught:
        load(write_pipeline(bad))
    text = str(caught.value)
    assert "pipedeck.yaml:4:15: hosts.cluster.executor: 'slurmm' is not one of ssh, slurm" in text
    assert ":6:42: unknown key 'qso' in hosts.cluster.slurm; did you mean 'qos'?" in text
    assert ":10:23: stages.train.resources.cpus: must be at least 1, got 0" in text
    assert ":10:34: stages.train.resources.memory: '32X' does not match" in text


def test_squeue_sacct_and_scontrol_answers_map_to_results() -> None:
    jobs = parse_squeue(
        "7|PENDING|Resources||0|\n8|RUNNING|None|pd1|0|\n9|FAILED|NonZeroExitCode|pd1|768|\n"
        "10|CANCELLED|None|pd1|15|\n11|NODE_FAIL|None|pd1|0|\n"
    )
    assert jobs["7"] == JobInfo("PENDING", "Resources", None, 0)
    assert not jobs["8"].finished and jobs["8"].node == "pd1"
    assert job_result("9", jobs["9"]).exit_code == 3
    assert job_result("10", jobs["10"]).status == "cancelled"
    assert job_result("11", jobs["11"]).lost
    sacct = parse_sacct("12|TIMEOUT|0:15|pd1\n13|CANCELLED by 0|0:0|pd1\n14|PREEMPTED|0:0|n2\n")
    assert job_result("12", sacct["12"]).status == "timed_out"
    assert sacct["13"].state == "CANCELLED"
    assert job_result("14", sacct["14"]).lost
    info = parse_scontrol("JobId=15 JobState=COMPLETED Reason=None ExitCode=0:0 NodeList=pd1")
    assert info == JobInfo("COMPLETED", None, "pd1", 0)
    assert job_result("15", info).exit_code == 0
    assert job_result("16", JobInfo("VANISHED")).lost


def test_shell_opens_in_the_running_job_or_a_new_allocation() -> None:
    stage = Stage(id="t", name="t", run="x", cwd="sub", resources=Resources(cpus=4, gpus=1))
    inside = shell_command(stage, "42", "/scratch/w")
    assert inside[:4] == ["srun", "--overlap", "--jobid=42", "--pty"]
    assert inside[-1] == "/scratch/w/sub"
    fresh = shell_command(stage, None, "/scratch/w")
    assert fresh[:4] == ["srun", "--pty", "--cpus-per-task=4", "--gpus=1"]
