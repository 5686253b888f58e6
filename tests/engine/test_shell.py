"""`pipedeck shell STAGE`, scripted through stdin: here and on a real sshd."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import pipedeck_bin
from tests.slurm.conftest import Cluster, cluster  # noqa: F401 (the cluster fixture)
from tests.ssh.conftest import USER, Sshd, sshd  # noqa: F401 (the sshd fixture)

PROBE = "pwd; echo $GREETING $LEVEL $MATRIX_PY $TOKEN $PIPEDECK_STAGE $PIPEDECK_ATTEMPT; exit 7\n"


def shell(pipeline: Path, stage: str, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [pipedeck_bin(), "shell", stage, "-f", str(pipeline)],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def write(tmp_path: Path, stages: str, hosts: str = "") -> Path:
    path = tmp_path / "pipedeck.yaml"
    path.write_text(
        "version: 1\nenv: {GREETING: hello}\nsecrets: [TOKEN]\n" + hosts + "stages:\n" + stages
    )
    return path


STAGE = (
    "  test:\n    cwd: sub\n    env: {LEVEL: '3'}\n"
    "    matrix: {py: ['3.11', '3.12']}\n    run: 'true'\n"
)


def test_local_shell_has_the_stage_directory_and_environment(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    pipeline = write(tmp_path, STAGE)
    done = shell(pipeline, "test[py=3.12]", PROBE, TOKEN="s3cret", SHELL="/bin/sh")
    assert done.returncode == 7, done.stderr
    assert done.stdout.splitlines() == [
        str(tmp_path / "sub"),
        "hello 3 3.12 s3cret test[py=3.12] 0",
    ]


def test_shell_uses_dollar_shell(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    pipeline = write(tmp_path, STAGE)
    fake = tmp_path / "myshell"
    fake.write_text("#!/bin/sh\necho my shell was started in $(pwd)\n")
    fake.chmod(0o755)
    done = shell(pipeline, "test[py=3.11]", "", SHELL=str(fake))
    assert (done.returncode, done.stdout) == (0, f"my shell was started in {tmp_path / 'sub'}\n")


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ("test", "pipedeck: test has 2 instances; name one: test[py=3.11], test[py=3.12]"),
        ("tset", "pipedeck: no such stage: tset (did you mean 'test'?)"),
    ],
)
def test_shell_names_one_stage_instance(tmp_path: Path, stage: str, message: str) -> None:
    done = shell(write(tmp_path, STAGE), stage, "")
    assert (done.returncode, done.stderr.strip()) == (2, message)


def test_missing_working_directory_is_one_line(tmp_path: Path) -> None:
    done = shell(write(tmp_path, STAGE), "test[py=3.11]", "")
    assert done.returncode == 2
    assert done.stderr == f"pipedeck: working directory not found: {tmp_path / 'sub'}\n"


@pytest.mark.ssh
def test_remote_shell_runs_in_the_synced_remote_workdir(sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    workdir = sshd.root / "shell" / "box"
    hosts = (
        f"hosts:\n  box:\n    address: 127.0.0.2\n    port: {sshd.port}\n    user: {USER}\n"
        f"    identity_file: {sshd.client_key}\n    known_hosts: {sshd.known_hosts}\n"
        f"    workdir: {workdir}\n"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.txt").write_text("synced\n")
    pipeline = write(tmp_path, STAGE.replace("    run:", "    host: box\n    run:"), hosts)
    done = shell(pipeline, "test[py=3.12]", "cat data.txt; " + PROBE, TOKEN="s3cret")
    assert done.returncode == 7, done.stderr
    assert done.stdout.splitlines() == [
        "synced",
        str(workdir / "sub"),
        "hello 3 3.12 s3cret test[py=3.12] 0",
    ]
    leftovers = list((workdir / ".pipedeck-pids").glob("shell-*"))
    assert leftovers == []  # the file holding the environment removed itself


@pytest.mark.slurm
def test_slurm_shell_runs_on_the_node_in_a_new_allocation(
    cluster: Cluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    hosts = (
        "hosts:\n  hpc:\n    executor: slurm\n"
        f"    slurm: {{partition: main, env: {{SLURM_CONF: '{cluster.conf}'}}}}\n"
    )
    (tmp_path / "sub").mkdir()
    pipeline = write(tmp_path, STAGE.replace("    run:", "    host: hpc\n    run:"), hosts)
    done = shell(pipeline, "test[py=3.12]", 'echo "job $SLURM_JOB_ID"; ' + PROBE, TOKEN="s3")
    assert done.returncode == 7, done.stderr
    lines = done.stdout.replace("\r", "").splitlines()
    assert lines[0].startswith("job ") and lines[0] != "job "  # inside a Slurm allocation
    assert lines[1:] == [str(tmp_path / "sub"), "hello 3 3.12 s3 test[py=3.12] 0"]
