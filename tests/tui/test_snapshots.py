"""Snapshot tests of the run screen, driven by recorded events with a fixed clock.

Regenerate after an intended change with `pytest tests/tui/test_snapshots.py --snapshot-update`
and look at the report before committing.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual.pilot import Pilot

from engine.events import StageStatus
from tests.tui.replay import T0, job_scenario, scenario
from tui.app import PipedeckApp
from tui.widgets.log_view import LogView
from tui.widgets.stage_tree import StageTree

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]
CLOCK = {"mid_run": 9.0, "failed": 13.0, "manual_waiting": 19.6, "remote": 9.0}


def replay_app(tmp_path: Path, name: str) -> PipedeckApp:
    run = scenario(tmp_path, name)
    return PipedeckApp(run, clock=lambda: T0 + CLOCK[name])  # type: ignore[arg-type]


def select(stage: str, search: str = ""):
    """A `run_before` that waits for the replay, selects `stage` and optionally searches."""

    async def run_before(pilot: Pilot[int]) -> None:
        screen = pilot.app.run_screen  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        last = [e for e in screen.run.events if isinstance(e, StageStatus)][-1]
        while screen.views[last.stage].status != last.status:  # the replay has been applied
            assert time.monotonic() < deadline, "the replay did not start"
            await pilot.pause(0.05)
        await pilot.pause(0.1)
        screen.query_one(StageTree).select_stage(stage)
        await pilot.pause(0.1)
        if search:
            await pilot.press("slash", *search, "enter")
            view = screen.query_one("#log", LogView)
            while view.search is None or view.search.scanned < view.line_count:
                assert time.monotonic() < deadline, "the search did not finish"
                await pilot.pause(0.05)
            screen.query_one(StageTree).focus()
        screen.sync()
        await pilot.pause(0.1)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_mid_run(snap_compare, tmp_path, size):
    app = replay_app(tmp_path, "mid_run")
    assert snap_compare(app, terminal_size=size, run_before=select("test[python=3.12]"))


@pytest.mark.parametrize("size", SIZES)
def test_after_a_failure(snap_compare, tmp_path, size):
    app = replay_app(tmp_path, "failed")
    assert snap_compare(app, terminal_size=size, run_before=select("test[python=3.12]"))


@pytest.mark.parametrize("size", SIZES)
def test_search_active(snap_compare, tmp_path, size):
    app = replay_app(tmp_path, "failed")
    assert snap_compare(app, terminal_size=size, run_before=select("lint", search="error"))


@pytest.mark.parametrize("size", SIZES)
def test_manual_stage_waiting(snap_compare, tmp_path, size):
    app = replay_app(tmp_path, "manual_waiting")
    assert snap_compare(app, terminal_size=size, run_before=select("deploy"))


def test_hosts_bar(snap_compare, tmp_path):
    """Two SSH hosts: one connected, one failed with its reason, in the bar under the header."""
    app = replay_app(tmp_path, "remote")
    assert snap_compare(app, terminal_size=(80, 24), run_before=select("build"))


def select_step(step: int):
    """A `run_before` that waits for the job replay and selects one of its steps."""
    ready = select("build")

    async def run_before(pilot: Pilot[int]) -> None:
        await ready(pilot)
        tree = pilot.app.run_screen.query_one(StageTree)  # type: ignore[attr-defined]
        tree.move_cursor(tree.step_node("build", step))
        await pilot.pause(0.2)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_job_steps(snap_compare, tmp_path, size):
    """A GitHub Actions job: its steps under it in the tree, its log with a header per step
    marker."""
    app = PipedeckApp(job_scenario(tmp_path), clock=lambda: T0 + 9.0)  # type: ignore[arg-type]
    assert snap_compare(app, terminal_size=size, run_before=select("build"))


def test_job_step_selected(snap_compare, tmp_path):
    """A step selected: only its own lines, its state in the log's title."""
    app = PipedeckApp(job_scenario(tmp_path), clock=lambda: T0 + 9.0)  # type: ignore[arg-type]
    assert snap_compare(app, terminal_size=(80, 24), run_before=select_step(0))


THEMES = [pytest.param("textual-dark", id="dark"), pytest.param("textual-light", id="light")]


def open_view(key: str, stage: str = "test[python=3.12]"):
    """A `run_before` that waits for the replay and opens a view."""
    ready = select(stage)

    async def run_before(pilot: Pilot[int]) -> None:
        await ready(pilot)
        if key:
            await pilot.press(key)
            await pilot.pause(0.3)

    return run_before


VIEWS = [  # (key, replay scenario)
    pytest.param("", "mid_run", id="run"),
    pytest.param("T", "mid_run", id="timeline"),
    pytest.param("D", "failed", id="dag"),
    pytest.param("m", "mid_run", id="merged"),
]


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("key", "scenario"), VIEWS)
def test_view(snap_compare, tmp_path, key, scenario, size, theme):
    """The run screen, the timeline (T), the DAG (D) and the merged log (m) over a recorded run."""
    app = replay_app(tmp_path, scenario)
    app.theme = theme  # before it runs: every widget draws in it from the start
    assert snap_compare(app, terminal_size=size, run_before=open_view(key))


def press_after(*keys: str):
    """A `run_before` that waits for the replay, then presses `keys` and waits for a frame."""
    ready = select("lint")

    async def run_before(pilot: Pilot[int]) -> None:
        await ready(pilot)
        for key in keys:  # one at a time: a box a key opens is there for the next (under load)
            await pilot.press(key)
            await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        await pilot.pause(0.1)

    return run_before


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    "keys",
    [
        pytest.param(("m", "s", *"lin"), id="merged-filter"),
        pytest.param(("m", "slash", *"err"), id="merged-search"),
        pytest.param(("question_mark",), id="help"),
    ],
)
def test_input_boxes_and_help(snap_compare, tmp_path, keys, size):
    """The merged log's stage filter and search boxes above the key bar; the help's columns."""
    app = replay_app(tmp_path, "mid_run")
    assert snap_compare(app, terminal_size=size, run_before=press_after(*keys))
