"""Workspace sync by rsync over the pooled SSH connection, and the tar fallback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine import rsh_bridge
from engine.executors.base import ExecResult
from engine.executors.ssh import SshExecutor
from engine.spec import Stage
from engine.sync import MANIFEST, SyncReport
from tests.ssh.conftest import Output, Sshd, make_pipeline, stage_env
from tests.waiting import until

pytestmark = pytest.mark.ssh

STAGE = Stage(id="s", name="s", host="a", run="true")


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """This test's own remote workdir (the sshd runs on this machine)."""
    return tmp_path / "remote dir"


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


async def sync(
    sshd: Sshd,
    workspace: Path,
    remote: Path,
    stage: Stage = STAGE,
    remote_rsync: str = "rsync",
) -> tuple[SyncReport | None, Output]:
    """Run `stage` on a fresh executor (a new run); the push report (None: nothing to send)."""
    pipeline = make_pipeline(
        workspace, {"a": sshd.host("a", "127.0.0.2", workdir=str(remote))}, [stage]
    )
    executor = SshExecutor(pipeline, "a")
    executor.workspace.remote_rsync = remote_rsync
    out = Output()
    try:
        result = await executor.execute(stage, stage_env(stage), out)
    finally:
        await executor.close()
    assert result.exit_code == 0, (result, out.stderr)
    return (executor.workspace.reports or [None])[-1], out


def remote_files(remote: Path) -> list[str]:
    return sorted(
        Path(d, n).relative_to(remote).as_posix()
        for d, _dirs, names in os.walk(remote)
        for n in names
        if n != MANIFEST
    )


async def test_rsync_carries_the_workspace_when_both_ends_have_it(
    sshd: Sshd, workspace: Path, remote: Path
) -> None:
    write(
        workspace,
        {
            "src/app.py": "print('hi')\n",
            ".gitignore": "build/\n*.log\n",
            "build/out.o": "object",
            "debug.log": "noise",
            "sub/.gitignore": "*.key\n",
            "sub/secret.key": "k",
            "sub/ok.txt": "ok",
            ".git/HEAD": "ref: refs/heads/main\n",
            ".pipedeck/history.db": "db",
        },
    )
    report, _ = await sync(sshd, workspace, remote)
    assert report is not None and report.method == "rsync"
    assert report.command.startswith("rsync --server ")
    assert remote_files(remote) == [
        ".gitignore",
        "pipedeck.yaml",
        "src/app.py",
        "sub/.gitignore",
        "sub/ok.txt",
    ]
    assert (remote / "src/app.py").read_text() == "print('hi')\n"


async def test_second_sync_sends_only_the_delta_of_the_changed_file(
    sshd: Sshd, workspace: Path, remote: Path
) -> None:
    big = bytearray(await asyncio.to_thread(os.urandom, 4 << 20))  # off the event loop
    await asyncio.to_thread(write, workspace, {"big.bin": bytes(big), "a.txt": "a", "b.txt": "b"})
    first, _ = await sync(sshd, workspace, remote)
    assert first is not None and first.wire_bytes > 4 << 20

    big[1000:1010] = b"0123456789"
    (workspace / "big.bin").write_bytes(bytes(big))
    second, _ = await sync(sshd, workspace, remote)
    assert second is not None and second.method == "rsync"
    assert second.sent == ["big.bin"]
    assert second.wire_bytes < 256 << 10  # block checksums and the changed block, not 4 MiB
    assert (remote / "big.bin").read_bytes() == bytes(big)

    third, _ = await sync(sshd, workspace, remote)
    assert third is None  # nothing changed: no transfer at all


async def test_deletions_propagate_and_files_made_remotely_stay(
    sshd: Sshd, workspace: Path, remote: Path
) -> None:
    write(workspace, {"old.txt": "old", "dir/gone.txt": "gone", "dir/kept.txt": "kept"})
    make = Stage(id="s", name="s", host="a", run="echo made > remote-made.txt")
    await sync(sshd, workspace, remote, make)
    (workspace / "old.txt").unlink()
    (workspace / "dir/gone.txt").unlink()
    report, _ = await sync(sshd, workspace, remote)
    assert report is not None and report.method == "rsync"
    assert report.deleted == ["dir/gone.txt", "old.txt"]
    assert remote_files(remote) == ["dir/kept.txt", "pipedeck.yaml", "remote-made.txt"]


async def test_a_lost_manifest_does_not_resend_what_is_in_place(
    sshd: Sshd, workspace: Path, remote: Path
) -> None:
    await asyncio.to_thread(lambda: write(workspace, {"big.bin": os.urandom(4 << 20)}))
    await sync(sshd, workspace, remote)
    (remote / MANIFEST).unlink()
    report, _ = await sync(sshd, workspace, remote)
    assert report is not None and "big.bin" in report.sent
    assert report.wire_bytes < 256 << 10  # block checksums, not the content


async def test_a_change_within_the_same_second_and_size_arrives(
    sshd: Sshd, workspace: Path, remote: Path
) -> None:
    path = workspace / "f.txt"
    path.write_text("one")
    await sync(sshd, workspace, remote)
    before = path.stat().st_mtime_ns
    path.write_text("two")
    os.utime(path, ns=(before + 1000, before + 1000))  # rsync compares whole seconds
    report, _ = await sync(sshd, workspace, remote)
    assert report is not None and report.sent == ["f.txt"]
    assert (remote / "f.txt").read_text() == "two"


async def test_tar_fallback_when_the_remote_has_no_rsync(
    sshd: Sshd, workspace: Path, remote: Path
) -> None:
    write(workspace, {"a.txt": "a", ".gitignore": "x.tmp\n", "x.tmp": "no"})
    report, _ = await sync(sshd, workspace, remote, remote_rsync="no-such-rsync")
    assert report is not None and report.method == "tar" and report.command == ""
    assert remote_files(remote) == [".gitignore", "a.txt", "pipedeck.yaml"]


async def test_tar_fallback_when_the_remote_rsync_is_too_old(
    sshd: Sshd, workspace: Path, remote: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old-rsync"
    old.write_text('#!/bin/sh\necho "rsync  version 3.0.9  protocol version 30"\n')
    old.chmod(0o755)
    write(workspace, {"a.txt": "a"})
    report, _ = await sync(sshd, workspace, remote, remote_rsync=str(old))
    assert report is not None and report.method == "tar"
    assert remote_files(remote) == ["a.txt", "pipedeck.yaml"]


async def test_tar_fallback_when_rsync_is_missing_here(
    sshd: Sshd, workspace: Path, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    write(workspace, {"a.txt": "a"})
    report, _ = await sync(sshd, workspace, remote)
    assert report is not None and report.method == "tar"
    assert remote_files(remote) == ["a.txt", "pipedeck.yaml"]


async def test_both_methods_share_the_manifest(sshd: Sshd, workspace: Path, remote: Path) -> None:
    write(workspace, {"a.txt": "a", "b.txt": "b", "c.txt": "c"})
    first, _ = await sync(sshd, workspace, remote, remote_rsync="no-such-rsync")
    assert first is not None and first.method == "tar"
    (workspace / "b.txt").write_text("b, changed")
    (workspace / "c.txt").unlink()
    second, _ = await sync(sshd, workspace, remote)
    assert second is not None and second.method == "rsync"
    assert (second.sent, second.deleted) == (["b.txt"], ["c.txt"])
    (workspace / "a.txt").write_text("a, changed")
    third, _ = await sync(sshd, workspace, remote, remote_rsync="no-such-rsync")
    assert third is not None and (third.method, third.sent) == ("tar", ["a.txt"])
    assert remote_files(remote) == ["a.txt", "b.txt", "pipedeck.yaml"]
    assert (remote / "b.txt").read_text() == "b, changed"


@pytest.mark.parametrize(("remote_rsync", "method"), [("rsync", "rsync"), ("no-such-rsync", "tar")])
async def test_modes_links_and_odd_names_arrive_by_either_method(
    sshd: Sshd, workspace: Path, remote: Path, remote_rsync: str, method: str
) -> None:
    write(workspace, {"deep/er/my tööl.sh": "#!/bin/sh\necho tool ran\n", "t": "target\n"})
    (workspace / "deep/er/my tööl.sh").chmod(0o755)
    (workspace / "line\nbreak.txt").write_text("nl")
    (workspace / "link.txt").symlink_to("t")
    (workspace / "linkdir").symlink_to("deep")  # symlinked directories are skipped
    stage = Stage(id="s", name="s", host="a", run="'./deep/er/my tööl.sh'; cat link.txt")
    report, out = await sync(sshd, workspace, remote, stage, remote_rsync)
    assert report is not None and report.method == method
    assert out.stdout == b"tool ran\ntarget\n"
    assert not (remote / "link.txt").is_symlink()
    assert remote_files(remote) == [
        "deep/er/my tööl.sh",
        "line\nbreak.txt",
        "link.txt",
        "pipedeck.yaml",
        "t",
    ]


async def test_upstream_artifacts_go_by_rsync_even_when_gitignored(
    sshd: Sshd, workspace: Path, remote: Path
) -> None:
    write(workspace, {".gitignore": "dist/\n", "dist/app.bin": "built"})
    build = Stage(id="build", name="build", outputs=("dist/*.bin",), run="true")
    test = Stage(id="test", name="test", host="a", needs=("build",), run="cat dist/app.bin")
    pipeline = make_pipeline(
        workspace, {"a": sshd.host("a", "127.0.0.2", workdir=str(remote))}, [build, test]
    )
    executor = SshExecutor(pipeline, "a")
    out = Output()
    try:
        result = await executor.execute(test, stage_env(test), out)
    finally:
        await executor.close()
    assert (result.exit_code, out.stdout) == (0, b"built")
    assert executor.workspace.reports[0].method == "rsync"


def test_bridge_without_the_engine_fails_clearly(tmp_path: Path) -> None:
    rsync = shutil.which("rsync")
    if rsync is None and not os.environ.get("CI"):
        pytest.skip("no local rsync")
    assert rsync is not None, "CI must install rsync"
    bridge = [sys.executable, "-I", rsh_bridge.__file__, str(tmp_path / "nobody-listens")]
    proc = subprocess.run(
        [rsync, f"--rsh={' '.join(bridge)}", str(tmp_path), "host:dest"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "pipedeck rsh bridge: cannot reach the engine" in proc.stderr


def test_bridge_joins_the_remote_command_like_ssh() -> None:
    args = ["-l", "me", "host", "rsync", "--server", "-t", ".", "dest dir"]
    assert rsh_bridge.remote_command(args) == "rsync --server -t . dest dir"
    assert rsh_bridge.remote_command(args[2:]) == "rsync --server -t . dest dir"


def rsync_processes(remote: Path) -> list[int]:
    """Local rsync processes this test process started, their bridges, rsync servers in
    `remote` (never those of other test sessions on the machine)."""
    procs = {}
    for pid in (int(e) for e in os.listdir("/proc") if e.isdigit()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        procs[pid] = (argv, int(stat[stat.rindex(")") + 2 :].split()[1]), cwd)
    ours = {
        pid
        for pid, (argv, parent, _) in procs.items()
        if Path(argv[0].decode()).name == "rsync" and parent == os.getpid()
    }
    return sorted(
        pid
        for pid, (argv, parent, cwd) in procs.items()
        if pid in ours
        or (parent in ours and any(arg.endswith(b"rsh_bridge.py") for arg in argv))
        or (b"--server" in argv and cwd == str(remote))
    )


def processes_under(root: int) -> list[int]:
    """Every descendant of process `root`."""
    children: dict[int, list[int]] = {}
    for pid in (int(e) for e in os.listdir("/proc") if e.isdigit()):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(pid)
    found, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


async def start_big_sync(
    sshd: Sshd, workspace: Path, remote: Path
) -> tuple[SshExecutor, asyncio.Task[ExecResult]]:
    """An executor syncing a 48 MiB file, returned once rsync runs."""
    await asyncio.to_thread(lambda: write(workspace, {"big.bin": os.urandom(48 << 20)}))
    pipeline = make_pipeline(
        workspace, {"a": sshd.host("a", "127.0.0.2", workdir=str(remote))}, [STAGE]
    )
    executor = SshExecutor(pipeline, "a")
    task = asyncio.create_task(executor.execute(STAGE, stage_env(STAGE), Output()))
    async with asyncio.timeout(60):
        while not rsync_processes(remote):
            assert not task.done(), task.result()
            await asyncio.sleep(0.01)
    return executor, task


def same_bytes(one: Path, other: Path) -> bool:
    return one.read_bytes() == other.read_bytes()


async def finish_sync(executor: SshExecutor, workspace: Path, remote: Path) -> None:
    """Sync again on the same executor; the file arrives whole, by rsync."""
    try:
        result = await executor.execute(STAGE, stage_env(STAGE), Output())
    finally:
        await executor.close()
    assert result.exit_code == 0, result
    assert executor.workspace.reports[-1].method == "rsync"
    assert await asyncio.to_thread(same_bytes, remote / "big.bin", workspace / "big.bin")


async def test_cancel_mid_transfer_leaves_nothing_and_the_next_sync_completes(
    sshd: Sshd, workspace: Path, remote: Path
) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []  # what asyncio would print as a traceback
    loop.set_exception_handler(lambda _, context: reported.append(context))
    executor, task = await start_big_sync(sshd, workspace, remote)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: not rsync_processes(remote), "rsync to be gone", 5)
    await finish_sync(executor, workspace, remote)
    loop.set_exception_handler(None)
    assert reported == []


async def test_a_connection_dropped_mid_transfer_is_lost(
    sshd: Sshd, workspace: Path, remote: Path
) -> None:
    executor, task = await start_big_sync(sshd, workspace, remote)
    for pid in processes_under(sshd.pid):  # not just the monitor: the child with the socket too
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    result = await asyncio.wait_for(task, 60)
    assert result.lost and result.reason.startswith("connection to a lost: "), result
    await finish_sync(executor, workspace, remote)
