"""A GitHub Actions job's steps as rows under it in the tree (SPEC §11): status, name and
duration, and selecting one shows the job's log where the step's output starts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from textual.widgets import Label, Markdown

from engine.events import RUNNING, SUCCEEDED, Event, RunStarted, StepStatus
from engine.gha.commands import step_marker
from engine.loader import load
from engine.logs import LogStore
from tests.tui.conftest import label, log_of, shown, status, tree_of, until
from tests.tui.replay import RUN_ID, T0, ReplayRun, write_log
from tests.tui.replay import status as recorded
from tui.app import PipedeckApp
from tui.screens.summary import SummaryScreen

PIPELINE = """\
version: 1
name: ci
stages:
  build:
    run: echo build
  test:
    matrix: {py: [a, b]}
    run: echo test
"""


def step(index: int, name: str, state: str, at: float, **extra: object) -> StepStatus:
    """A recorded `step_status` of the job `build` at T0 + `at`."""
    return StepStatus(RUN_ID, "build", 1, index, name, state, ts=T0 + at, **extra)  # type: ignore[arg-type]


# The job's log: 80 lines of checkout output, then the tests' output.
LOG = [
    ("stdout", step_marker(step=0, name="Checkout", status=RUNNING)),
    *[("stdout", f"checkout line {i}") for i in range(80)],
    ("stdout", step_marker(step=0, name="Checkout", status=SUCCEEDED, duration=1.5)),
    ("stdout", step_marker(step=1, name="Run tests", status=RUNNING)),
    ("stdout", "collected 12 items"),
]
TESTS_START = 82  # the line of step 1's starting marker


def replay(root: Path, *more: Event) -> PipedeckApp:
    """A job `build` mid-run: its first step succeeded, its second is running; then `more`."""
    path = root / "pipedeck.yaml"
    path.write_text(PIPELINE)
    pipeline = load(path)
    for sid, stage in pipeline.stages.items():  # jobs, as a workflow's loader makes them
        pipeline.stages[sid] = dataclasses.replace(stage, steps=True)
    store = LogStore(pipeline.state_dir / "logs")
    run = ReplayRun(
        pipeline,
        store,
        [
            RunStarted(RUN_ID, "ci", tuple(pipeline.stages), ts=T0),
            recorded("build", RUNNING, 0.1),
            step(0, "Checkout", RUNNING, 0.2),
            step(0, "Checkout", SUCCEEDED, 1.7, duration=1.5, exit_code=0),
            step(1, "Run tests", RUNNING, 2.0),
            *write_log(store, "build", 1, LOG, at=2.0),
            *more,
        ],
    )
    return PipedeckApp(run, clock=lambda: T0 + 9.0)  # type: ignore[arg-type]


def step_label(app: PipedeckApp, index: int) -> str:
    return str(tree_of(app).step_node("build", index).label)


async def test_steps_are_rows_under_their_job_with_status_and_duration(tmp_path: Path):
    app = replay(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "build") == RUNNING, "the replay")
        job = tree_of(app).node_for("build")
        await until(pilot, lambda: len(job.children) == 2, "the step rows")
        assert list(job.children) == [tree_of(app).step_node("build", i) for i in (0, 1)]
        assert step_label(app, 0) == "✔ Checkout 1.5s"
        assert step_label(app, 1) == "▶ Run tests 7.0s"  # ticking from its start at T0 + 2
        assert label(app, "build").startswith("▶ build")


async def test_a_new_attempt_of_the_job_starts_its_step_rows_over(tmp_path: Path):
    app = replay(
        tmp_path,
        recorded("build", RUNNING, 7.9, attempt=2),
        StepStatus(RUN_ID, "build", 2, 0, "Checkout", RUNNING, ts=T0 + 8.0),
    )
    async with app.run_test(size=(100, 30)) as pilot:
        job = tree_of(app).node_for("build")
        await until(pilot, lambda: len(job.children) == 1, "attempt 2's step only")
        assert step_label(app, 0) == "▶ Checkout 1.0s"


async def test_selecting_a_step_shows_the_log_from_its_first_line(tmp_path: Path):
    app = replay(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: len(tree_of(app).node_for("build").children) == 2, "the rows")
        view = log_of(app)
        await until(pilot, lambda: view.line_count == len(LOG), "the job's log")
        await pilot.press("j", "j")  # from the job onto its second step
        assert tree_of(app).selected_step == 1
        await until(
            pilot,
            lambda: view.search is not None and view.search.hit == TESTS_START,
            "the step's first line",
        )
        assert view.scroll_y > 0
        assert any('"name": "Run tests"' in row for row in shown(view)), shown(view)
        assert not any(row.strip() == "checkout line 0" for row in shown(view))
        await pilot.press("k")  # back onto the first step: the log goes back to its start
        await until(
            pilot, lambda: view.search is not None and view.search.hit == 0, "step 1's line"
        )
        assert view.scroll_y == 0


async def test_a_matrix_instance_holds_its_own_steps(tmp_path: Path):
    app = replay(tmp_path, StepStatus(RUN_ID, "test[py=b]", 1, 0, "Lint", SUCCEEDED, duration=0.3))
    async with app.run_test(size=(100, 30)) as pilot:
        instance = tree_of(app).node_for("test[py=b]")
        await until(pilot, lambda: len(instance.children) == 1, "the instance's step row")
        assert instance.is_expanded
        assert str(instance.children[0].label) == "✔ Lint 0.3s"
        assert not tree_of(app).node_for("test[py=a]").children


async def test_S_shows_the_jobs_step_summary_as_markdown(tmp_path: Path):
    app = replay(tmp_path)
    text = "# Coverage\n\n| file | % |\n|---|---|\n| shop.py | 91 |\n"
    folder = app.run_screen.pipeline.state_dir / "gha" / RUN_ID / "summary"
    folder.mkdir(parents=True)
    (folder / "build.md").write_text(text)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "build") == RUNNING, "the replay")
        await pilot.press("S")  # the cursor is on `build`
        await until(pilot, lambda: isinstance(app.screen, SummaryScreen), "the summary screen")
        markdown = app.screen.query_one(Markdown)
        await until(pilot, lambda: markdown.source == text, "the summary's text")
        await until(pilot, lambda: bool(markdown.query("MarkdownTable")), "its table")
        assert str(app.screen.query_one("#summary-title", Label).content) == "step summary of build"
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.run_screen, "the run screen again")


async def test_S_says_when_a_job_wrote_no_summary(tmp_path: Path):
    app = replay(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "build") == RUNNING, "the replay")
        await pilot.press("S")
        await until(pilot, lambda: isinstance(app.screen, SummaryScreen), "the summary screen")
        markdown = app.screen.query_one(Markdown)
        await until(pilot, lambda: "no step summary" in markdown.source, "the note")
