"""The history screen of one pipeline file lists its runs only, though other pipeline files in
the directory share `.pipedeck/` (and have stages of the same name)."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable

from engine.loader import load
from tests.engine.test_history import run_once as record
from tests.tui.conftest import until
from tests.tui.test_history_screen import HistoryApp

TEXT = "version: 1\nname: same\nstages:\n  build: {run: echo %s}\n"


async def test_the_history_screen_lists_this_pipeline_files_runs_only(tmp_path: Path) -> None:
    mine, other = tmp_path / "mine.yaml", tmp_path / "other.yaml"
    mine.write_text(TEXT % "mine")
    other.write_text(TEXT % "other")
    first = await record(mine)
    await record(other)
    second = await record(mine)
    await record(other)
    app = HistoryApp(load(mine))
    async with app.run_test(size=(160, 50)) as pilot:
        runs = app.screen.query_one("#runs", DataTable)
        await until(pilot, lambda: runs.row_count >= 2, "runs listed")
        await pilot.pause()
        assert [runs.get_row_at(i)[0] for i in range(runs.row_count)] == [second, first]
