"""The TUI's exit code after a person cancelled the run: interrupted (130, SPEC §3), never 1,
which is kept for a stage that failed, timed out or was lost."""

from __future__ import annotations

from engine.events import CANCELLED, RUNNING
from tests.tui.conftest import status, until

SLOW = """\
version: 1
stages:
  slow: {kill_grace: 0.2s, run: 'echo started; sleep 30'}
  after: {needs: [slow], run: echo never}
"""


async def test_cancel_all_then_q_exits_130(make_app):
    app = make_app(SLOW)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "slow") == RUNNING, "slow to start")
        await pilot.press("C")
        await until(pilot, lambda: not app.run_screen.run.running, "the run to end")
        await pilot.press("q")
        await until(pilot, lambda: app.return_code is not None, "the app to exit")
    assert status(app, "slow") == CANCELLED
    assert app.return_value == 130


async def test_q_on_a_running_run_cancels_it_and_exits_130(make_app):
    app = make_app(SLOW)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "slow") == RUNNING, "slow to start")
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("y")
        await until(pilot, lambda: app.return_code is not None, "the app to exit")
    assert app.return_value == 130
