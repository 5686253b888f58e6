"""A GitHub Actions job's steps as rows under it in the tree (SPEC §11): status, name and
duration; the job's log shows each step marker as a header line (the store keeps the marker);
selecting a step shows only its own lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import Label, Markdown

from engine.events import FAILED, RUNNING, SUCCEEDED, StepStatus
from engine.gha.commands import STEP_MARKER
from tests.tui.conftest import label, log_of, shown, status, tree_of, until
from tests.tui.replay import JOB_LOG, JOB_PIPELINE, RUN_ID, T0, job_scenario
from tests.tui.replay import status as recorded
from tui.app import PipedeckApp
from tui.screens.merged import MergedScreen
from tui.screens.summary import SummaryScreen
from tui.widgets.log_view import LogView


def replay(root: Path, *more: object) -> PipedeckApp:
    return PipedeckApp(job_scenario(root, *more), clock=lambda: T0 + 9.0)  # type: ignore[arg-type]


async def open_screen(pilot: Pilot[int], key: str, kind: type[Screen[None]]) -> Screen[None]:
    """Once the replay ran, press `key`; wait for the screen `kind` it opens."""
    app = pilot.app
    await until(pilot, lambda: status(app, "build") == RUNNING, "the replay")  # type: ignore[arg-type]
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, kind), kind.__name__)
    return app.screen


def step_label(app: PipedeckApp, index: int) -> str:
    return str(tree_of(app).step_node("build", index).label)


async def test_steps_are_rows_under_their_job_with_status_and_duration(tmp_path: Path):
    app = replay(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "build") == RUNNING, "the replay")
        job = tree_of(app).node_for("build")
        await until(pilot, lambda: len(job.children) == 2, "the step rows")
        assert list(job.children) == [tree_of(app).step_node("build", i) for i in (0, 1)]
        assert step_label(app, 0) == "✔ Checkout    1.5s"  # in the jobs' duration column
        assert step_label(app, 1) == "▶ Run tests   7.0s"  # ticking from its start at T0 + 2
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
        assert step_label(app, 0) == "▶ Checkout    1.0s"


async def test_the_jobs_log_shows_step_markers_as_headers_and_stores_them_exact(tmp_path):
    app = replay(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        view = log_of(app)  # the cursor is on `build`: its whole log
        await until(pilot, lambda: view.line_count == len(JOB_LOG), "the job's log")
        await until(pilot, lambda: "▶ step 2 Run tests" in shown(view), "the running step's header")
        rows = shown(view)
        assert "✔ step 1 Checkout: succeeded in 1.5s" in rows
        assert rows[-3:] == [
            "▾ Run tests",
            "collected 12 items",
            "tests/test_cart.py ............",
        ]
        assert not any("##pipedeck[" in row for row in rows)
        view.go_to(0)
        await until(pilot, lambda: shown(view)[0] == "▶ step 1 Checkout", "the first step's header")
        store = app.run_screen.run.logs.reader(RUN_ID, "build", 1)
        assert store.lines(0, 1)[0][1] == JOB_LOG[0][1]  # the marker, as the runner printed it
        assert store.read_bytes().count(STEP_MARKER.encode()) == 3


async def test_selecting_a_step_shows_only_its_own_lines(tmp_path: Path):
    app = replay(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: len(tree_of(app).node_for("build").children) == 2, "the rows")
        view = log_of(app)
        await until(pilot, lambda: view.line_count == len(JOB_LOG), "the job's log")
        await pilot.press("j")  # from the job onto its first step: it has ended
        assert tree_of(app).selected_step == 0
        await until(pilot, lambda: view.line_count == 82, "the first step's 82 lines")
        assert view.border_title == "build · step 1 Checkout · succeeded"
        view.go_to(0)
        await until(pilot, lambda: shown(view)[0] == "▾ Checkout", "its first line")
        assert shown(view)[1] == "checkout line 0"
        view.action_follow_end()
        await until(pilot, lambda: shown(view)[-1] == "╰", "its last line")
        assert shown(view)[-2] == "checkout line 79"
        await pilot.press("j")  # the second step: running, its lines up to the log's end
        await until(pilot, lambda: view.line_count == 3, "the running step's lines")
        assert shown(view) == [
            "▾ Run tests",
            "collected 12 items",
            "tests/test_cart.py ............",
        ]
        assert view.border_title == "build · step 2 Run tests · running"
        await pilot.press("k", "k")  # back on the job: its whole log again
        await until(pilot, lambda: view.line_count == len(JOB_LOG), "the job's whole log")


async def test_the_merged_log_shows_step_headers(tmp_path: Path):
    app = replay(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        view = (await open_screen(pilot, "m", MergedScreen)).query_one(LogView)
        await until(pilot, lambda: view.line_count == len(JOB_LOG), "the job's lines")
        rows = [" ".join(row.split()) for row in shown(view)]  # the name column's padding out
        assert "build │ ✔ step 1 Checkout: succeeded in 1.5s" in rows
        assert "build │ ▶ step 2 Run tests" in rows
        assert not any("##pipedeck[" in row for row in rows)


async def test_a_matrix_instance_holds_its_own_steps(tmp_path: Path):
    app = replay(tmp_path, StepStatus(RUN_ID, "test[py=b]", 1, 0, "Lint", SUCCEEDED, duration=0.3))
    async with app.run_test(size=(100, 30)) as pilot:
        instance = tree_of(app).node_for("test[py=b]")
        await until(pilot, lambda: len(instance.children) == 1, "the instance's step row")
        assert instance.is_expanded
        assert str(instance.children[0].label) == "✔ Lint      0.3s"
        assert not tree_of(app).node_for("test[py=a]").children


def rows(app: PipedeckApp) -> list[str]:
    """The tree's rows as drawn: guides, expand arrows, labels."""
    tree = tree_of(app)
    return [tree.render_line(y).text.rstrip() for y in range(tree.size.height)]


async def test_a_job_has_no_expand_arrow_until_its_first_step(tmp_path: Path):
    app = replay(tmp_path, StepStatus(RUN_ID, "test[py=b]", 1, 0, "Lint", SUCCEEDED, duration=0.3))
    async with app.run_test(size=(100, 30)) as pilot:
        tree = tree_of(app)
        await until(pilot, lambda: len(tree.node_for("test[py=b]").children) == 1, "py=b's step")
        await until(pilot, lambda: "✔ Lint" in "".join(rows(app)), "its row drawn")
        drawn = rows(app)
        pending = next(row for row in drawn if "py=a" in row)  # a job without steps yet
        with_step = next(row for row in drawn if "py=b" in row)
        assert pending == "├   · py=a", drawn  # no arrow: nothing to expand
        assert with_step.startswith("└ ▼ · py=b"), drawn
        assert pending.index("py=a") == with_step.index("py=b")  # the name stays put
        assert not tree.node_for("test[py=a]").allow_expand
        assert tree.node_for("test[py=b]").allow_expand


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
async def test_step_durations_end_in_the_job_rows_column(tmp_path: Path, size: tuple[int, int]):
    """A step row's duration is right-aligned in the column of its job's (and every stage's);
    a step name longer than the tree has room for is shortened, the duration stays."""
    app = replay(
        tmp_path,
        recorded("test[py=a]", SUCCEEDED, 3.0, duration=0.5),
        StepStatus(RUN_ID, "test[py=a]", 1, 0, "Set up Python 3.12", SUCCEEDED, duration=0.3),
    )
    async with app.run_test(size=size) as pilot:
        tree = tree_of(app)
        await until(pilot, lambda: any(row.endswith("0.3s") for row in rows(app)), "the rows")
        drawn = [row for row in rows(app) if row]
        durations = {"build": "8.9s", "Checkout": "1.5s", "Run tests": "7.0s", "py=a": "0.5s",
                     "Set up": "0.3s"}  # fmt: skip
        ends = {}
        for name, took in durations.items():
            row = next(row for row in drawn if f" {name}" in row)
            assert row.count(took) == 1, (name, drawn)
            ends[name] = row.index(took) + len(took)
        assert len(set(ends.values())) == 1, (ends, drawn)
        assert all(len(row) <= tree.scrollable_content_region.width for row in drawn), drawn
        step = next(row for row in drawn if "Set up" in row)
        if size[0] >= 160:
            assert "Set up Python 3.12 " in step, drawn
        else:  # shortened where its name column ends
            assert "…" in step and "3.12" not in step, drawn


async def test_S_shows_the_jobs_step_summary_as_markdown(tmp_path: Path):
    app = replay(tmp_path)
    text = "# Coverage\n\n| file | % |\n|---|---|\n| shop.py | 91 |\n"
    folder = app.run_screen.pipeline.state_dir / "gha" / RUN_ID / "summary"
    folder.mkdir(parents=True)
    (folder / "build.md").write_text(text)
    async with app.run_test(size=(100, 30)) as pilot:
        markdown = (await open_screen(pilot, "S", SummaryScreen)).query_one(Markdown)  # `build`'s
        await until(pilot, lambda: markdown.source == text, "the summary's text")
        await until(pilot, lambda: bool(markdown.query("MarkdownTable")), "its table")
        assert str(app.screen.query_one("#summary-title", Label).content) == "step summary of build"
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.run_screen, "the run screen again")


async def test_S_says_when_a_job_wrote_no_summary(tmp_path: Path):
    app = replay(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        markdown = (await open_screen(pilot, "S", SummaryScreen)).query_one(Markdown)
        await until(pilot, lambda: "no step summary" in markdown.source, "the note")


async def test_a_failure_continue_on_error_allows_looks_allowed(tmp_path: Path):
    app = replay(
        tmp_path,
        StepStatus(RUN_ID, "test[py=a]", 1, 0, "Lint", FAILED, 0.3, 1, allowed=True),
        StepStatus(RUN_ID, "test[py=b]", 1, 0, "Lint", FAILED, 0.3, 1),
    )
    async with app.run_test(size=(100, 30)) as pilot:
        tree = tree_of(app)
        await until(pilot, lambda: len(tree.node_for("test[py=b]").children) == 1, "the rows")
        allowed = tree.node_for("test[py=a]").children[0].label
        failed = tree.node_for("test[py=b]").children[0].label
        assert str(allowed).startswith("✗ Lint") and str(failed).startswith("✘ Lint")
        assert allowed.spans[0].style != failed.spans[0].style  # the warning colour, not red


async def test_in_a_tree_too_narrow_for_the_column_step_durations_end_at_its_edge(tmp_path):
    """A matrix instance's name wider than the tree: the job's and its steps' durations end at
    the tree's edge, together, never cut off."""
    text = JOB_PIPELINE.replace("{py: [a, b]}", "{os: [ubuntu-latest-with-a-long-name]}")
    ends = [recorded("build", SUCCEEDED, 8.5, duration=8.4)]
    app = PipedeckApp(job_scenario(tmp_path, *ends, text=text), clock=lambda: T0 + 9.0)  # type: ignore[arg-type]
    async with app.run_test(size=(80, 12)) as pilot:
        await until(pilot, lambda: rows(app)[0].endswith("8.4s"), "the job's duration")
        await until(pilot, lambda: rows(app)[2].endswith("7.0s"), "the steps' durations")
        job, first, second = rows(app)[:3]
        assert first.endswith("1.5s") and "Checkout" in first
        assert len(job) == len(first) == len(second), rows(app)
        assert len(job) <= tree_of(app).scrollable_content_region.width
