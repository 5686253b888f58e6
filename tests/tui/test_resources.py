"""`u`: CPU% and memory of each running stage's whole process tree; peaks in the history."""

from __future__ import annotations

import re
from pathlib import Path

from textual.app import App
from textual.widgets import Tree

from engine.events import RUNNING, SUCCEEDED
from engine.history import History
from engine.loader import load
from engine.resources import ResourceMonitor
from tests.tui.conftest import label, status, until
from tui.screens.history import HistoryScreen

BUSY = """\
version: 1
name: busy
stages:
  burn:
    run: |
      python3 -c "
      import pathlib, time
      block = bytearray(64 * 1024 * 1024)  # 64 MiB held while it runs
      deadline = time.time() + 60
      while not pathlib.Path('go').exists() and time.time() < deadline:
          sum(range(20000))
      " &
      wait
"""


async def test_u_shows_cpu_and_memory_of_the_whole_tree_and_the_history_keeps_peaks(make_app):
    app = make_app(BUSY)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: status(app, "burn") == RUNNING, "burn to run")
        assert not re.search(r"\d+% ", label(app, "burn"))  # the columns are off at first
        await pilot.press("u")
        # the busy, 64 MiB process is a grandchild (started with &): the tree counts it
        pattern = re.compile(r"(\d+)% (\d+)M")

        def busy() -> bool:
            found = pattern.search(label(app, "burn"))
            return bool(found) and int(found[1]) >= 30 and int(found[2]) >= 64

        await until(pilot, busy, "CPU% and memory of the busy tree")
        monitor = ResourceMonitor.of_run(app.run_screen.run.run_id)
        assert monitor is not None and monitor.usage["burn"].processes >= 2
        await pilot.press("u")
        await until(pilot, lambda: not pattern.search(label(app, "burn")), "the columns off")
        (app.run_screen.run.pipeline.workspace / "go").write_text("")
        await until(pilot, lambda: status(app, "burn") == SUCCEEDED, "burn to end")
        run_id = app.run_screen.run.run_id
        pipeline = app.run_screen.pipeline
        await pilot.press("q")

    history = History.for_state_dir(pipeline.state_dir)
    try:
        (row,) = [r for r in history.attempts(run_id) if r.stage == "burn"]
    finally:
        history.close()
    assert row.peak_rss is not None and row.peak_rss >= 64 << 20
    assert row.cpu_seconds is not None and row.cpu_seconds > 0.3

    class HistoryApp(App[None]):
        def on_mount(self) -> None:
            self.push_screen(HistoryScreen(load(Path(pipeline.path))))

    viewer = HistoryApp()
    async with viewer.run_test(size=(160, 40)) as pilot:
        tree = viewer.screen.query_one("#stages", Tree)
        await until(pilot, lambda: len(tree.root.children) == 1, "the stage listed")
        text = str(tree.root.children[0].label)
        assert re.search(r"peak \d+M", text) and "cpu " in text
