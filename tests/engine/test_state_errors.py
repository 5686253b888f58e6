"""pipedeck's own state on a full, read-only or odd disk: one clear line, never a traceback,
history still readable (issue 9.11 and its messages)."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import pipedeck_bin

FLOOD = """\
version: 1
stages:
  flood:
    run: seq 1000000
  after:
    needs: [flood]
    when: always
    run: echo after
"""


def pipedeck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([pipedeck_bin(), *args], capture_output=True, text=True, timeout=120)


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m") -> Iterator[Path]:
    """A small tmpfs mounted at `path` (needs root), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (root needed): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    for text in (done.stdout, done.stderr):
        assert "Traceback" not in text and "never retrieved" not in text, text[-3000:]


def test_a_full_disk_fails_the_stage_records_the_run_and_history_still_works(tmp_path: Path):
    path = tmp_path / "pipedeck.yaml"
    path.write_text(FLOOD)
    with tmpfs(tmp_path / ".pipedeck"):
        done = pipedeck("run", str(path), "--format", "json")
        no_traceback(done)
        assert done.returncode == 1
        events = [json.loads(line) for line in done.stdout.splitlines()]
        final = [e for e in events if e["type"] == "stage_status" and e["stage"] == "flood"][-1]
        assert final["status"] == "failed"
        assert final["reason"].startswith(f"no space left on device: {tmp_path / '.pipedeck'}")
        for _ in range(2):  # and again while the disk stays full
            again = pipedeck("run", str(path))
            no_traceback(again)
            assert again.returncode == 1
        listed = pipedeck("history", "--json", "-f", str(path))
        no_traceback(listed)
        assert listed.returncode == 0
        statuses = [run["status"] for run in json.loads(listed.stdout)]
        assert len(statuses) == 3 and "running" not in statuses
        assert statuses[-1] == "failed"  # the first run: recorded as it ended
        shown = pipedeck("show", "-f", str(path))
        no_traceback(shown)
        assert shown.returncode == 0 and "flood" in shown.stdout


def test_logs_dir_that_is_a_file_is_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "pipedeck.yaml"
    path.write_text("version: 1\nstages:\n  a:\n    run: echo hi\n")
    (tmp_path / ".pipedeck").mkdir()
    (tmp_path / ".pipedeck/logs").write_text("")
    done = pipedeck("run", str(path))
    no_traceback(done)
    assert done.returncode == 1
    assert f"{tmp_path / '.pipedeck/logs'} is a file, not a directory" in done.stdout
    assert "NotADirectoryError" not in done.stdout + done.stderr


def test_a_state_dir_already_full_names_the_cause_and_leaves_no_empty_database(tmp_path: Path):
    path = tmp_path / "pipedeck.yaml"
    path.write_text("version: 1\nstages:\n  a:\n    run: echo hi\n")
    with tmpfs(tmp_path / ".pipedeck") as state:
        with open(state / "filler", "wb") as f, contextlib.suppress(OSError):
            f.write(b"\0" * (2 << 20))  # fills the 1 MiB
        done = pipedeck("run", str(path))
        no_traceback(done)
        assert done.returncode == 1
        assert f"no space left on device: {state}" in done.stderr
        assert "move it away" not in done.stderr
        assert not (state / "history.db").exists()
        listed = pipedeck("history", "-f", str(path))
        no_traceback(listed)
        assert listed.returncode == 0 and "no runs recorded" in listed.stdout
