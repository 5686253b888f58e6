"""End to end: the real `pipedeck ui` in tmux, driven and read as a person would."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import pipedeck_bin

pytestmark = pytest.mark.e2e

PIPELINE = """\
version: 1
name: e2e
env:
  E2E_MARK: "{mark}"
stages:
  hello:
    run: echo "hello from e2e"
  slow:
    needs: [hello]
    run: |
      echo "slow started attempt $PIPEDECK_ATTEMPT"
      sleep 60
"""


def marked(mark: str) -> list[int]:
    """Live processes carrying E2E_MARK=mark in their environment."""
    needle = f"E2E_MARK={mark}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env and state != "Z":
            found.append(int(entry))
    return found


class Tmux:
    """One tmux server on a private socket, with one 160x48 session."""

    def __init__(self, name: str) -> None:
        self.socket = f"pipedeck-e2e-{name}"
        self.session = name

    def __call__(self, *args: str) -> str:
        out = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", self.session)

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", self.session, *keys)

    def wait(self, check: Callable[[str], bool], what: str, timeout: float = 20) -> str:
        """Poll the screen until `check(screen)`; fails with the last screen."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if check(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {what}; the screen:\n{text}")
            time.sleep(0.1)


def line_with(screen: str, needle: str) -> str:
    return next((line for line in screen.splitlines() if needle in line), "")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is required in CI")
        pytest.skip("tmux is not installed")
    session = Tmux(uuid.uuid4().hex[:8])
    yield session
    subprocess.run(["tmux", "-L", session.socket, "kill-server"], capture_output=True)


def test_select_read_cancel_rerun_quit(tmux: Tmux, tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    path = tmp_path / "pipedeck.yaml"
    path.write_text(PIPELINE.format(mark=mark))
    command = f"{pipedeck_bin()} ui {path}; echo PIPEDECK-EXIT=$?; sleep 60"
    tmux(
        "new-session",
        "-d",
        "-s",
        tmux.session,
        "-x",
        "160",
        "-y",
        "48",
        "-c",
        str(tmp_path),
        command,
    )

    screen = tmux.wait(lambda s: "▶ slow" in s, "slow to run")
    assert "e2e" in screen.splitlines()[0] and "running" in screen.splitlines()[0]
    assert "✔ hello" in screen

    tmux.keys("j")  # select `slow`
    screen = tmux.wait(lambda s: "slow started attempt 1" in s, "slow's log")
    assert "slow · running" in screen

    tmux.keys("c")
    screen = tmux.wait(lambda s: "⊘ slow" in s, "slow to be cancelled")
    assert "slow · cancelled" in screen
    tmux.wait(lambda s: not marked(mark), "slow's processes to end", timeout=15)

    tmux.keys("r")
    screen = tmux.wait(lambda s: "slow started attempt 2" in s, "the rerun's log")
    assert "attempt 2" in line_with(screen, "slow · ")
    assert "▶ slow" in screen and "#2" in line_with(screen, "▶ slow")
    assert marked(mark)

    tmux.keys("q")
    screen = tmux.wait(lambda s: "Cancel it and quit?" in s, "the confirmation")
    tmux.keys("y")
    screen = tmux.wait(lambda s: "PIPEDECK-EXIT=" in s, "pipedeck to exit")
    assert "Traceback" not in screen
    assert not marked(mark)
