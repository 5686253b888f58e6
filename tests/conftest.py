"""Fixtures shared by every test folder: pipeline files in tmp dirs and an event recorder."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.events import Event, LogLines, StageStatus

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_pipelines"


class Recorder:
    """A subscriber keeping every event, with helpers to ask what happened."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def statuses(self, stage: str) -> list[str]:
        """Every status the stage went through, in order."""
        return [e.status for e in self.events if isinstance(e, StageStatus) and e.stage == stage]

    def final(self, stage: str) -> StageStatus:
        """The stage's last status event."""
        return [e for e in self.events if isinstance(e, StageStatus) and e.stage == stage][-1]

    def lines(self, stage: str, stream: str | None = None) -> list[str]:
        """Every log line the stage printed (on one stream, or both)."""
        return [
            line
            for e in self.events
            if isinstance(e, LogLines) and e.stage == stage and stream in (None, e.stream)
            for line in e.lines
        ]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def write_pipeline(tmp_path: Path) -> Callable[[str], Path]:
    """Write a pipeline file (dedented) into a fresh workspace; returns its path."""

    def write(text: str, name: str = "pipedeck.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


def pipedeck_bin() -> str:
    """The installed `pipedeck` script of the interpreter running the tests."""
    beside = Path(sys.executable).parent / "pipedeck"
    found = str(beside) if beside.exists() else shutil.which("pipedeck")
    assert found, "pipedeck is not installed: run `make test`"
    return found


def marked_pids(run_id: str) -> list[int]:
    """Processes (other than zombies) whose environment carries PIPEDECK_RUN_ID=run_id."""
    needle = f"PIPEDECK_RUN_ID={run_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env.split(b"\0") and state != "Z":
            found.append(int(entry))
    return found
