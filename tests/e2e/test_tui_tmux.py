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


def foreground(screen: str, needle: str) -> str:
    """The last foreground colour (an SGR `38;...` code) set before `needle` on its line."""
    before = line_with(screen, needle).partition(needle)[0]
    codes = re.findall(r"\x1b\[([0-9;]*)m", before)
    colours = [m.group(0) for c in codes for m in [re.search(r"38;[25](;\d+)+", c)] if m]
    return colours[-1] if colours else ""


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is required in CI")
        pytest.skip("tmux is not installed")
    session = Tmux(uuid.uuid4().hex[:8])
    yield session
    subprocess.run(["tmux", "-L", session.socket, "kill-server"], capture_output=True)


def start_ui(
    tmux: Tmux,
    tmp_path: Path,
    text: str,
    size: tuple[int, int] = (160, 48),
    name: str = "pipedeck.yaml",
) -> None:
    """Write the pipeline (or workflow) `text` to `name` and open `pipedeck ui` on it in a tmux
    session of `size`."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
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


def busy_mib(screen: str) -> int:
    """The memory the `u` column shows for the running stage `busy` (0: none yet)."""
    found = re.search(r"▶ busy .*\d+% (\d+)M", screen)
    return int(found[1]) if found else 0


def test_views_resources_and_failure_first(tmux: Tmux, tmp_path: Path) -> None:
    """T, D, m open and Esc closes them; u shows CPU and memory; the failed run opens its
    first failure at the first error line."""
    start_ui(tmux, tmp_path, VIEWS)
    tmux.wait(lambda s: "▶ busy" in s and "✘ unit" in s, "busy to run and unit to fail")

    tmux.keys("u")
    # sampled each second from 0.1 s in: the first sample may precede the 48 MiB allocation
    screen = tmux.wait(lambda s: busy_mib(s) >= 48, "u columns with busy's 48 MiB")

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


WORKFLOW = """\
name: e2e-gha
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - name: Prepare
        run: echo "prepare output"
      - name: Compile
        run: |
          echo "::group::compile details"
          echo "compile output one"
          echo "::endgroup::"
          echo "::error file=src/a.c,line=7::compile error"
          echo "compile output two"
      - name: Wait
        run: |
          echo "waiting for go"
          while [ ! -f go ]; do sleep 0.1; done
          echo "went on"
"""


def test_a_workflow_jobs_steps_in_the_tree_and_each_steps_own_log(
    tmux: Tmux, tmp_path: Path
) -> None:
    """SPEC §11: a job's steps under it with status and duration; selecting a step shows only
    its part of the log; no step marker or workflow command shows raw: a group is a header
    that `z` folds, an error is red."""
    start_ui(tmux, tmp_path, WORKFLOW, name=".github/workflows/ci.yml")
    screens = [tmux.wait(lambda s: "▶ Wait" in s and "waiting for go" in s, "the third step")]
    rows = [re.search(rf"{row} +\d+\.\ds", screens[-1]) for row in
            ("▶ build", "✔ Prepare", "✔ Compile", "▶ Wait")]  # fmt: skip
    assert all(rows), screens[-1]
    ends = {found.end() - screens[-1].rfind("\n", 0, found.start()) for found in rows if found}
    assert len(ends) == 1, screens[-1]  # the steps' durations in the job's column
    assert "✔ step 1 Prepare: succeeded in" in screens[-1]  # the job's log: a header per marker
    assert "▶ step 3 Wait" in screens[-1]

    tmux.keys("j")  # the first step: its own lines only
    screens.append(tmux.wait(lambda s: "build · step 1 Prepare · succeeded" in s, "step 1"))
    assert "prepare output" in screens[-1]
    assert "compile output one" not in screens[-1] and "step 2 Compile" not in screens[-1]

    tmux.keys("j")
    screens.append(tmux.wait(lambda s: "build · step 2 Compile · succeeded" in s, "step 2"))
    assert "compile output one" in screens[-1] and "compile output two" in screens[-1]
    assert "prepare output" not in screens[-1] and "waiting for go" not in screens[-1]
    assert "▾ compile details" in screens[-1]
    coloured = tmux("capture-pane", "-p", "-e", "-t", tmux.session)  # with its colours
    error = foreground(coloured, "✖ Error: src/a.c:7: compile error")
    assert error and error != foreground(coloured, "compile output two"), coloured
    tmux.keys("z")  # the first group on screen: the step's own, around its output
    screens.append(tmux.wait(lambda s: "▸ Compile (" in s, "the step's group folded"))
    assert "compile output one" not in screens[-1] and "compile error" not in screens[-1]
    tmux.keys("z")
    screens.append(tmux.wait(lambda s: "compile output one" in s, "the group unfolded"))

    tmux.keys("j")  # the running step: its lines grow
    screens.append(tmux.wait(lambda s: "build · step 3 Wait · running" in s, "step 3"))
    assert "waiting for go" in screens[-1] and "compile output" not in screens[-1]
    (tmp_path / "go").write_text("")
    screens.append(tmux.wait(lambda s: "went on" in s, "the step's new line"))
    screens.append(tmux.wait(lambda s: "step 3 Wait · succeeded" in s, "the step to end"))
    assert re.search(r"✔ Wait +\d+\.\ds", screens[-1])
    screens.append(tmux.wait(lambda s: "✔ build" in s, "the job to end after its last step"))
    assert not [screen for screen in screens if "##pipedeck[" in screen or "##[" in screen]

    tmux.keys("q")
    screen = tmux.wait(lambda s: "PIPEDECK-EXIT=0" in s, "pipedeck to exit")
    assert "Traceback" not in screen
