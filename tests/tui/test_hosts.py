"""The hosts bar: each SSH host's connection state, from real runs against a real sshd."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from engine.events import FAILED, SUCCEEDED, HostState
from tests.ssh.conftest import USER, Sshd
from tests.ssh.conftest import sshd as sshd  # the session's real OpenSSH server
from tests.tui.conftest import status, until
from tests.tui.replay import RUN_ID, T0, scenario
from tui.app import PipedeckApp
from tui.widgets.hosts import HostsBar


def pipeline(sshd: Sshd, port: int, stage: str = "echo hi from $(hostname)") -> str:
    """One local and one remote stage; host `lab` is the fixture's sshd on 127.0.0.2:`port`."""
    return (
        "version: 1\nname: remote\nhosts:\n  lab:\n    address: 127.0.0.2\n"
        f"    port: {port}\n    user: {USER}\n    identity_file: {sshd.client_key}\n"
        f"    known_hosts: {sshd.known_hosts}\n    workdir: {sshd.root / 'tui' / 'lab'}\n"
        f"stages:\n  here:\n    run: echo local\n  there:\n    host: lab\n    run: {stage}\n"
    )


def closed_port() -> int:
    """A port on 127.0.0.2 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.2", 0))
        return sock.getsockname()[1]


def bar_of(app: PipedeckApp) -> HostsBar:
    return app.run_screen.query_one(HostsBar)


def bar_text(app: PipedeckApp) -> str:
    return bar_of(app).render().plain


async def test_bar_shows_a_connected_host(make_app, sshd):
    app = make_app(pipeline(sshd, sshd.port))
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: status(app, "there") == SUCCEEDED, "the remote stage")
        await until(pilot, lambda: "lab ● connected" in bar_text(app), "the bar to say connected")
        assert bar_of(app).display
        assert app.run_screen.host_states == {"lab": HostState("connected")}


async def test_bar_shows_why_a_host_failed(make_app, sshd):
    app = make_app(pipeline(sshd, closed_port()))
    async with app.run_test(size=(160, 30)) as pilot:
        await until(pilot, lambda: status(app, "there") == FAILED, "the remote stage to fail")
        # the whole reason once the bar has been laid out at the screen's width
        await until(pilot, lambda: "refused" in bar_text(app), "the bar to say why it failed")
        text = bar_text(app)
        assert "lab ✘ failed: 127.0.0.2:" in text  # the `host lab: ` prefix is dropped
        assert "unreachable: connection refused" in text
        assert bar_of(app).display
        await pilot.press("H")  # the full state, as a notification
        assert "lab: failed: host lab: 127.0.0.2" in list(app._notifications)[-1].message


async def test_no_bar_for_a_local_pipeline(make_app):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "build") == SUCCEEDED, "the first stage")
        await pilot.pause(0.2)
        assert not bar_of(app).display
        await pilot.press("H")
        assert "no SSH hosts" in list(app._notifications)[-1].message


@dataclass(frozen=True)
class FutureEvent:
    """An event type this TUI does not know (a newer engine's)."""

    run_id: str
    type: str = "something_new"


async def test_an_unknown_event_is_ignored(tmp_path: Path):
    run = scenario(tmp_path, "remote")
    run.events.insert(1, FutureEvent(RUN_ID))  # type: ignore[arg-type]
    app = PipedeckApp(run, clock=lambda: T0 + 9.0)  # type: ignore[arg-type]
    async with app.run_test(size=(80, 24)) as pilot:
        # every event after the unknown one still arrives and is drawn
        await until(pilot, lambda: status(app, "e2e") == FAILED, "the replay to be applied")
        await until(pilot, lambda: "gpu1 ✘ failed" in bar_text(app), "the bar")
        assert "buildbox ● connected" in bar_text(app)
        assert not any(n.severity == "error" for n in app._notifications)
