"""The history screen (`h`): runs, a run's stage tree and logs, duration sparklines, metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.app import App
from textual.widgets import DataTable, Sparkline, Tree

from engine.cache import track_run
from engine.loader import load
from engine.run import Run
from engine.spec import Pipeline
from tests.conftest import pipedeck_bin
from tests.tui.conftest import shown, until
from tui.screens.history import HistoryScreen
from tui.screens.timeline import TimelineScreen
from tui.widgets.log_view import LogView
from tui.widgets.timeline import Timeline

PIPELINE = """\
version: 1
name: hist
stages:
  train:
    run: |
      echo "training on $(cat data.txt)"
      echo "{\\"loss\\": $(wc -c < data.txt), \\"eval\\": {\\"acc\\": 0.5}}" > metrics.json
    inputs: [data.txt]
    outputs: [metrics.json]
    metrics: metrics.json
  test:
    needs: [train]
    matrix: {py: [a, b]}
    retries: 1
    run: |
      echo "test ${{ matrix.py }} attempt $PIPEDECK_ATTEMPT"
      test "${{ matrix.py }}" = a || test "$PIPEDECK_ATTEMPT" = 2
"""


async def record_runs(tmp_path: Path, data: list[str]) -> tuple[Pipeline, list[str]]:
    """Real runs of PIPELINE, one per `data` content, recorded in the history."""
    path = tmp_path / "pipedeck.yaml"
    path.write_text(PIPELINE)
    run_ids = []
    for text in data:
        (tmp_path / "data.txt").write_text(text)
        run = Run(load(path))
        track_run(run)
        try:
            await run.execute()
        finally:
            await run.close()
        run_ids.append(run.run_id)
    return load(path), run_ids


class HistoryApp(App[None]):
    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__()
        self.pipeline = pipeline

    def on_mount(self) -> None:
        self.push_screen(HistoryScreen(self.pipeline))


def tree_labels(screen: HistoryScreen) -> list[str]:
    tree = screen.query_one("#stages", Tree)
    labels = []

    def walk(node, depth):  # type: ignore[no-untyped-def]
        for child in node.children:
            labels.append("  " * depth + str(child.label))
            walk(child, depth + 1)

    walk(tree.root, 0)
    return labels


async def test_runs_stage_tree_log_sparkline_and_metrics(tmp_path: Path) -> None:
    pipeline, (first, second, third) = await record_runs(tmp_path, ["abc", "abc", "abcdef"])
    app = HistoryApp(pipeline)
    async with app.run_test(size=(160, 50)) as pilot:
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        runs = screen.query_one("#runs", DataTable)
        await until(pilot, lambda: screen.run_id == third, "the newest run opened")
        assert [runs.get_row_at(i)[0] for i in range(3)] == [third, second, first]
        assert "succeeded" in runs.get_row_at(0)[1] and runs.get_row_at(0)[4] == "manual"

        # the newest run is open: train ran because data.txt changed, test[py=b] retried
        labels = tree_labels(screen)
        assert any("train  succeeded" in line and "data.txt changed" in line for line in labels)
        assert "test" in labels
        retried = next(line for line in labels if "test[py=b]" in line)
        assert "succeeded" in retried
        assert any("attempt 1" in line and "failed" in line for line in labels)

        log = screen.query_one("#log", LogView)
        await until(pilot, lambda: shown(log) == ["training on abcdef"], "train's log")
        spark = screen.query_one("#spark", Sparkline)
        assert len(spark.data or []) == 2  # train ran twice (the second run was cached)
        metrics = screen.query_one("#metrics", DataTable)
        await until(pilot, lambda: metrics.row_count == 2, "train's metrics")
        rows = {metrics.get_row_at(i)[0]: metrics.get_row_at(i)[1:] for i in range(2)}
        assert rows["loss"] == ["6", "3", "+3"]
        assert rows["eval.acc"] == ["0.5", "0.5", "+0"]

        # the middle run: train was cached, with no log; its metrics are those of the first run
        await pilot.press("down")
        await until(pilot, lambda: screen.run_id == second, "the second run opened")
        assert any("train  cached" in line and "up to date" in line
                   for line in tree_labels(screen))  # fmt: skip
        recorded = f"recorded by {first}"
        await until(pilot, lambda: recorded in str(metrics.border_title), "the first's metrics")
        assert metrics.get_row_at(1) == ["loss", "3", "-", "-"]
        await until(pilot, lambda: "did not run" in log.placeholder, "no log for a cached stage")

        # into the tree: the instance test[py=b]'s first attempt shows its own log
        await pilot.press("enter")
        tree = screen.query_one("#stages", Tree)
        assert app.focused is tree
        node = next(n for n in tree._tree_nodes.values()
                    if n.data == ("test[py=b]", 1))  # fmt: skip
        tree.move_cursor(node)
        await until(pilot, lambda: shown(log) == ["test b attempt 1"], "the failed attempt's log")

        await pilot.press("escape")
        assert not isinstance(app.screen, HistoryScreen)


async def test_j_k_move_T_shows_the_runs_timeline_and_one_run_has_no_chart(tmp_path: Path) -> None:
    pipeline, (first, second) = await record_runs(tmp_path, ["abc", "abcd"])
    app = HistoryApp(pipeline)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        runs = screen.query_one("#runs", DataTable)
        metrics = screen.query_one("#metrics", DataTable)
        await until(pilot, lambda: screen.run_id == second, "the newest run opened")
        await until(
            pilot, lambda: not metrics.has_class("hidden"), "its metrics (read in a thread)"
        )
        assert runs.row_count == 2
        # at 80x24 every column of the runs and metrics tables fits: no sideways scrolling
        for table in (runs, metrics):
            width = sum(col.get_render_width(table) for col in table.columns.values())
            assert width <= table.scrollable_content_region.width, table.id
        assert runs.get_row_at(0)[0] == second.rsplit("-", 1)[1]  # the short id
        await pilot.press("j")
        await until(pilot, lambda: screen.run_id == first, "j moved to the older run")
        await pilot.press("k")
        await until(pilot, lambda: screen.run_id == second, "k moved back")
        # test[py=a] ran in both runs, but its sparkline is shown only from two durations on
        spark = screen.query_one("#spark", Sparkline)
        assert spark.has_class("hidden") is (len(spark.data or []) < 2)
        await pilot.press("enter", "j")
        tree = screen.query_one("#stages", Tree)
        assert tree.cursor_line == 1

        await pilot.press("T")
        assert isinstance(app.screen, TimelineScreen)
        timeline = app.screen.query_one(Timeline)
        stages = [span.stage for span in timeline.rows]
        assert stages[0] == "train" and {"test[py=a]", "test[py=b]"} <= set(stages)
        assert sum(1 for s in stages if s == "test[py=b]") == 2  # both attempts
        assert timeline.critical[0] == "train" and timeline.critical[-1].startswith("test")
        await pilot.press("escape")
        assert app.screen is screen


async def test_a_stage_with_one_recorded_run_says_so_instead_of_a_chart(tmp_path: Path) -> None:
    pipeline, _ = await record_runs(tmp_path, ["abc"])
    app = HistoryApp(pipeline)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        title = screen.query_one("#spark-title")
        await until(pilot, lambda: "one recorded run" in str(title.render()), "the one-run line")
        assert screen.query_one("#spark", Sparkline).has_class("hidden")


async def test_an_empty_history_says_so(tmp_path: Path) -> None:
    path = tmp_path / "pipedeck.yaml"
    path.write_text(PIPELINE)
    app = HistoryApp(load(path))
    async with app.run_test() as pilot:
        log = app.screen.query_one("#log", LogView)
        await until(pilot, lambda: log.placeholder == "no runs recorded yet", "the empty notice")


async def test_a_damaged_history_is_reported_on_the_screen(tmp_path: Path) -> None:
    path = tmp_path / "pipedeck.yaml"
    path.write_text(PIPELINE)
    (tmp_path / ".pipedeck").mkdir()
    (tmp_path / ".pipedeck/history.db").write_bytes(b"not a database" * 100)
    app = HistoryApp(load(path))
    async with app.run_test() as pilot:
        log = app.screen.query_one("#log", LogView)
        await until(pilot, lambda: "is damaged" in log.placeholder, "the problem")
    assert list((tmp_path / ".pipedeck").glob("history.db.damaged-*"))  # kept aside


async def test_an_attempt_that_printed_nothing_says_so_not_that_it_did_not_run(
    tmp_path: Path,
) -> None:
    """A silent attempt ran: its (empty) log says "no output", a cached stage's "did not run"."""
    path = tmp_path / "pipedeck.yaml"
    path.write_text("version: 1\nname: quiet\nstages:\n  quiet:\n    run: 'true'\n")
    run = Run(load(path))
    track_run(run)
    try:
        await run.execute()
    finally:
        await run.close()
    app = HistoryApp(load(path))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        log = screen.query_one("#log", LogView)
        await until(pilot, lambda: screen.run_id == run.run_id, "the run opened")
        await until(pilot, lambda: log.placeholder == "no output", "the silent attempt's log")


async def test_the_short_run_id_shown_at_80x24_is_one_pipedeck_show_accepts(tmp_path: Path) -> None:
    pipeline, (run_id,) = await record_runs(tmp_path, ["abc"])
    app = HistoryApp(pipeline)
    async with app.run_test(size=(80, 24)) as pilot:
        runs = app.screen.query_one("#runs", DataTable)
        await until(pilot, lambda: runs.row_count == 1, "the run listed")
        short = str(runs.get_row_at(0)[0])
    assert len(short) < len(run_id)
    show = await asyncio.create_subprocess_exec(
        pipedeck_bin(), "show", short, "-f", str(tmp_path / "pipedeck.yaml"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await show.communicate()
    assert show.returncode == 0, err.decode()
    assert out.decode().startswith(f"run {run_id} ")
