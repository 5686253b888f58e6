"""Pilot tests of the views the run screen opens: timeline (T), DAG (D), merged log (m)."""

from __future__ import annotations

import pytest
from textual import events
from textual.app import App, ComposeResult
from textual.strip import Strip
from textual.widgets import Input

from engine.events import FAILED, RUNNING, SUCCEEDED
from tests.tui.conftest import log_of, shown, status, tree_of, until
from tui.screens.dag import DagScreen
from tui.screens.merged import MergedScreen
from tui.screens.run import RunScreen
from tui.screens.timeline import TimelineScreen
from tui.widgets.dag import Dag, layout
from tui.widgets.keybar import KeyBar
from tui.widgets.log_view import LogView
from tui.widgets.status import StageView
from tui.widgets.timeline import QUEUED_CELL, RUN_CELL, Span, Spans, Timeline, critical_path

CHAIN = """\
version: 1
name: chain
stages:
  a:  # ends after quick whatever the machine's load: the critical path is a, b, slow
    run: until test -f quick.done; do sleep 0.05; done; sleep 0.5; echo a
  quick:
    run: echo quick; touch quick.done
  b:
    needs: [a, quick]
    run: sleep 0.3; echo b
  slow:
    needs: [b]
    run: |
      echo slow
      until test -f go; do sleep 0.05; done
"""


def rows(widget) -> list[str]:
    return [widget.render_line(y).text.rstrip() for y in range(widget.size.height)]


async def test_T_opens_a_live_timeline_with_the_critical_path_and_esc_closes_it(make_app):
    app = make_app(CHAIN)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: status(app, "slow") == RUNNING, "slow to run")
        await pilot.press("T")
        assert isinstance(app.screen, TimelineScreen)
        timeline = app.screen.query_one(Timeline)
        await until(pilot, lambda: len(timeline.rows) == 4, "four bars")
        assert [s.stage for s in timeline.rows][-1] == "slow"
        assert timeline.critical[-2:] == ["b", "slow"]
        drawn = rows(timeline)
        slow_row = next(r for r in drawn if " slow" in r)
        assert slow_row.startswith("◆") and RUN_CELL in slow_row
        quick_row = next(r for r in drawn if " quick" in r)
        assert not quick_row.startswith("◆")
        # live: the running bar grows with the clock
        before = slow_row.count(RUN_CELL)
        (app.run_screen.run.pipeline.workspace / "go").write_text("")
        await until(pilot, lambda: status(app, "slow") == SUCCEEDED, "slow to end")
        await pilot.pause(0.3)
        assert "critical path: " in str(app.screen.query_one("#timeline-title").render())
        assert next(r for r in rows(timeline) if " slow" in r).count(RUN_CELL) >= before
        await pilot.press("escape")
        assert isinstance(app.screen, RunScreen)


class TimelineApp(App[None]):
    def __init__(self, spans: Spans, needs: dict[str, tuple[str, ...]], now: float) -> None:
        super().__init__()
        self.spans, self.needs, self.now = spans, needs, now

    def compose(self) -> ComposeResult:
        yield Timeline(self.spans, self.needs, self.now)


async def test_queued_time_is_shaded_apart_from_running_time():
    spans = Spans()
    spans.add(Span("waited", 1, SUCCEEDED, queued=0.0, started=5.0, ended=10.0))
    spans.add(Span("direct", 1, SUCCEEDED, started=0.0, ended=10.0))
    app = TimelineApp(spans, {}, 10.0)
    async with app.run_test(size=(80, 10)):
        drawn = rows(app.query_one(Timeline))
    waited = next(r for r in drawn if "waited" in r)
    direct = next(r for r in drawn if "direct" in r)
    bar = waited[waited.index(QUEUED_CELL) :]
    assert bar.startswith(QUEUED_CELL * 20) and RUN_CELL * 20 in bar
    assert bar.rstrip(" 0123456789.s").endswith(RUN_CELL)
    assert QUEUED_CELL not in direct
    assert drawn[0].strip().startswith("|0.0s")  # the axis


async def test_a_thousand_attempts_fit_the_window_and_scroll():
    spans = Spans()
    for i in range(1000):
        spans.add(Span(f"s{i:04d}", 1, SUCCEEDED, started=float(i), ended=float(i + 1)))
    needs = {f"s{i:04d}": (f"s{i - 1:04d}",) for i in range(1, 1000)}
    app = TimelineApp(spans, needs, 1000.0)
    async with app.run_test(size=(100, 20)) as pilot:
        timeline = app.query_one(Timeline)
        assert len(timeline.critical) == 1000
        assert timeline.virtual_size.height == 1001
        assert max(len(r) for r in rows(timeline)) <= 100
        timeline.focus()
        await pilot.press("end")
        await until(pilot, lambda: "s0999" in "".join(rows(timeline)), "the last row")
        assert rows(timeline)[0].strip().startswith("|0.0s")  # the axis stays on top


def test_critical_path_follows_the_need_that_ended_last():
    spans = [
        Span("lint", 1, SUCCEEDED, started=0, ended=1),
        Span("build", 1, SUCCEEDED, started=0, ended=5),
        Span("test", 1, FAILED, started=5, ended=9),
        Span("docs", 1, SUCCEEDED, started=1, ended=3),
    ]
    needs = {"test": ("lint", "build"), "docs": ("lint",)}
    assert critical_path(spans, needs, 9) == ["build", "test"]


TALK = """\
version: 1
name: talk
stages:
  alpha:
    run: |
      echo "alpha one"
      until grep -qs "beta one" .pipedeck/logs/*/beta/1.log; do sleep 0.02; done
      echo "alpha two error here"
  beta:
    run: |
      until grep -qs "alpha one" .pipedeck/logs/*/alpha/1.log; do sleep 0.02; done
      echo "beta one" >&2
"""


async def test_m_merges_every_stage_in_arrival_order_filters_searches_and_esc_closes(make_app):
    app = make_app(TALK)
    async with app.run_test(size=(100, 24)) as pilot:
        await until(pilot, lambda: status(app, "alpha") == SUCCEEDED, "alpha to finish")
        await until(pilot, lambda: status(app, "beta") == SUCCEEDED, "beta to finish")
        await pilot.press("m")
        assert isinstance(app.screen, MergedScreen)
        log = app.screen.query_one("#merged", LogView)
        await until(pilot, lambda: log.line_count == 3, "three merged lines")
        assert shown(log) == [
            "alpha   │ alpha one",
            "beta    │ beta one",
            "alpha   │ alpha two error here",
        ]
        # each prefix has its stage's colour, different per stage; stderr keeps its tint
        alpha = log.render_line(0)._segments[0].style.color
        beta = log.render_line(1)._segments[0].style.color
        assert alpha and beta and alpha != beta
        # filter by stage
        await pilot.press("s", *"beta", "enter")
        await until(pilot, lambda: log.line_count == 1, "only beta")
        assert shown(log) == ["beta    │ beta one"]
        await pilot.press("s", "ctrl+u", "enter")
        await until(pilot, lambda: log.line_count == 3, "every stage again")
        # search works here too, and keys typed at once after / are the search
        for char in "/error":
            app.post_message(events.Key("slash" if char == "/" else char, char))
        await pilot.pause(0.1)
        await pilot.press("enter")
        await until(pilot, lambda: log.search and log.search.matches == [2], "the match")
        await pilot.press("escape")  # clears the search
        assert log.search is None and isinstance(app.screen, MergedScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, RunScreen)


async def test_merged_log_reads_only_the_screen_from_the_store(make_app):
    app = make_app(
        "version: 1\nname: flood\nstages:\n  flood:\n    run: seq 1 200000\n  other:\n    run: echo other\n"
    )
    async with app.run_test(size=(100, 24)) as pilot:
        await until(pilot, lambda: status(app, "flood") == SUCCEEDED, "the flood")
        await pilot.press("m")
        log = app.screen.query_one("#merged", LogView)
        await until(pilot, lambda: log.line_count == 200001, "every line counted")
        assert len(log._lines) <= 2048  # the view's line cache, not the log
        arrivals = app.run_screen.arrivals
        assert len(arrivals.chunk_key) < 2000  # a record per chunk, not per line
        assert any("200000" in row for row in shown(log)) or log.follow


DIAMOND = """\
version: 1
name: diamond
stages:
  fetch:
    run: echo fetch
  lint:
    needs: [fetch]
    run: echo lint
  build:
    needs: [fetch]
    run: echo build
  package:
    needs: [build]
    run: echo package
  release:
    needs: [lint, package]
    run: echo released
"""


def test_layout_layers_by_longest_need_chain_and_routes_skips_through_dummies():
    plan = layout({"fetch": (), "lint": ("fetch",), "build": ("fetch",),
                   "package": ("build",), "release": ("lint", "package")})  # fmt: skip
    assert plan.layers == [["fetch"], ["lint", "build"], ["~lint~release~2", "package"],
                           ["release"]]  # fmt: skip
    assert plan.above["release"] == ["~lint~release~2", "package"]
    xs = [plan.boxes[n].x for n in ("fetch", "build", "package", "release")]
    assert xs == sorted(xs) and len(set(xs)) == 4  # left to right, one column per layer
    # boxes never overlap
    regions = [r for n, r in plan.boxes.items() if not n.startswith("~")]
    assert all(not a.overlaps(b) for i, a in enumerate(regions) for b in regions[i + 1 :])


async def test_D_draws_boxes_in_status_colours_and_enter_opens_the_log(make_app):
    app = make_app(DIAMOND)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: status(app, "release") == SUCCEEDED, "the run")
        await pilot.press("D")
        assert isinstance(app.screen, DagScreen)
        dag = app.screen.query_one(Dag)
        await pilot.pause()
        text = "\n".join(rows(dag))
        for stage in ("fetch", "lint", "build", "package", "release"):
            assert f"✔ {stage}" in text
        assert "╭" in text and "▶" in text and "─" in text
        box = dag.plan.boxes["release"]
        colour = (
            dag.render_line(box.y + 1 - int(dag.scroll_y))
            .crop(box.x - int(dag.scroll_x) + 3, box.x - int(dag.scroll_x) + 4)
            ._segments[0]
            .style.color
        )
        assert colour is not None and colour == dag.get_component_rich_style("dag--succeeded").color
        assert dag.selected == "fetch"  # the tree's selection
        await pilot.press("right", "right", "right")
        assert dag.selected == "release"
        await pilot.press("enter")
        assert isinstance(app.screen, RunScreen)
        assert tree_of(app).selected_ids == ["release"]
        await until(pilot, lambda: shown(log_of(app)) == ["released"], "release's log")
        assert app.focused is log_of(app)
        await pilot.press("D", "escape")
        assert isinstance(app.screen, RunScreen)


class CountingDag(Dag):
    """A `Dag` that counts the rows it draws."""

    drawn = 0

    def _strip(self, row: list[tuple[str, str]]) -> Strip:
        CountingDag.drawn += 1
        return super()._strip(row)


class DagApp(App[None]):
    def __init__(self, needs: dict[str, tuple[str, ...]]) -> None:
        super().__init__()
        self.needs = needs
        self.animation_level = "none"  # `end` jumps: no frames in between

    def compose(self) -> ComposeResult:
        yield CountingDag(self.needs, {sid: StageView() for sid in self.needs})


async def test_a_thousand_stage_dag_draws_only_the_rows_on_screen():
    needs: dict[str, tuple[str, ...]] = {f"s{i:04d}": () for i in range(1000)}  # 4000 rows
    app = DagApp(needs)
    CountingDag.drawn = 0
    async with app.run_test(size=(80, 24)) as pilot:
        dag = app.query_one(CountingDag)
        await pilot.pause()
        assert dag.virtual_size.height == 4000
        assert "s0000" in "".join(rows(dag)) and CountingDag.drawn <= 2 * 24
        dag.focus()
        await pilot.press("end")
        await until(pilot, lambda: "s0999" in "".join(rows(dag)), "the last box")
        assert CountingDag.drawn <= 5 * 24


def _visible(app, widget) -> bool:
    """True when `widget`'s first cell is drawn on top (not under a docked bar)."""
    region = widget.region
    return region.height > 0 and app.screen.get_widget_at(region.x, region.y)[0] is widget


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_every_input_box_shows_above_the_key_bar(make_app, size):
    app = make_app(TALK)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: status(app, "beta") == SUCCEEDED, "beta to finish")
        await pilot.press("slash")  # the run screen's search
        box = app.screen.query_one("#search", Input)
        await until(pilot, lambda: _visible(app, box), "the run screen's search box")
        await pilot.press("escape", "m", "s")  # the merged log's stage filter, then search
        box = app.screen.query_one("#filter", Input)
        await until(pilot, lambda: _visible(app, box), "the stage filter box")
        await pilot.press(*"bet")
        assert box.value == "bet" and _visible(app, box)
        await pilot.press("enter", "slash")
        box = app.screen.query_one("#search", Input)
        await until(pilot, lambda: _visible(app, box), "the merged log's search box")
        assert _visible(app, app.screen.query_one(KeyBar))
