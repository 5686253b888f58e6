"""End to end: the real `pipedeck ui` in tmux, driven and read as a person would."""

from __future__ import annotations

import os
import re
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


def start_ui(tmux: Tmux, tmp_path: Path, text: str, size: tuple[int, int] = (160, 48)) -> None:
    """Write the pipeline `text` and open `pipedeck ui` on it in a tmux session of `size`."""
    path = tmp_path / "pipedeck.yaml"
    path.write_text(text)
    command = f"{pipedeck_bin()} ui {path}; echo PIPEDECK-EXIT=$?; sleep 60"
    width, height = size
    tmux("new-session", "-d", "-s", tmux.session, "-x", str(width), "-y", str(height),
         "-c", str(tmp_path), command)  # fmt: skip


def test_select_read_cancel_rerun_quit(tmux: Tmux, tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    start_ui(tmux, tmp_path, PIPELINE.format(mark=mark))

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


FAILING = """\
version: 1
name: e2e-fail
stages:
  setup:
    run: echo ready
  unit:
    needs: [setup]
    run: |
      echo "collected 3 items"
      echo "tests/test_a.py ..F"
      echo "E   assert 1 == 2"
      echo "FAILED tests/test_a.py::test_three - assert 1 == 2"
      exit 1
"""


def test_keys_typed_at_once_after_slash_are_the_search(tmux: Tmux, tmp_path: Path) -> None:
    """Issue 9 item 6, with a real terminal: `/rcnerror` sent in one write searches."""
    start_ui(tmux, tmp_path, FAILING)
    tmux.wait(lambda s: "✘ unit" in s, "unit to fail")
    tmux("send-keys", "-t", tmux.session, "-l", "/rcnerror")  # one write: as fast as a paste
    screen = tmux.wait(lambda s: "search /" in s and "rcnerror" in s, "the search box")
    tmux.keys("Enter")
    screen = tmux.wait(lambda s: "/rcnerror/" in s, "the search to run")
    assert "attempt 2" not in screen and "#2" not in screen  # `r` reran nothing
    assert "no search" not in screen
    tmux.keys("q")
    tmux.wait(lambda s: "PIPEDECK-EXIT=" in s, "pipedeck to exit")


VIEWS = (
    FAILING.replace("e2e-fail", "e2e-views")
    + """\
  busy:
    needs: [setup]
    run: |
      python3 -c "
      import pathlib
      block = bytearray(48 * 1024 * 1024)
      while not pathlib.Path('go').exists():
          sum(range(20000))
      "
"""
)


def test_views_resources_and_failure_first(tmux: Tmux, tmp_path: Path) -> None:
    """T, D, m open and Esc closes them; u shows CPU and memory; the failed run opens its
    first failure at the first error line."""
    start_ui(tmux, tmp_path, VIEWS)
    tmux.wait(lambda s: "▶ busy" in s and "✘ unit" in s, "busy to run and unit to fail")

    tmux.keys("u")
    screen = tmux.wait(lambda s: re.search(r"▶ busy .*\d+% \d+M", s) is not None, "u columns")
    assert int(re.search(r"▶ busy .*?(\d+)M", screen)[1]) >= 48  # type: ignore[index]

    tmux.keys("T")
    screen = tmux.wait(lambda s: "critical path:" in s, "the timeline")
    assert "█" in line_with(screen, "✘ unit") and "█" in line_with(screen, "▶ busy")
    tmux.keys("Escape")
    tmux.wait(lambda s: "critical path:" not in s and "▶ busy" in s, "back to the run")

    tmux.keys("m")
    screen = tmux.wait(lambda s: "merged log" in s, "the merged log")
    assert "│ collected 3 items" in line_with(screen, "collected 3 items")
    assert line_with(screen, "collected 3 items").lstrip("│ ").startswith("unit")
    tmux.keys("Escape")
    tmux.wait(lambda s: "merged log" not in s, "back from the merged log")

    tmux.keys("D")
    screen = tmux.wait(lambda s: "enter opens the log" in s, "the DAG")
    assert "✔ setup" in screen and "✘ unit" in screen and "▶ busy" in screen and "╭" in screen
    tmux.keys("Escape")
    tmux.wait(lambda s: "enter opens the log" not in s, "back from the DAG")

    (tmp_path / "go").write_text("")
    screen = tmux.wait(lambda s: "errors 1/2" in s, "failure first")
    assert "unit · failed" in screen
    tmux.keys("e")
    tmux.wait(lambda s: "errors 2/2" in s, "e: the next error")
    tmux.keys("q")
    screen = tmux.wait(lambda s: "PIPEDECK-EXIT=1" in s, "pipedeck to exit with 1")
    assert "Traceback" not in screen
