"""Helpers for TUI tests: apps over real runs of pipelines written to tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from engine.loader import load
from engine.session import Session
from tests import waiting
from tui.app import PipedeckApp
from tui.screens.run import RunScreen
from tui.widgets.log_view import LogView
from tui.widgets.stage_tree import StageTree

BASIC = """\
version: 1
name: basic
stages:
  build:
    run: |
      echo building
      echo oops >&2
  test:
    needs: [build]
    matrix:
      py: ["a", "b"]
    run: echo "test ${{ matrix.py }}"
  deploy:
    needs: [test]
    when: manual
    run: echo deployed
"""


@pytest.fixture
def make_app(write_pipeline: Callable[[str], Path]) -> Callable[..., PipedeckApp]:
    """An app over a new `Run` of the pipeline `text` (written to tmp_path)."""

    def make(text: str = BASIC, *, start: bool = True, watch: bool = False) -> PipedeckApp:
        session = Session(load(write_pipeline(text)), manual="wait")
        return PipedeckApp(
            session.new_run(), start=start, watch=watch, make_run=session.new_run, session=session
        )

    return make


async def until(
    pilot: Pilot[int], check: Callable[[], object], what: str, timeout: float = 20.0
) -> None:
    """Let the app run (and draw) until `check()` is true (fails after `timeout` seconds)."""
    await waiting.until(check, what, timeout, pause=pilot.pause)


def screen_of(app: PipedeckApp) -> RunScreen:
    return app.run_screen


def tree_of(app: PipedeckApp) -> StageTree:
    return app.run_screen.query_one(StageTree)


def log_of(app: PipedeckApp, which: str = "log") -> LogView:
    return app.run_screen.query_one(f"#{which}", LogView)


def label(app: PipedeckApp, key: str) -> str:
    """The tree label of a stage, as plain text."""
    return str(tree_of(app).node_for(key).label)


def shown(view: LogView) -> list[str]:
    """The text rows the log view draws now (trailing blanks dropped)."""
    rows = [view.render_line(y).text.rstrip() for y in range(view.scrollable_content_region.height)]
    while rows and not rows[-1]:
        rows.pop()
    return rows


def status(app: PipedeckApp, sid: str) -> str:
    return app.run_screen.views[sid].status
