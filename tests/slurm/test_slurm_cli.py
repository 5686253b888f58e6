"""`pipedeck run` with a Slurm host on the real cluster: the ML sample, and SIGTERM mid-job."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, pipedeck_bin
from tests.slurm.conftest import Cluster
from tests.waiting import until_blocking

pytestmark = pytest.mark.slurm


def test_the_ml_sample_trains_on_slurm(cluster: Cluster, tmp_path: Path) -> None:
    shutil.copytree(SAMPLES / "ml", tmp_path / "ml")
    shutil.copy(SAMPLES / "ml-slurm.yaml", tmp_path / "ml-slurm.yaml")
    done = subprocess.run(
        [pipedeck_bin(), "run", "ml-slurm.yaml", "--format", "json"],
        cwd=tmp_path,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, done.stderr + done.stdout[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines()]
    finals = {
        e["stage"]: e
        for e in events
        if e["type"] == "stage_status" and e["status"] in ("succeeded", "failed")
    }
    assert set(finals) == {
        "prepare",
        "train[lr=0.1]",
        "train[lr=0.5]",
        "evaluate",
        "gate",
        "publish",
    }
    assert all(e["status"] == "succeeded" for e in finals.values())
    for lr in ("0.1", "0.5"):
        train = finals[f"train[lr={lr}]"]
        assert train["host"] == "cluster" and train["node"] == cluster.node and train["job_id"]
        assert (tmp_path / "ml" / f"model-{lr}.json").exists()
    assert "job_id" not in finals["prepare"]
    assert any(e["type"] == "log" and e["stage"].startswith("train") for e in events)
    assert cluster.queue() == []


def write_pipeline(cluster: Cluster, where: Path, run: str) -> Path:
    """A pipeline with one stage `long` on the cluster."""
    path = where / "pipedeck.yaml"
    path.write_text(
        "version: 1\n"
        "hosts:\n"
        "  cluster:\n"
        "    executor: slurm\n"
        f"    slurm: {{env: {{SLURM_CONF: {cluster.conf}}}}}\n"
        "stages:\n"
        "  long:\n"
        "    host: cluster\n"
        "    kill_grace: 2s\n"
        f"    run: {run}\n"
    )
    return path


def pipedeck(where: Path, *args: str) -> list[str]:
    """Run `pipedeck ARGS` in `where`, which must succeed; its output lines."""
    done = subprocess.run(
        [pipedeck_bin(), *args], cwd=where, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def start_until_begun(where: Path) -> subprocess.Popen[str]:
    """`pipedeck run` in `where`, once its stage printed `begun` (its job runs)."""
    proc = subprocess.Popen([pipedeck_bin(), "run"], cwd=where, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "begun" in line:
            return proc
    proc.wait()
    raise AssertionError(f"pipedeck ended ({proc.returncode}) before its job began")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_or_ctrl_c_cancels_the_job_and_leaves_an_empty_queue(
    cluster: Cluster, tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    write_pipeline(cluster, tmp_path, "echo begun; sleep 300")
    proc = start_until_begun(tmp_path)
    try:
        assert cluster.queue(), "the job runs"
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert cluster.queue() == []
    assert not list((tmp_path / ".pipedeck" / "slurm-jobs" / "cluster").iterdir())
    until_blocking(lambda: cluster.node_state() == "idle", "the node to be idle", 30)


def test_after_a_crash_the_next_run_cancels_the_jobs_left_behind(
    cluster: Cluster, tmp_path: Path
) -> None:
    pipeline = write_pipeline(cluster, tmp_path, "echo begun; sleep 300")
    proc = start_until_begun(tmp_path)
    proc.kill()  # a crash: no cleanup at all
    proc.wait()
    left = cluster.queue()
    assert len(left) == 1, "the crashed run left its job queued"
    pipeline.write_text(pipeline.read_text().replace("echo begun; sleep 300", "echo next"))
    pipedeck(tmp_path, "run")
    assert left[0] not in cluster.queue()
    cluster.wait_queue_empty(30)


def test_after_a_crash_the_next_start_cancels_the_jobs_left_behind_without_the_host(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The next pipedeck on the pipeline cancels them even when it runs no stage on the host
    (here a job pending until its begin time, which no sweep of processes would end)."""
    pipeline = write_pipeline(cluster, tmp_path, "echo begun")
    text = pipeline.read_text().replace("}}\n", "}, extra_args: [--begin=now+3600]}\n")
    pipeline.write_text(text + "  here:\n    run: echo here\n")
    records = tmp_path / ".pipedeck" / "slurm-jobs" / "cluster"
    proc = subprocess.Popen([pipedeck_bin(), "run"], cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        until_blocking(lambda: records.is_dir() and any(records.iterdir()), "a job submitted", 60)
    finally:
        proc.kill()  # a crash: no cleanup at all
        proc.wait()
    left = cluster.queue()
    assert len(left) == 1, "the crashed run left its job queued"
    pipedeck(tmp_path, "run", "--stage", "here")
    cluster.wait_queue_empty(30)
    assert not list(records.iterdir())


def test_pipedeck_show_names_the_job_and_node_of_each_slurm_attempt(
    cluster: Cluster, tmp_path: Path
) -> None:
    write_pipeline(cluster, tmp_path, "echo done")
    events = [json.loads(line) for line in pipedeck(tmp_path, "run", "--format", "json")]
    (final,) = [e for e in events if e["type"] == "stage_status" and e["status"] == "succeeded"]
    (attempt,) = json.loads("".join(pipedeck(tmp_path, "show", "--json")))["attempts"]
    assert (attempt["job_id"], attempt["node"]) == (final["job_id"], cluster.node)
    header, row = pipedeck(tmp_path, "show")[1:3]
    names, cells = header.split(), row.split()
    at, host = names.index("HOST"), cells.index("cluster")
    assert names[at : at + 3] == ["HOST", "JOB", "NODE"]
    assert cells[host : host + 3] == ["cluster", final["job_id"], cluster.node]
