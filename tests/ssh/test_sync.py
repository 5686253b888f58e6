"""Workspace sync to the remote workdir, outputs coming back, artifacts moving between hosts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.executors.ssh import SshExecutor
from engine.spec import Stage
from engine.sync import workspace_files
from tests.ssh.conftest import Output, Sshd, make_pipeline, stage_env

pytestmark = pytest.mark.ssh


def test_workspace_files_skip_git_state_and_gitignored(tmp_path: Path) -> None:
    for rel in (
        "src/a.py",
        "src/gen/x.o",
        ".git/HEAD",
        ".pipedeck/history.db",
        "build/out",
        "keep.log",
        "sub/.gitignore",
        "sub/secret.key",
        "sub/ok.txt",
        "notes.tmp",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    (tmp_path / ".gitignore").write_text("build/\n*.tmp\n*.o\n")
    (tmp_path / "sub" / ".gitignore").write_text("*.key\n")
    assert sorted(workspace_files(tmp_path)) == [
        ".gitignore",
        "keep.log",
        "src/a.py",
        "sub/.gitignore",
        "sub/ok.txt",
    ]


async def test_second_run_sends_only_the_changed_file(sshd: Sshd, workspace: Path) -> None:
    for name in ("a.txt", "b.txt", "c.txt"):
        (workspace / name).write_text(f"{name} v1\n")
    (workspace / ".gitignore").write_text("ignored.txt\n")
    (workspace / "ignored.txt").write_text("never synced\n")
    stage = Stage(id="s", name="s", host="a", run="cat a.txt b.txt; ls")
    pipeline = make_pipeline(workspace, {"a": sshd.host("a", "127.0.0.2")}, [stage])

    states: list[str] = []
    synced: list[dict[str, object]] = []

    def on_state(
        _host: str, state: str, _why: str | None, sync: dict[str, object] | None = None
    ) -> None:
        states.append(state)
        synced.extend([sync] if sync else [])

    first = SshExecutor(pipeline, "a", on_state_change=on_state)
    out = Output()
    try:
        assert (await first.execute(stage, stage_env(stage), out)).exit_code == 0
    finally:
        await first.close()
    assert states == ["connecting", "connected", "syncing", "connected", "idle"]
    assert sorted(first.workspace.reports[0].sent) == [
        ".gitignore",
        "a.txt",
        "b.txt",
        "c.txt",
        "pipedeck.yaml",
    ]
    assert b"ignored.txt" not in out.stdout
    assert synced == [
        {
            "stage": "s",
            "files": 5,
            "bytes": sum((workspace / r).stat().st_size for r in first.workspace.reports[0].sent),
            "deleted": 0,
            "method": first.workspace.reports[0].method,
            "wire_bytes": first.workspace.reports[0].wire_bytes,
        }
    ]

    (workspace / "b.txt").write_text("b.txt v2, longer\n")
    second = SshExecutor(pipeline, "a")  # a later run: a new executor, a new connection
    out = Output()
    try:
        assert (await second.execute(stage, stage_env(stage), out)).exit_code == 0
    finally:
        await second.close()
    assert [r.sent for r in second.workspace.reports] == [["b.txt"]]
    assert out.stdout.startswith(b"a.txt v1\nb.txt v2, longer\n")


async def test_deleted_files_go_away_remotely(sshd: Sshd, workspace: Path) -> None:
    (workspace / "old.txt").write_text("old\n")
    stage = Stage(id="s", name="s", host="a", run="ls")
    executor = SshExecutor(
        make_pipeline(workspace, {"a": sshd.host("a", "127.0.0.2")}, [stage]), "a"
    )
    try:
        first, second = Output(), Output()
        await executor.execute(stage, stage_env(stage), first)
        (workspace / "old.txt").unlink()
        await executor.execute(stage, stage_env(stage), second)
    finally:
        await executor.close()
    assert b"old.txt" in first.stdout
    assert b"old.txt" not in second.stdout


async def test_outputs_come_back_after_success(sshd: Sshd, workspace: Path) -> None:
    stage = Stage(
        id="build",
        name="build",
        host="a",
        outputs=("dist/*.whl",),
        run="mkdir -p dist && printf 'wheel\\377' > dist/pkg.whl && echo x > dist/no.tar",
    )
    executor = SshExecutor(
        make_pipeline(workspace, {"a": sshd.host("a", "127.0.0.2")}, [stage]), "a"
    )
    try:
        result = await executor.execute(stage, stage_env(stage), Output())
    finally:
        await executor.close()
    assert result.exit_code == 0
    assert (workspace / "dist" / "pkg.whl").read_bytes() == b"wheel\xff"
    assert not (workspace / "dist" / "no.tar").exists()  # not a declared output


async def test_outputs_of_a_failed_stage_stay_remote(sshd: Sshd, workspace: Path) -> None:
    stage = Stage(
        id="build", name="build", host="a", outputs=("out.bin",), run="echo x > out.bin; exit 1"
    )
    executor = SshExecutor(
        make_pipeline(workspace, {"a": sshd.host("a", "127.0.0.2")}, [stage]), "a"
    )
    try:
        result = await executor.execute(stage, stage_env(stage), Output())
    finally:
        await executor.close()
    assert result.exit_code == 1
    assert not (workspace / "out.bin").exists()


async def test_upstream_artifact_from_host_a_is_present_on_host_b(
    sshd: Sshd, workspace: Path
) -> None:
    (workspace / ".gitignore").write_text("dist/\n")  # artifacts travel even when gitignored
    build = Stage(
        id="build",
        name="build",
        host="a",
        outputs=("dist/app.bin",),
        run="mkdir -p dist && echo built-on-$(hostname)-a > dist/app.bin",
    )
    test = Stage(id="test", name="test", host="b", needs=("build",), run="cat dist/app.bin")
    hosts = {"a": sshd.host("a", "127.0.0.2"), "b": sshd.host("b", "127.0.0.3")}
    pipeline = make_pipeline(workspace, hosts, [build, test])
    on_a, on_b = SshExecutor(pipeline, "a"), SshExecutor(pipeline, "b")
    out = Output()
    try:
        assert (await on_a.execute(build, stage_env(build), Output())).exit_code == 0
        result = await on_b.execute(test, stage_env(test), out)
    finally:
        await on_a.close()
        await on_b.close()
    assert result.exit_code == 0, out.stderr
    assert out.stdout.startswith(b"built-on-") and out.stdout.endswith(b"-a\n")
    assert on_a.host.workdir != on_b.host.workdir
    assert os.path.exists(Path(on_b.host.workdir) / "dist" / "app.bin")


async def test_modes_odd_names_and_nested_dirs_arrive(sshd: Sshd, workspace: Path) -> None:
    tool = workspace / "deep" / "er" / "my tööl.sh"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\necho tool ran\n")
    tool.chmod(0o755)
    stage = Stage(id="s", name="s", host="a", run="'./deep/er/my tööl.sh'")
    executor = SshExecutor(
        make_pipeline(workspace, {"a": sshd.host("a", "127.0.0.2")}, [stage]), "a"
    )
    out = Output()
    try:
        result = await executor.execute(stage, stage_env(stage), out)
    finally:
        await executor.close()
    assert (result.exit_code, out.stdout) == (0, b"tool ran\n"), out.stderr


async def test_directory_outputs_come_back_in_place_on_every_run(
    sshd: Sshd, workspace: Path
) -> None:
    stage = Stage(
        id="s",
        name="s",
        host="a",
        outputs=("reports",),
        run="mkdir -p reports/html && echo $PIPEDECK_ATTEMPT > reports/html/index.txt",
    )
    executor = SshExecutor(
        make_pipeline(workspace, {"a": sshd.host("a", "127.0.0.2")}, [stage]), "a"
    )
    try:
        for attempt in (1, 2):
            result = await executor.execute(stage, stage_env(stage, attempt=attempt), Output())
            assert result.exit_code == 0
    finally:
        await executor.close()
    assert (workspace / "reports" / "html" / "index.txt").read_text() == "2\n"
    assert not (workspace / "reports" / "reports").exists()
