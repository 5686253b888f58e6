"""What the tree rows say beyond the status: what a pending stage waits for, estimates from the
history, failures allowed by `allow_failure`, and an attempt that is never cut off."""

from __future__ import annotations

from engine.events import FAILED, PENDING, RUNNING, SKIPPED, SUCCEEDED
from tests.tui.conftest import label, log_of, screen_of, status, tree_of, until
from tests.tui.replay import JOB_PIPELINE, T0, job_scenario
from tests.tui.replay import status as recorded
from tui.app import PipedeckApp
from tui.widgets.header import RunHeader

WAITS = """\
version: 1
name: waits
stages:
  build:
    run: until test -f go; do sleep 0.05; done
  lint:
    run: until test -f go; do sleep 0.05; done
  test:
    needs: [build, lint]
    run: echo test
"""

TIMED = """\
version: 1
name: timed
stages:
  work:
    run: until test -f go; do sleep 0.05; done
"""

ALLOWED = """\
version: 1
name: allowed
stages:
  flaky:
    allow_failure: true
    run: exit 3
  broken:
    run: exit 4
"""


async def test_pending_rows_say_what_they_wait_for(make_app):
    app = make_app(WAITS)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "build") == RUNNING, "build to run")
        assert status(app, "test") == PENDING
        assert label(app, "test").endswith("waits for build, lint")
        (app.run_screen.run.pipeline.workspace / "go").write_text("")
        await until(pilot, lambda: status(app, "test") == SUCCEEDED, "test to run")
        # rows are redrawn at the frame rate, after the status they show
        await until(pilot, lambda: "waits for" not in label(app, "test"), "the row without it")


async def test_running_rows_and_header_show_the_history_estimate(make_app, tmp_path):
    (tmp_path / "go").write_text("")
    first = make_app(TIMED)
    async with first.run_test(size=(100, 30)) as pilot:  # one recorded run: the history
        await until(pilot, lambda: status(first, "work") == SUCCEEDED, "the first run")
        await pilot.press("q")
    (tmp_path / "go").unlink()
    app = make_app(TIMED)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "work") == RUNNING, "work to run")
        await until(pilot, lambda: "s of ~" in label(app, "work"), "the estimate in the row")
        estimate = tree_of(app).estimates["work"]
        assert estimate > 0
        header = app.run_screen.query_one(RunHeader)
        await until(pilot, lambda: " of ~" in str(header.render()), "the run's estimate")
        (tmp_path / "go").write_text("")
        await until(pilot, lambda: status(app, "work") == SUCCEEDED, "work to end")
        await until(pilot, lambda: " of ~" not in label(app, "work"), "the row without it")


async def test_no_run_estimate_while_a_stage_that_will_run_has_no_history(make_app, tmp_path):
    (tmp_path / "go").write_text("")
    first = make_app(TIMED)
    async with first.run_test(size=(100, 30)) as pilot:  # history for `work` only
        await until(pilot, lambda: status(first, "work") == SUCCEEDED, "the first run")
        await pilot.press("q")
    (tmp_path / "go").unlink()
    app = make_app(TIMED + "  new:\n    run: echo new\n  gate:\n    when: manual\n    run: echo\n")
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: "s of ~" in label(app, "work"), "work's own estimate")
        header = str(app.run_screen.query_one(RunHeader).render())
        assert " of ~" not in header  # `new` never ran: the run's length is unknown
        (tmp_path / "go").write_text("")
        await until(pilot, lambda: status(app, "gate") == "waiting", "the run to wait at the gate")
    app = make_app(TIMED + "  new:\n    run: echo new\n  gate:\n    when: manual\n    run: echo\n")
    (tmp_path / "go").unlink()
    async with app.run_test(size=(100, 30)) as pilot:  # `new` has a median now; `gate` may wait
        await until(pilot, lambda: status(app, "work") == RUNNING, "work to run")
        header = app.run_screen.query_one(RunHeader)
        await until(pilot, lambda: " of ~" in str(header.render()), "the run's estimate")
        (tmp_path / "go").write_text("")


async def test_failures_allowed_by_allow_failure_look_different(make_app):
    app = make_app(ALLOWED)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "broken") == FAILED, "broken to fail")
        await until(pilot, lambda: status(app, "flaky") == FAILED, "flaky to fail")
        await pilot.pause(0.1)
        flaky, broken = label(app, "flaky"), label(app, "broken")
        assert flaky.startswith("✗ flaky") and "allowed to fail" in flaky
        assert broken.startswith("✘ broken") and "allowed" not in broken
        header = app.run_screen.query_one(RunHeader)  # counted apart there too
        await until(pilot, lambda: "✘ 1  ✗ 1" in str(header.render()), "the counts")
        await pilot.resize_terminal(120, 30)  # wide: counts are named
        await until(
            pilot, lambda: "✘ 1 failed  ✗ 1 allowed to fail" in str(header.render()), "names"
        )
        tree = tree_of(app)
        style = tree.node_for("flaky").label.spans[0].style
        assert style.color == tree.get_component_rich_style("stage-tree--allowed").color
        assert style.color != tree.get_component_rich_style("stage-tree--failed").color
        # and the log pane's title says so too
        for sid, title in (("flaky", "flaky · failed (allowed): exit code 3"),
                           ("broken", "broken · failed: exit code 4")):  # fmt: skip
            tree.select_stage(sid)
            await until(pilot, lambda t=title: str(log_of(app).border_title) == t, title)


async def test_the_attempt_is_never_cut_off_in_a_narrow_tree(make_app):
    app = make_app(
        "version: 1\nname: narrow\nhosts:\n  box-with-a-long-name:\n    address: 127.0.0.1\n"
        "stages:\n  a-stage-with-a-long-name:\n    retries: 2\n    run: exit 1\n"
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until(
            pilot, lambda: screen_of(app).views["a-stage-with-a-long-name"].attempt == 3, "3 tries"
        )
        await until(pilot, lambda: status(app, "a-stage-with-a-long-name") == FAILED, "the end")
        tree = tree_of(app)

        def row() -> str:
            return tree.render_line(0).text.rstrip()

        await until(pilot, lambda: row().startswith("✘"), "the failed row drawn")
        assert row().endswith(" 3/3") and "a-stage" in row(), row()
        assert len(row()) <= tree.scrollable_content_region.width


async def test_a_thousand_labels_redraw_those_on_screen_first_then_a_chunk_per_frame(make_app):
    app = make_app(
        "version: 1\nname: big\nstages:\n"
        + "".join(f"  s{i:04d}:\n    run: 'true'\n" for i in range(1000)),
        start=False,
    )
    async with app.run_test(size=(100, 30)) as pilot:
        tree = tree_of(app)
        await until(pilot, lambda: label(app, "s0999").startswith("· s0999"), "every label")
        tree.scroll_to(y=500, animate=False, immediate=True)
        await pilot.pause()
        for view in screen_of(app).views.values():
            view.status = SKIPPED
        tree.refresh_all(0.0)
        assert label(app, "s0510").startswith("↷ s0510")  # on screen: at once
        assert label(app, "s0999").startswith("· s0999")  # off screen: in a later frame
        await until(pilot, lambda: label(app, "s0999").startswith("↷ s0999"), "the last label")


async def test_durations_are_never_cut_by_the_scrollbar_rows_bring(tmp_path):
    """Step rows arriving make the tree scroll: every label is fitted again beside the bar."""
    text = JOB_PIPELINE.replace("{py: [a, b]}", "{os: [ubuntu-latest-with-a-long-name]}")
    ends = [
        recorded("test[os=ubuntu-latest-with-a-long-name]", SUCCEEDED, 3.0, duration=0.5),
        recorded("build", SUCCEEDED, 8.5, duration=8.4),
    ]
    run = job_scenario(tmp_path, *ends, text=text)
    app = PipedeckApp(run, clock=lambda: T0 + 9.0)  # type: ignore[arg-type]
    async with app.run_test(size=(80, 8)) as pilot:
        tree = tree_of(app)
        await until(pilot, lambda: tree.show_vertical_scrollbar, "the scrollbar")

        def rows() -> list[str]:
            return [tree.render_line(y).text.rstrip() for y in range(tree.size.height)]

        await until(pilot, lambda: rows()[0].endswith("8.4s"), "the job's duration")
        width = tree.scrollable_content_region.width
        assert all(len(row) <= width for row in rows()), (width, rows())
