"""A real OpenSSH server on two loopback addresses, and pipelines whose hosts point at it.

The session-scoped `sshd` fixture generates a host key, a client key, authorized_keys and a
known_hosts file, writes an sshd_config listening on 127.0.0.2 and 127.0.0.3 (same high port),
and runs `/usr/sbin/sshd -D -e`. It offers no SFTP subsystem: pipedeck does without one. Without sshd the tests fail when `CI` is set, else skip.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.spec import Host, Pipeline, Stage

SSHD = Path("/usr/sbin/sshd")
ADDRESSES = ("127.0.0.2", "127.0.0.3")
USER = pwd.getpwuid(os.getuid()).pw_name  # sshd as root lets root in by key; else only this user


@dataclass(frozen=True)
class Sshd:
    """A running sshd and the client-side files that reach it."""

    port: int
    pid: int
    root: Path
    client_key: Path
    stranger_key: Path  # a key the server does not authorize
    known_hosts: Path  # holds the host key for both addresses
    log: Path

    def host(self, name: str, address: str, **overrides: object) -> Host:
        """A `hosts:` entry for this server, with a workdir of its own under `root`."""
        fields: dict[str, object] = {
            "name": name,
            "address": address,
            "port": self.port,
            "user": USER,
            "identity_file": str(self.client_key),
            "known_hosts": str(self.known_hosts),
            "workdir": str(self.root / "remote" / name),
            "slots": 4,
        }
        fields.update(overrides)
        return Host(**fields)  # type: ignore[arg-type]

    def connection_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        return [pid for pid in _pids() if _parent(pid) == self.pid]

    def connection_of(self, pid: int) -> int:
        """The per-connection sshd process that `pid` (a remote stage's process) runs under."""
        while (parent := _parent(pid)) != self.pid:
            if parent <= 1:
                raise LookupError(f"process {pid} does not run under sshd {self.pid}")
            pid = parent
        return pid


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _free_port() -> int:
    for _ in range(50):
        port = 20000 + int.from_bytes(os.urandom(2), "big") % 40000
        try:
            for address in ADDRESSES:
                with socket.socket() as sock:
                    sock.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    for address in ADDRESSES:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {log.read_text()}")
            try:
                with socket.create_connection((address, port), timeout=1) as sock:
                    if sock.recv(64).startswith(b"SSH-"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd does not answer on {address}:{port}: {log.read_text()}")
            time.sleep(0.05)


@contextmanager
def running_sshd(root: Path) -> Iterator[Sshd]:
    """Generate keys and config under `root`, run sshd until the block ends (tests and bench/)."""
    host_key, client_key, stranger = root / "host_key", root / "client_key", root / "stranger"
    for key in (host_key, client_key, stranger):
        _keygen(key)
    (root / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    port = _free_port()
    host_pub = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
    known_hosts = root / "known_hosts"
    known_hosts.write_text("".join(f"[{a}]:{port} {host_pub}\n" for a in ADDRESSES))
    config = root / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                *(f"ListenAddress {a}" for a in ADDRESSES),
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {root / 'authorized_keys'}",
                f"PidFile {root / 'sshd.pid'}",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PrintMotd no",
                "MaxStartups 100",
                "LogLevel INFO",
            ]
        )
        + "\n"
    )
    if os.geteuid() == 0:  # the privilege separation directory sshd insists on
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = root / "sshd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_listening(port, proc, log)
        yield Sshd(port, proc.pid, root, client_key, stranger, known_hosts, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """Start a real OpenSSH server for the whole session."""
    if not SSHD.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{SSHD} is missing (CI must install openssh-server)")
        pytest.skip(f"{SSHD} is missing")
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A fresh local workspace directory (the pipeline file's directory)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "pipedeck.yaml").write_text("version: 1\n")
    return ws


def make_pipeline(
    workspace: Path,
    hosts: dict[str, Host],
    stages: list[Stage],
    secrets: dict[str, str] | None = None,
) -> Pipeline:
    """A Pipeline built directly (no loader): stages in the order given."""
    return Pipeline(
        path=workspace / "pipedeck.yaml",
        name="sshtest",
        stages={s.id: s for s in stages},
        groups={s.name: (s.id,) for s in stages},
        secrets=secrets or {},
        hosts=hosts,
    )


class Output:
    """A sink collecting a stage's output bytes per stream."""

    def __init__(self) -> None:
        self.data: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}

    def __call__(self, stream: str, chunk: bytes) -> None:
        self.data[stream] += chunk

    @property
    def stdout(self) -> bytes:
        return bytes(self.data["stdout"])

    @property
    def stderr(self) -> bytes:
        return bytes(self.data["stderr"])


def stage_env(stage: Stage, run_id: str = "run1", attempt: int = 1) -> dict[str, str]:
    """What Run passes to a remote stage: stage env plus the PIPEDECK_* ids."""
    return {
        **stage.env,
        "PIPEDECK_RUN_ID": run_id,
        "PIPEDECK_STAGE": stage.id,
        "PIPEDECK_ATTEMPT": str(attempt),
    }
