"""A GitHub Actions job's workflow command lines in the log view (issue 12): groups as foldable
headers (`z`), their end lines faint, errors and warnings marked; search finds lines in a folded
group and unfolds the one it goes to; `pipedeck logs JOB` prints step lines, not markers."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from textual.pilot import Pilot

from engine.cache import track_run
from engine.events import FAILED, RUNNING, StepStatus
from engine.gha.commands import step_marker
from engine.gha.loader import load_workflow
from engine.logs import LogReader, LogStore
from engine.run import Run
from tests.gha.test_job_logs_command import WORKFLOW
from tests.tui.conftest import log_of, shown, until
from tests.tui.replay import JOB_LOG, RUN_ID, T0, job_scenario, status, write_log
from tests.tui.test_history_screen import HistoryApp
from tests.tui.test_log_view import OneLog
from tui.app import PipedeckApp
from tui.screens.merged import MergedScreen
from tui.widgets.groups import Folds, group_around, group_stop
from tui.widgets.log_view import LogSource, LogView
from tui.widgets.stage_tree import StageTree
from tui.widgets.steps import JobReader

JOB = "test[py=a]"
FLOOD = 100_000
# The job's log as the job runner writes it: a 30-line group, then an error and a warning.
GROUPED = [
    ("stdout", step_marker(step=0, name="Lint", status=RUNNING)),
    ("stdout", "##[group]Run ruff check ."),
    *[("stdout", f"checking file {i}") for i in range(30)],
    ("stdout", "##[endgroup]"),
    ("stdout", "##[error]src/app.py:3:5: F401 `os` imported but unused"),
    ("stdout", "##[warning]3 files were skipped"),
    ("stdout", step_marker(step=0, name="Lint", status=FAILED, duration=0.8, exit_code=1)),
]


def grouped_app(root: Path) -> PipedeckApp:
    """The job replay, with the job `test[py=a]` ended failed after the log above."""
    run = job_scenario(root)
    run.events += [
        status(JOB, RUNNING, 3.0),
        *write_log(run.logs, JOB, 1, GROUPED, at=3.1),
        StepStatus(RUN_ID, JOB, 1, 0, "Lint", FAILED, duration=0.8, exit_code=1, ts=T0 + 4.0),
        status(JOB, FAILED, 4.1, exit_code=1),
    ]
    return PipedeckApp(run, clock=lambda: T0 + 9.0)  # type: ignore[arg-type]


async def job_log(pilot: Pilot[int], fold: bool = False) -> LogView:
    """Select the job; wait until its whole log shows, from its first line; with `fold`,
    press `z` (from the tree: the screen's key acts on the log pane) and wait for its group
    to fold."""
    app = pilot.app
    await until(pilot, lambda: JOB in app.run_screen.views, "the replay")  # type: ignore[attr-defined]
    tree = app.run_screen.query_one(StageTree)  # type: ignore[attr-defined]
    await until(pilot, lambda: tree.select_stage(JOB) or log_of(app).stage_id == JOB, "the job")  # type: ignore[arg-type]
    view = log_of(app)  # type: ignore[arg-type]
    await until(pilot, lambda: view.line_count == len(GROUPED), "the job's log")
    view.go_to(0)
    await until(pilot, lambda: shown(view)[0] == "▶ step 1 Lint", "its first line")
    if fold:
        await pilot.press("z")
        await until(pilot, lambda: view.line_count == len(GROUPED) - 31, "the group folded")
    return view


def colours(view: LogView, y: int) -> set[int | None]:
    """The ANSI colour numbers of row `y`'s text."""
    return {
        seg.style.color.number
        for seg in view.render_line(y)
        if seg.text.strip() and seg.style and seg.style.color
    }


def test_folds_translate_line_numbers() -> None:
    folds = Folds()
    folds.fold(2, 6, 2)  # header 2 hides 3, 4 and its end line 5
    folds.fold(10, 12, 1)  # header 10 hides 11 (ended by a step marker: no end line)
    assert folds.hidden == 4 and folds.inside(2) == 2 and folds.inside(10) == 1
    assert folds.inside(3) is None
    assert [folds.stored(n) for n in range(8)] == [0, 1, 2, 6, 7, 8, 9, 10]
    assert folds.stored(8) == 12
    assert [folds.shown(n) for n in (2, 3, 5, 6, 10, 11, 12)] == [2, 2, 2, 3, 7, 7, 8]
    assert folds.runs(1, 9) == [(1, 3), (6, 11), (12, 13)]
    assert folds.holding(4) == 2 and folds.holding(6) is None
    folds.unfold(2)
    assert folds.hidden == 1 and folds.runs(0, 4) == [(0, 4)]


def test_groups_nest_and_a_step_marker_ends_them() -> None:
    log = [
        "##[group]Check",  # 0: the runner's group around a step's output
        "##[group]Run checks",  # 1
        "inside",
        "##[endgroup]",  # 3
        "after the inner group",
        "##[endgroup]",  # 5
        "##[group]Unclosed",  # 6
        "output",
        step_marker(step=0, name="Check", status=FAILED),  # 8
    ]

    def raw(start: int, stop: int) -> list[str]:
        return log[start:stop]

    assert group_stop(raw, 0, len(log)) == (6, 4) and group_stop(raw, 1, len(log)) == (4, 1)
    assert group_stop(raw, 6, len(log)) == (8, 1)  # the step's end closes it
    assert group_stop(raw, 6, 8) is None  # before that marker arrived: it goes on
    assert group_around(raw, 2) == 1 and group_around(raw, 4) == 0
    assert group_around(raw, 6) is None and group_around(raw, 7) == 6
    folds = Folds()
    folds.fold(1, 4, 1)
    folds.fold(0, 6, 4)  # the outer group takes the inner one in
    assert folds.hidden == 5 and folds.inside(1) is None and folds.stored(1) == 6


async def test_group_header_end_and_error_lines_are_marked_in_colour(tmp_path: Path) -> None:
    app = grouped_app(tmp_path)
    async with app.run_test(size=(100, 50)) as pilot:
        view = await job_log(pilot)
        rows = shown(view)
        assert rows[1] == "▾ Run ruff check ."
        assert rows[32] == "╰"
        assert rows[33] == "✖ Error: src/app.py:3:5: F401 `os` imported but unused"
        assert rows[34] == "⚠ Warning: 3 files were skipped"
        assert not [row for row in rows if "##[" in row]
        assert colours(view, 33) == {1}  # ANSI red
        assert colours(view, 34) == {3}  # ANSI yellow
        assert colours(view, 35) == {1}  # the failed step's header: red too
        await pilot.press("e")  # the error line is what `e` finds
        await until(pilot, lambda: view.search is not None and view.search.hit == 33, "`e`")


async def test_z_folds_the_group_on_screen_and_unfolds_it(tmp_path: Path) -> None:
    app = grouped_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        view = await job_log(pilot, fold=True)
        assert shown(view)[:4] == [
            "▶ step 1 Lint",
            "▸ Run ruff check . (30 lines)",
            "✖ Error: src/app.py:3:5: F401 `os` imported but unused",
            "⚠ Warning: 3 files were skipped",
        ]
        view.wrap = True  # folded in wrap mode too
        await until(pilot, lambda: shown(view)[1] == "▸ Run ruff check . (30 lines)", "wrapped")
        view.wrap = False
        await pilot.press("z")
        await until(pilot, lambda: view.line_count == len(GROUPED), "the group unfolded")
        assert shown(view)[1:3] == ["▾ Run ruff check .", "checking file 0"]
        view.go_to(20)  # the header is off screen: `z` folds the group the top line is in
        await until(pilot, lambda: "checking file 29" in shown(view), "scrolled into it")
        await pilot.press("z")
        await until(pilot, lambda: view.line_count == len(GROUPED) - 31, "folded from inside")
        assert "▸ Run ruff check . (30 lines)" in shown(view)


async def test_folds_are_kept_per_log(tmp_path: Path) -> None:
    app = grouped_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        view = await job_log(pilot, fold=True)
        tree = app.run_screen.query_one(StageTree)
        tree.select_stage("build")  # the other job's log: its own group is open
        await until(pilot, lambda: view.stage_id == "build", "the other job")
        view.go_to(0)
        await until(pilot, lambda: "▾ Checkout" in shown(view), "its open group")
        tree.select_stage(JOB)  # back: still folded
        await until(pilot, lambda: view.stage_id == JOB, "the job again")
        assert view.line_count == len(GROUPED) - 31


async def test_search_finds_a_line_in_a_folded_group_and_unfolds_it(tmp_path: Path) -> None:
    app = grouped_app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        view = await job_log(pilot, fold=True)
        view.start_search(re.compile(r"checking file 2[67]"))
        await until(pilot, lambda: view.search is not None and view.search.hit == 28, "the hit")
        assert view.line_count == len(GROUPED)  # going to it unfolded its group
        assert view.search is not None and view.search.matches == [28, 29]
        top = view.scroll_offset.y
        assert shown(view)[28 - top] == "checking file 26"
        assert view.hit_text() == "checking file 26"
        await pilot.press("z")  # folded again (the hit's group): the next match unfolds it
        await until(pilot, lambda: view.line_count == len(GROUPED) - 31, "folded again")
        view.next_match()
        await until(pilot, lambda: view.line_count == len(GROUPED), "unfolded by `n`")
        assert view.search.hit == 29


def test_snapshot_a_folded_group_and_an_error(snap_compare, tmp_path: Path) -> None:
    """80x24: the job's log from its start, its group folded by `z`, the error and warning
    marked, the failed step's header."""

    async def run_before(pilot: Pilot[int]) -> None:
        await job_log(pilot, fold=True)
        await pilot.pause(0.1)

    assert snap_compare(grouped_app(tmp_path), terminal_size=(80, 24), run_before=run_before)


def flood_group(root: Path) -> LogSource:
    """A job's log whose one group holds 100,000 lines."""
    store = LogStore(root / "logs")
    writer = store.writer("run", "job", 1)
    body = b"".join(b"line %d\n" % i for i in range(FLOOD))
    writer.feed("stdout", b"##[group]flood\n" + body + b"##[endgroup]\nafter the flood\n")
    writer.finish()
    folder = root / "logs" / "run" / "job"
    return LogSource("job", 1, lambda: JobReader(LogReader(folder / "1.log", folder / "1.idx")))


async def test_a_flood_of_a_group_folds_off_the_loop(tmp_path: Path) -> None:
    """Its end is looked for in a thread: the loop gate fails any callback over 20 ms."""
    app = OneLog(await asyncio.to_thread(flood_group, tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(LogView)
        await until(pilot, lambda: view.line_count == FLOOD + 3, "the log")
        view.go_to(0)
        await pilot.press("z")
        await until(pilot, lambda: view.line_count == 2, "the group folded")
        assert shown(view) == [f"▸ flood ({FLOOD:,} lines)", "after the flood"]


async def test_the_merged_log_marks_errors_and_group_headers(tmp_path: Path) -> None:
    app = grouped_app(tmp_path)
    async with app.run_test(size=(120, 60)) as pilot:
        await job_log(pilot)
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, MergedScreen), "the merged log")
        view = app.screen.query_one(LogView)
        await until(pilot, lambda: view.line_count == len(JOB_LOG) + len(GROUPED), "its lines")
        view.go_to(len(JOB_LOG))
        await until(pilot, lambda: any("Run ruff" in row for row in shown(view)), "the job's")
        rows = [" ".join(row.split()) for row in shown(view)]
        assert "test[a] │ ▾ Run ruff check ." in rows
        assert "test[a] │ ✖ Error: src/app.py:3:5: F401 `os` imported but unused" in rows
        assert not [row for row in rows if "##[" in row]


async def test_the_history_screen_folds_a_past_jobs_group(tmp_path: Path) -> None:
    """A real workflow run, then its log in the history screen (a `JobReader` there too)."""
    workflow = tmp_path / ".github" / "workflows" / "ci.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(WORKFLOW)
    pipeline = load_workflow(workflow).pipeline
    run = Run(pipeline)
    track_run(run)
    try:
        await run.execute()
    finally:
        await run.close()
    app = HistoryApp(pipeline)
    async with app.run_test(size=(120, 40)) as pilot:
        log = app.screen.query_one("#log", LogView)
        await until(pilot, lambda: "▾ Run checks" in shown(log), "the job's log")
        assert "✖ Error: src/app.py:3: bad import" in shown(log)
        log.focus()
        await pilot.press("z")  # the first group on screen: the step's own, around its output
        await until(pilot, lambda: shown(log)[1].startswith("▸ Check ("), "the group folded")
        assert "inside the group" not in shown(log) and len(shown(log)) == 3
