"""What the workspace sync sends, removes and brings back: fileset rules, `sync.exclude`, no SFTP."""

from __future__ import annotations

import os
import shlex
import textwrap
from pathlib import Path

import asyncssh
import pytest

from engine import fileset, sync
from engine.executors.ssh import SshExecutor
from engine.loader import ConfigError, load
from engine.spec import Host, Pipeline, Stage
from tests.ssh.conftest import USER, Output, Sshd, make_pipeline, stage_env

pytestmark = pytest.mark.ssh

REMOTE_TREE = (
    "a.py",
    "src/b.py",
    "src/x/c.py",
    "src/x/d.txt",
    "report/index.html",
    "report/assets/app.js",
    ".git/hooks/h.py",
)
OUTPUTS = ("**/*.py", "!src/x/**", "report")


def own_host(sshd: Sshd, workspace: Path) -> Host:
    """Host `a` with a workdir of this test's own."""
    return sshd.host("a", "127.0.0.2", workdir=str(workspace.parent / "remote"))


def remote_files(root: Path) -> set[str]:
    return {
        Path(d, n).relative_to(root).as_posix()
        for d, _dirs, names in os.walk(root)
        for n in names
        if n != sync.MANIFEST
    }


async def run_stage(pipeline: Pipeline, stage: Stage, host: str = "a") -> tuple[int | None, Output]:
    executor = SshExecutor(pipeline, host)
    out = Output()
    try:
        result = await executor.execute(stage, stage_env(stage), out)
    finally:
        await executor.close()
    return result.exit_code, out


async def test_the_server_offers_no_sftp_and_sync_and_outputs_work_without_it(
    sshd: Sshd, workspace: Path, tmp_path: Path
) -> None:
    host = own_host(sshd, workspace)
    async with asyncssh.connect(
        "127.0.0.2",
        port=sshd.port,
        username=USER,
        client_keys=[str(sshd.client_key)],
        known_hosts=str(sshd.known_hosts),
    ) as conn:
        with pytest.raises(asyncssh.Error):
            await conn.start_sftp_client()

    (workspace / "in.txt").write_text("input\n")
    make = " && ".join(
        f"mkdir -p {shlex.quote(os.path.dirname(rel) or '.')} && echo {rel} > {rel}"
        for rel in REMOTE_TREE
    )
    stage = Stage(id="s", name="s", host="a", outputs=OUTPUTS, run=f"cat in.txt && {make}")
    code, out = await run_stage(make_pipeline(workspace, {"a": host}, [stage]), stage)
    assert (code, out.stdout) == (0, b"input\n"), out.stderr

    # what came back is what engine.fileset selects from the same tree here
    here = tmp_path / "same tree"
    for rel in REMOTE_TREE:
        (here / rel).parent.mkdir(parents=True, exist_ok=True)
        (here / rel).write_text(rel)
    expected = sorted(fileset.select(here, OUTPUTS))
    assert expected == ["a.py", "report/assets/app.js", "report/index.html", "src/b.py"]
    back = sorted(
        fileset.regular_files(workspace, skip=lambda rel, _d: rel in ("in.txt", "pipedeck.yaml"))
    )
    assert [rel for rel, _ in back] == expected
    assert (workspace / "report/assets/app.js").read_text() == "report/assets/app.js\n"


def pipeline_with_sync(sshd: Sshd, workspace: Path, sync_block: str) -> Path:
    host = own_host(sshd, workspace)
    (workspace / "pipedeck.yaml").write_text(
        textwrap.dedent(f"""\
            version: 1
            name: rules
            hosts:
              a:
                address: 127.0.0.2
                port: {sshd.port}
                user: {USER}
                identity_file: {sshd.client_key}
                known_hosts: {sshd.known_hosts}
                workdir: {host.workdir}
            {textwrap.indent(sync_block, "    ")}
            stages:
              s:
                host: a
                run: find . -type f | sort
            """)
    )
    return workspace / "pipedeck.yaml"


async def test_sync_exclude_keeps_paths_off_the_host(sshd: Sshd, workspace: Path) -> None:
    for rel in ("src/a.py", "venv/lib/big.so", "app/node_modules/x.js", "debug.log", "b.txt"):
        (workspace / rel).parent.mkdir(parents=True, exist_ok=True)
        (workspace / rel).write_text(rel)
    block = 'sync: {exclude: [venv, "**/node_modules", "*.log"]}'
    pipeline = load(pipeline_with_sync(sshd, workspace, block))
    assert pipeline.hosts["a"].sync_exclude == ("venv", "**/node_modules", "*.log")
    code, out = await run_stage(pipeline, pipeline.stages["s"])
    assert code == 0, out.stderr
    assert remote_files(Path(pipeline.hosts["a"].workdir or "")) == {
        "b.txt",
        "pipedeck.yaml",
        "src/a.py",
    }


def test_a_misspelt_sync_key_is_an_error_with_its_place(sshd: Sshd, workspace: Path) -> None:
    path = pipeline_with_sync(sshd, workspace, "sync: {exclud: [venv]}")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == (
        f"{path}:11:12: unknown key 'exclud' in hosts.a.sync; did you mean 'exclude'?"
    )


@pytest.mark.parametrize("method", ["rsync", "tar"])
async def test_files_deleted_or_newly_ignored_here_leave_the_remote_copy_outputs_stay(
    sshd: Sshd, workspace: Path, method: str
) -> None:
    for rel in ("keep.txt", "old.txt", "trace.log"):
        (workspace / rel).write_text(rel)
    (workspace / ".gitignore").write_text("gen/\n")
    host = own_host(sshd, workspace)
    remote = Path(host.workdir or "")
    stage = Stage(
        id="s", name="s", host="a", outputs=("gen/**",), run="mkdir -p gen && echo made > gen/o"
    )
    pipeline = make_pipeline(workspace, {"a": host}, [stage])
    assert (await run_stage(pipeline, stage))[0] == 0
    assert {"keep.txt", "old.txt", "trace.log", "gen/o"} <= remote_files(remote)
    assert (workspace / "gen/o").read_text() == "made\n"  # fetched back, ignored by git here

    (workspace / "old.txt").unlink()
    (workspace / ".gitignore").write_text("gen/\n*.log\n")
    (remote / "made-there.txt").write_text("the remote's own\n")
    executor = SshExecutor(pipeline, "a")
    executor.workspace.remote_rsync = "rsync" if method == "rsync" else "no-rsync-here"
    try:
        assert (await executor.execute(stage, stage_env(stage), Output())).exit_code == 0
    finally:
        await executor.close()
    report = executor.workspace.reports[0]
    assert (report.method, sorted(report.deleted)) == (method, ["old.txt", "trace.log"])
    assert remote_files(remote) == {
        ".gitignore",
        "gen/o",  # a stage's output that still exists here stays, ignored or not
        "keep.txt",
        "made-there.txt",  # never in the manifest: never touched
        "pipedeck.yaml",
    }


async def test_a_big_first_sync_names_its_biggest_folders_once(
    sshd: Sshd, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync, "BIG_FIRST_SYNC", 60_000)
    for rel, size in (("venv/lib/a.so", 50_000), ("data/x.bin", 20_000), ("small.txt", 10)):
        (workspace / rel).parent.mkdir(parents=True, exist_ok=True)
        (workspace / rel).write_bytes(b"x" * size)
    stage = Stage(id="s", name="s", host="a", run="true")
    pipeline = make_pipeline(workspace, {"a": own_host(sshd, workspace)}, [stage])
    code, first = await run_stage(pipeline, stage)
    assert code == 0
    assert first.stderr.decode() == (
        "pipedeck: host a: first sync sends 70.0 kB in 4 files; biggest folders: "
        "venv/ (50.0 kB), data/ (20.0 kB); leave out what the host does not need with "
        "`.gitignore` or the host's `sync: {exclude: [...]}`\n"
    )
    (workspace / "data/y.bin").write_bytes(b"y" * 70_000)
    code, second = await run_stage(pipeline, stage)
    assert (code, second.stderr) == (0, b"")  # not a first sync any more
