"""`pipedeck run` on a pipeline file with two SSH hosts: loader, Run, executors end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, pipedeck_bin
from tests.ssh.conftest import USER, Sshd

pytestmark = pytest.mark.ssh


def host_block(sshd: Sshd, name: str, address: str) -> str:
    return (
        f"  {name}:\n    address: {address}\n    port: {sshd.port}\n    user: {USER}\n"
        f"    identity_file: {sshd.client_key}\n    known_hosts: {sshd.known_hosts}\n"
        f"    workdir: {sshd.root / 'cli' / name}\n"
    )


def test_artifact_travels_from_host_a_to_host_b_and_home(sshd: Sshd, tmp_path: Path) -> None:
    pipeline = tmp_path / "pipedeck.yaml"
    pipeline.write_text(
        "version: 1\nsecrets: [TOK]\nhosts:\n"
        + host_block(sshd, "a", "127.0.0.2")
        + host_block(sshd, "b", "127.0.0.3")
        + "stages:\n"
        "  build:\n    host: a\n    outputs: [dist/app.txt]\n"
        '    run: mkdir -p dist && echo "artifact $TOK" > dist/app.txt\n'
        "  test:\n    host: b\n    needs: [build]\n    run: cat dist/app.txt\n"
        "  here:\n    needs: [build]\n    run: cat dist/app.txt\n"
    )
    done = subprocess.run(
        [pipedeck_bin(), "run", str(pipeline), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TOK": "sekrit"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    logs = {(e["stage"], e["text"]) for e in events if e["type"] == "log"}
    assert {("test", "artifact ***"), ("here", "artifact ***")} <= logs
    hosts = {e["stage"]: e["host"] for e in events if e["type"] == "stage_status"}
    assert hosts == {"build": "a", "test": "b", "here": "local"}
    assert (tmp_path / "dist" / "app.txt").read_text() == "artifact sekrit\n"
    assert "sekrit" not in done.stdout
    states = [(e["host"], e["state"]) for e in events if e["type"] == "host_status"]
    assert ("a", "connected") in states and ("b", "connected") in states
    assert states.index(("a", "connecting")) < states.index(("a", "connected"))


def test_show_reports_what_each_sync_to_a_host_sent(sshd: Sshd, tmp_path: Path) -> None:
    """Issue 11: `pipedeck show` lists each workspace sync: host, stage, files, size, deleted."""
    (tmp_path / "pipedeck.yaml").write_text(
        "version: 1\nhosts:\n" + host_block(sshd, "syncer", "127.0.0.2") + "stages:\n"
        "  build:\n    host: syncer\n    run: cat src/*.txt\n"
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a" * 2000)
    (tmp_path / "src" / "b.txt").write_text("b")

    def pipedeck(*args: str) -> str:
        done = subprocess.run(
            [pipedeck_bin(), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    pipedeck("run")
    first = pipedeck("show")
    (tmp_path / "src" / "a.txt").write_text("c" * 3000)
    (tmp_path / "src" / "b.txt").unlink()
    pipedeck("run")
    second = pipedeck("show")
    size = len((tmp_path / "pipedeck.yaml").read_bytes()) + 2001
    assert syncs(first) == [
        ["HOST", "STAGE", "FILES", "SIZE", "DELETED", "METHOD"],
        ["syncer", "build", "3", f"{size / 1024:.1f} KiB", "0", "rsync"],
    ]
    assert syncs(second)[1:] == [["syncer", "build", "1", "2.9 KiB", "1", "rsync"]]  # b.txt gone
    assert json.loads(pipedeck("show", "--json"))["syncs"] == [
        {"host": "syncer", "stage": "build", "files": 1, "bytes": 3000, "deleted": 1,
         "method": "rsync"}
    ]  # fmt: skip


def syncs(shown: str) -> list[list[str]]:
    """The rows of `pipedeck show`'s "syncs:" section, split into cells."""
    lines = shown.splitlines()
    return [re.split(r"\s{2,}", line.strip()) for line in lines[lines.index("syncs:") + 1 :]]


def test_a_remote_stage_gets_traceparent_naming_its_span(sshd: Sshd, tmp_path: Path) -> None:
    """Issue 14: stages on SSH hosts join the run's OTLP trace like local ones."""
    from tests.otlp import collecting, spans, traceparent

    (tmp_path / "pipedeck.yaml").write_text(
        "version: 1\nhosts:\n" + host_block(sshd, "tracer", "127.0.0.2") + "stages:\n"
        '  remote:\n    host: tracer\n    run: echo "parent=$TRACEPARENT"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "TRACEPARENT"}
    with collecting() as endpoint:
        done = subprocess.run(
            [pipedeck_bin(), "run", "--format", "json"],
            cwd=tmp_path,
            env={**env, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        span = next(span for span in spans() if span.name == "remote")
    logs = [json.loads(line) for line in done.stdout.splitlines()]
    texts = [e["text"] for e in logs if e["type"] == "log" and e["stage"] == "remote"]
    assert texts == [f"parent={traceparent(span)}"]


def test_connecting_to_a_host_holds_the_event_loop_for_no_callback_over_100ms(
    sshd: Sshd, tmp_path: Path
) -> None:
    """Issue 10: asyncssh (~150 ms to import) is imported in a worker thread, not on the loop
    that also drives the TUI. The CLI runs with the suite's loop watch (CPU time per callback,
    tests/conftest.py), which names any callback over 100 ms."""
    (tmp_path / "pipedeck.yaml").write_text(
        "version: 1\nhosts:\n" + host_block(sshd, "slowpoke", "127.0.0.2") + "stages:\n"
        "  remote:\n    host: slowpoke\n    run: echo hi\n"
    )
    watched = (
        "import sys\n"
        "from tests.conftest import LOOP_WATCH\n"
        "LOOP_WATCH.install()\n"
        "from tui.cli import main\n"
        "try:\n"
        "    main(['run', '--format', 'plain'])\n"
        "finally:\n"
        "    for spent, what, _ in LOOP_WATCH.reports:\n"
        "        if spent > 0.1:\n"
        "            print(f'SLOW {spent * 1000:.0f} ms CPU in {what}', file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", watched],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[remote] hi" in done.stdout
    assert "SLOW " not in done.stderr, done.stderr
