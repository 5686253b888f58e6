"""`pipedeck run` on a pipeline file with two SSH hosts: loader, Run, executors end to end."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import pipedeck_bin
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
