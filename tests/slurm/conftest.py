"""A real single-node Slurm cluster for the tests, and pipelines with a Slurm host.

The session-scoped `cluster` fixture writes a slurm.conf (and cgroup.conf) into a temp dir,
starts munged with a key of its own, slurmctld and slurmd (as root, on free ports, state in the
temp dir), waits until its node is idle, and stops them all at the end. The node is named
`pd<random>`: clusters of concurrent test sessions share /sys/fs/cgroup, where Slurm names job
cgroups after the node. It tries `proctrack/cgroup` first (Slurm then kills double-forked
processes of a job too) and falls back to `proctrack/linuxproc` when slurmd cannot use cgroups
on this kernel; `Cluster.proctrack` says which. `linuxproc_cluster` is a second cluster that
uses linuxproc in any case. Accounting is off (`sacct` fails, the executor copes); `cluster`
gathers job accounting (`sstat` has figures), `linuxproc_cluster` does not. Without Slurm
the tests fail when `CI` is set, else skip saying why.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.spec import Host, Resources, SlurmOptions, Stage
from tests.ssh.conftest import sshd  # noqa: F401  (the loopback sshd: a login node here)
from tests.waiting import until_blocking

DAEMONS = ("munged", "slurmctld", "slurmd")
CPUS = 8


@dataclass(frozen=True)
class Cluster:
    """A running single-node cluster: its config file and helpers to ask it things."""

    root: Path
    conf: Path
    proctrack: str
    node: str  # unique per cluster: Slurm names the job cgroups after it (`slurm_<node>`)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True) -> str:
        """Run a Slurm command against this cluster; its stdout."""
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=30)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout

    def queue(self) -> list[str]:
        """Ids of the jobs pending, running or completing."""
        return self.run("squeue", "--noheader", "-o", "%i").split()

    def wait_queue_empty(self, limit: float = 60) -> None:
        until_blocking(lambda: not self.queue(), f"the queue to empty: {self.queue()}", limit)

    def node_state(self) -> str:
        return self.run("sinfo", "--noheader", "-n", self.node, "-o", "%T").strip()

    def host(self, name: str = "cluster", **overrides: object) -> Host:
        """A `hosts:` entry for this cluster (Slurm commands here, SLURM_CONF in slurm.env)."""
        fields: dict[str, object] = {
            "name": name,
            "address": "",
            "executor": "slurm",
            "slots": 20,
            "slurm": SlurmOptions(partition="main", env={"SLURM_CONF": str(self.conf)}),
        }
        fields.update(overrides)
        return Host(**fields)  # type: ignore[arg-type]


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _write_config(root: Path, proctrack: str, node: str, gather: str) -> Path:
    ctld_port, slurmd_port = _free_ports(2)
    me = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=pipedeck-test",
                f"SlurmctldHost={me}(127.0.0.1)",
                f"SlurmctldPort={ctld_port}",
                f"SlurmdPort={slurmd_port}",
                "AuthType=auth/munge",
                f"AuthInfo=socket={root}/munge.sock",
                "CredType=cred/munge",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"StateSaveLocation={root}/state",
                f"SlurmdSpoolDir={root}/spool",
                f"SlurmctldPidFile={root}/slurmctld.pid",
                f"SlurmdPidFile={root}/slurmd.pid",
                f"SlurmctldLogFile={root}/slurmctld.log",
                f"SlurmdLogFile={root}/slurmd.log",
                "MailProg=/bin/true",
                f"ProctrackType={proctrack}",
                "TaskPlugin=task/none",
                "SchedulerType=sched/backfill",
                "SchedulerParameters=sched_interval=1",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                "DefMemPerCPU=100",
                "SlurmdParameters=config_overrides",  # 8 CPUs declared, whatever the machine has
                "ReturnToService=1",  # a node set DOWN by hand stays down until resumed
                "MpiDefault=none",
                f"JobAcctGatherType={gather}",
                "AccountingStorageType=accounting_storage/none",
                "JobCompType=jobcomp/none",
                "KillWait=5",
                "MinJobAge=300",
                f"NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 CPUs={CPUS}"
                " RealMemory=4000 State=UNKNOWN",
                "PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            ]
        )
        + "\n"
    )
    (root / "cgroup.conf").write_text(
        "CgroupPlugin=cgroup/v1\nCgroupAutomount=no\nCgroupMountpoint=/sys/fs/cgroup\n"
        if Path("/sys/fs/cgroup/freezer").is_dir()
        else "CgroupPlugin=autodetect\n"
    )
    return conf


def _daemon(stack: ExitStack, argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    out = log.open("wb")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    stack.callback(_stop, proc, out)
    return proc


def _stop(proc: subprocess.Popen, out: object) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out.close()  # type: ignore[attr-defined]


def _start(stack: ExitStack, root: Path, proctrack: str, gather: str) -> Cluster:
    """munged, slurmctld and slurmd on a fresh config; the cluster once its node is idle."""
    for sub in ("state", "spool"):
        shutil.rmtree(root / sub, ignore_errors=True)
        (root / sub).mkdir()
    # clusters of concurrent test sessions on this machine share /sys/fs/cgroup, where the
    # job cgroups are slurm_<node>/uid_<uid>/job_<id>: a node name of its own keeps them apart
    node = f"pd{os.urandom(3).hex()}"
    conf = _write_config(root, proctrack, node, gather)
    cluster = Cluster(root, conf, proctrack, node)
    env = cluster.env
    _daemon(
        stack,
        [
            "munged",
            "-F",
            "-f",
            f"--socket={root}/munge.sock",
            f"--key-file={root}/munge.key",
            f"--pid-file={root}/munged.pid",
            f"--seed-file={root}/munged.seed",
        ],
        root / "munged.out",
        env,
    )
    until_blocking(lambda: (root / "munge.sock").exists(), "munged's socket", 10)
    ctld = _daemon(stack, ["slurmctld", "-D", "-i"], root / "slurmctld.out", env)
    slurmd = _daemon(stack, ["slurmd", "-D", "-N", node], root / "slurmd.out", env)

    def idle() -> bool:
        for proc, name in ((ctld, "slurmctld"), (slurmd, "slurmd")):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {(root / f'{name}.out').read_text()[-2000:]}")
        done = subprocess.run(
            ["sinfo", "--noheader", "-n", node, "-o", "%T"], env=env, capture_output=True
        )
        return done.stdout.strip() == b"idle"

    until_blocking(idle, f"node {node} to be idle", 30)
    return cluster


@contextmanager
def running_cluster(
    root: Path,
    proctracks: tuple[str, ...] = ("proctrack/cgroup", "proctrack/linuxproc"),
    gather: str = "jobacct_gather/linux",
) -> Iterator[Cluster]:
    """A single-node cluster under `root` until the block ends (tests and bench/), with the
    first of `proctracks` that works here; `gather` is its JobAcctGatherType (what `sstat`
    reports on)."""
    root.chmod(0o755)  # munged wants its socket's directories searchable
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    for proctrack in proctracks:
        stack = ExitStack()
        try:
            cluster = _start(stack, root, proctrack, gather)
        except (RuntimeError, AssertionError):
            stack.close()
            if proctrack == proctracks[-1]:
                raise
            continue
        with stack:
            try:
                yield cluster
            finally:
                queued = cluster.queue()
                if queued:
                    cluster.run("scancel", *queued, check=False)
                    cluster.wait_queue_empty()
        return


def slurm_missing() -> str | None:
    """Why a cluster cannot be started here, or None."""
    missing = [name for name in (*DAEMONS, "sbatch") if shutil.which(name) is None]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} missing; apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the Slurm fixture starts slurmd as root"
    return None


def _need_slurm() -> None:
    reason = slurm_missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real single-node Slurm cluster for the whole session."""
    _need_slurm()
    with running_cluster(tmp_path_factory.mktemp("slurm")) as running:
        yield running


@pytest.fixture(scope="module")
def linuxproc_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A second cluster that tracks a job's processes by parentage only (proctrack/linuxproc)
    and gathers no job accounting (`sstat` has no figures)."""
    _need_slurm()
    root = tmp_path_factory.mktemp("slurm-linuxproc")
    with running_cluster(root, ("proctrack/linuxproc",), "jobacct_gather/none") as running:
        yield running


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "pipedeck.yaml").write_text("version: 1\n")
    return ws


def slurm_stage(name: str, run: str, **fields: object) -> Stage:
    """A stage on the host `cluster`."""
    fields.setdefault("resources", Resources(cpus=1))
    return Stage(id=name, name=name, run=run, host="cluster", kill_grace=2.0, **fields)  # type: ignore[arg-type]
