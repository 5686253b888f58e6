"""The history screen shows a past GitHub Actions job's recorded steps under it (SPEC §6, §11):
status, duration and why; selecting a step shows its own lines of the stored log."""

from __future__ import annotations

import subprocess
from pathlib import Path

from textual.widgets import Tree

from engine.gha.loader import Options, load_workflow
from tests.conftest import pipedeck_bin
from tests.tui.conftest import shown, until
from tests.tui.test_history_screen import HistoryApp, tree_labels
from tui.screens.history import HistoryScreen
from tui.widgets.log_view import LogView

WORKFLOW = """\
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - name: Greet
        run: echo hello from greet
      - name: Flaky check
        continue-on-error: true
        run: |
          echo flaky output
          exit 3
      - name: Only on tags
        if: startsWith(github.ref, 'refs/tags/')
        run: echo tagged
      - name: Finish
        run: echo done
"""


def record_workflow(root: Path) -> Path:
    """A real run of WORKFLOW through the CLI, recorded in root's `.pipedeck/`."""
    path = root / ".github" / "workflows" / "ci.yml"
    path.parent.mkdir(parents=True)
    path.write_text(WORKFLOW)
    done = subprocess.run([pipedeck_bin(), "run", str(path)], cwd=root, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    return path


async def test_a_past_jobs_steps_are_rows_under_it_and_show_their_own_lines(tmp_path: Path):
    path = record_workflow(tmp_path)
    app = HistoryApp(load_workflow(str(path), Options()).pipeline)
    async with app.run_test(size=(160, 50)) as pilot:
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        await until(pilot, lambda: screen.run_id is not None, "the run opened")
        await until(pilot, lambda: len(tree_labels(screen)) == 5, "the job and its steps")
        job, *steps = tree_labels(screen)
        assert job.startswith("✔  build  succeeded")
        assert steps[0].startswith("  ✔  1 Greet  succeeded  0.")
        assert steps[1].startswith("  ✘  2 Flaky check  failed (allowed)  0.")
        assert steps[1].endswith("s  — exit code 3")
        assert steps[2] == "  ↷  3 Only on tags  skipped  — if: startsWith(github.ref, " \
            "'refs/tags/') is false"  # fmt: skip
        assert steps[3].startswith("  ✔  4 Finish  succeeded  0.")

        log = screen.query_one("#log", LogView)
        await until(pilot, lambda: "hello from greet" in shown(log), "the job's whole log")
        assert "done" in shown(log)
        tree = screen.query_one("#stages", Tree)
        tree.focus()
        await pilot.press("down", "down")  # onto the second step: its own lines only
        await until(pilot, lambda: "flaky output" in shown(log), "the step's lines")
        assert "hello from greet" not in shown(log) and "done" not in shown(log)
        assert str(log.border_title) == (
            "build · attempt 1 · step 2 Flaky check · failed (allowed)"
        )
        await pilot.press("down")  # skipped before it started: no lines, and why
        await until(pilot, lambda: "is false" in log.placeholder, "why it has no lines")
        assert log.placeholder.startswith("no output: if: startsWith(")
        assert log.line_count == 0
        await pilot.press("up", "up", "up")  # the job again: its whole log
        await until(pilot, lambda: "done" in shown(log), "the job's whole log again")
