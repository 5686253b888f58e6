"""Connection failures as one-line reasons; host keys (strict, accept-new); ~/.ssh/config hosts."""

from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

import pytest

from engine.executors.ssh import SshExecutor
from engine.spec import Host, Stage
from tests.ssh.conftest import USER, Output, Sshd, make_pipeline, stage_env

pytestmark = pytest.mark.ssh


async def run_one(workspace: Path, host: Host, run: str = "echo ok") -> tuple[SshExecutor, object]:
    stage = Stage(id="s", name="s", host=host.name, run=run)
    executor = SshExecutor(make_pipeline(workspace, {host.name: host}, [stage]), host.name)
    try:
        result = await executor.execute(stage, stage_env(stage), Output())
    finally:
        await executor.close()
    return executor, result


async def test_empty_known_hosts_is_refused_with_how_to_trust(
    sshd: Sshd, workspace: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    states: list[str] = []
    stage = Stage(id="s", name="s", host="box", run="echo ok")
    host = sshd.host("box", "127.0.0.2", known_hosts=str(empty))
    executor = SshExecutor(
        make_pipeline(workspace, {"box": host}, [stage]),
        "box",
        on_state_change=lambda _h, s, *_: states.append(s),
    )
    result = await executor.execute(stage, stage_env(stage), Output())
    await executor.close()
    assert result.exit_code is None and not result.lost
    reason = result.reason or ""
    assert "\n" not in reason
    assert "host box" in reason and "unknown host key" in reason and str(empty) in reason
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.2 >> {empty}" in reason
    assert "accept-new" in reason
    assert states[-1] == "failed"
    assert empty.read_text() == ""


async def test_changed_host_key_is_refused(sshd: Sshd, workspace: Path, tmp_path: Path) -> None:
    other = " ".join(Path(f"{sshd.stranger_key}.pub").read_text().split()[:2])
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.2]:{sshd.port} {other}\n")
    _, result = await run_one(
        workspace, sshd.host("box", "127.0.0.2", known_hosts=str(wrong), slots=1)
    )
    assert result.exit_code is None and "CHANGED" in result.reason and str(wrong) in result.reason


async def test_accept_new_trusts_a_first_seen_key_and_records_it(
    sshd: Sshd, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # accept-new writes ~/.ssh/known_hosts
    host = sshd.host("box", "127.0.0.3", known_hosts="accept-new")
    _, result = await run_one(workspace, host)
    assert result.exit_code == 0
    recorded = (tmp_path / ".ssh" / "known_hosts").read_text()
    host_key = Path(sshd.known_hosts).read_text().split("\n")[0].split(" ", 1)[1]
    assert recorded == f"[127.0.0.3]:{sshd.port} {host_key}\n"
    _, again = await run_one(workspace, host)
    assert again.exit_code == 0
    assert (tmp_path / ".ssh" / "known_hosts").read_text() == recorded  # not added twice


async def test_accept_new_still_refuses_a_changed_key(
    sshd: Sshd, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    other = " ".join(Path(f"{sshd.stranger_key}.pub").read_text().split()[:2])
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text(f"[127.0.0.3]:{sshd.port} {other}\n")
    _, result = await run_one(workspace, sshd.host("box", "127.0.0.3", known_hosts="accept-new"))
    assert result.exit_code is None and "CHANGED" in result.reason


async def test_authentication_refused(sshd: Sshd, workspace: Path) -> None:
    host = sshd.host("box", "127.0.0.2", identity_file=str(sshd.stranger_key))
    _, result = await run_one(workspace, host)
    assert result.exit_code is None and not result.lost
    assert result.reason.startswith("host box: authentication refused")
    assert str(sshd.stranger_key) in result.reason


async def test_closed_port_is_unreachable(sshd: Sshd, workspace: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.2", 0))
        port = sock.getsockname()[1]
    _, result = await run_one(workspace, sshd.host("box", "127.0.0.2", port=port))
    assert result.exit_code is None and not result.lost
    assert result.reason == (
        f"host box: 127.0.0.2:{port} unreachable: connection refused (is sshd running?)"
    )


async def test_unresolvable_name(sshd: Sshd, workspace: Path) -> None:
    _, result = await run_one(workspace, sshd.host("box", "no-such-host.invalid"))
    assert result.exit_code is None
    assert result.reason.startswith("host box: cannot resolve host name 'no-such-host.invalid'")


async def test_host_from_ssh_config(
    sshd: Sshd, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    (ssh / "config").write_text(
        f"Host cfgbox\n  HostName 127.0.0.3\n  Port {sshd.port}\n  User {USER}\n"
        f"  IdentityFile {sshd.client_key}\n"
    )
    (ssh / "known_hosts").write_text(sshd.known_hosts.read_text())
    stage = Stage(id="s", name="s", host="cfgbox", run="echo via-config")
    executor = SshExecutor(make_pipeline(workspace, {}, [stage]), "cfgbox")  # not in hosts:
    out = Output()
    try:
        result = await executor.execute(stage, stage_env(stage), out)
    finally:
        await executor.close()
    shutil.rmtree(Path(pwd.getpwuid(os.getuid()).pw_dir) / executor.host.workdir, True)
    assert result.exit_code == 0, result.reason
    assert out.stdout == b"via-config\n"


async def test_unknown_key_message_names_the_real_address_of_a_config_host(
    sshd: Sshd, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    (ssh / "config").write_text(
        f"Host cfgbox\n  HostName 127.0.0.3\n  Port {sshd.port}\n  User {USER}\n"
        f"  IdentityFile {sshd.client_key}\n"
    )
    stage = Stage(id="s", name="s", host="cfgbox", run="true")
    executor = SshExecutor(make_pipeline(workspace, {}, [stage]), "cfgbox")
    result = await executor.execute(stage, stage_env(stage), Output())
    await executor.close()
    known = ssh / "known_hosts"
    assert result.reason == (
        f"host cfgbox: unknown host key for [127.0.0.3]:{sshd.port} (not in {known}); trust it"
        f" with `ssh-keyscan -p {sshd.port} 127.0.0.3 >> {known}` after checking its"
        " fingerprint, or set `known_hosts: accept-new` for host cfgbox"
    )


async def test_unusable_workdir_fails_the_stage_with_one_line(sshd: Sshd, workspace: Path) -> None:
    host = sshd.host("box", "127.0.0.2", workdir=str(sshd.known_hosts / "sub"))  # under a file
    _, result = await run_one(workspace, host)
    assert result.exit_code is None and not result.lost
    assert result.reason.startswith("host box: workspace sync failed: ")
    assert "\n" not in result.reason
