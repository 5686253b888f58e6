"""Pilot tests of SPEC §10 in the TUI: `i` types into a tty stage, services in the tree."""

from __future__ import annotations

from engine.events import READY, RUNNING
from engine.loader import load
from engine.ptyproc import TERMINALS
from engine.session import Session
from tests.conftest import marked_pids
from tests.tui.conftest import label, log_of, screen_of, shown, status, tree_of, until
from tui.app import PipedeckApp
from tui.screens.tty_input import TypeInto, key_bytes
from tui.widgets.header import RunHeader

ASK = """\
version: 1
name: ask
stages:
  ask:
    tty: true
    run: |
      printf 'name?\\n'
      read -r name
      echo "hello $name"
      stty size
  plain:
    run: echo plain
"""

SERVICE = """\
version: 1
name: svc
stages:
  api:
    service: true
    kill_grace: 1s
    run: |
      echo "serving on $PIPEDECK_ATTEMPT"
      exec sleep 60
    ready: {log: "serving on"}
  test:
    needs: [api]
    run: echo tested
"""


TWO_SERVICES = (
    SERVICE.replace("name: svc", "name: two")
    + """\
  queue:
    service: true
    kill_grace: 1s
    run: |
      until test -f go; do sleep 0.05; done
      echo "queue ready"
      exec sleep 60
    ready: {log: "queue ready", timeout: 60s}
"""
)


def test_keys_become_terminal_bytes() -> None:
    assert key_bytes("a", "a") == b"a"
    assert key_bytes("enter", "\r") == b"\r"
    assert key_bytes("ctrl+c", None) == b"\x03"
    assert key_bytes("up", None) == b"\x1b[A"
    assert key_bytes("f5", None) == b""


async def test_i_types_into_a_tty_stage_sized_to_the_log_pane_until_escape(make_app):
    app = make_app(ASK)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "ask") == RUNNING, "ask to start")
        pane = log_of(app).size
        tree_of(app).select_stage("ask")
        await until(pilot, lambda: "name?" in shown(log_of(app)), "the prompt")
        await pilot.press("i")
        assert isinstance(app.screen.focused, TypeInto)
        await pilot.press("b", "o", "b", "enter")
        await until(pilot, lambda: "hello bob" in shown(log_of(app)), "the answer")
        await until(pilot, lambda: f"{pane.height} {pane.width}" in shown(log_of(app)), "size")
        await pilot.press("escape")
        assert not app.screen.query(TypeInto)
        run = screen_of(app).run
        await until(pilot, lambda: not run.running, "the run to end")
        assert TERMINALS.find(run.run_id, "ask") is None
        await pilot.press("i")  # the stage has ended: nothing to type into
        assert not app.screen.query(TypeInto)
        tree_of(app).select_stage("plain")
        await pilot.press("i")
        assert not app.screen.query(TypeInto)


async def test_services_show_their_own_icon_and_ready_state_and_keep_running(write_pipeline):
    session = Session(load(write_pipeline(SERVICE)), manual="wait", keep_services=True)
    app = PipedeckApp(session.new_run(), make_run=session.new_run, session=session)  # as run_tui
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "test") == "succeeded", "the test to pass")
        assert status(app, "api") == READY
        # the label is redrawn on the next frame
        await until(pilot, lambda: label(app, "api").startswith("◉ api"), "api's ready icon")
        assert label(app, "api").endswith("ready")
        run = screen_of(app).run
        assert run.running  # the TUI keeps services running
        tree_of(app).select_stage("api")
        await pilot.press("r")  # what a change to its inputs does in watch mode
        await until(pilot, lambda: "serving on 2" in shown(log_of(app)), "the restart")
        await until(pilot, lambda: status(app, "api") == READY, "ready again")
        await until(pilot, lambda: status(app, "test") == "succeeded", "the test again")
        await pilot.press("C")
        await until(pilot, lambda: not run.running, "the run to stop")
        assert not marked_pids(run.run_id)


async def test_the_header_says_services_are_up_once_nothing_else_runs(write_pipeline):
    session = Session(load(write_pipeline(TWO_SERVICES)), manual="wait", keep_services=True)
    app = PipedeckApp(session.new_run(), make_run=session.new_run, session=session)
    async with app.run_test(size=(100, 30)) as pilot:
        header = app.run_screen.query_one(RunHeader)
        await until(pilot, lambda: status(app, "test") == "succeeded", "the test to pass")
        await until(pilot, lambda: "two  1 service up, 1 starting " in str(header.render()),
                    "one service up, the other starting")  # fmt: skip
        assert screen_of(app).run.running and status(app, "queue") == RUNNING
        (screen_of(app).pipeline.workspace / "go").write_text("")
        await until(pilot, lambda: "two  2 services up " in str(header.render()), "both up")
        await pilot.press("C")
        await until(pilot, lambda: "two  cancelled " in str(header.render()), "cancelled")
