"""The Textual app: one run screen over an `engine.run.Run`, and the `run_tui` entry point."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from textual.app import App, SystemCommand
from textual.screen import Screen

from engine.session import Session
from engine.spec import Pipeline
from tui.screens.run import RunLike, RunScreen
from tui.widgets.pump import Yielding


class PipedeckApp(Yielding, App[int]):
    """Shows a run; its result is the run's exit code (0 when it never ran)."""

    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "pipedeck"

    def __init__(
        self,
        run: RunLike,
        *,
        start: bool = True,
        watch: bool = False,
        clock: Callable[[], float] = time.time,
        make_run: Callable[..., RunLike] | None = None,
        session: Session | None = None,
    ) -> None:
        """`session` (which made `run`) is closed when the app ends: its SSH connections."""
        super().__init__()
        self.session = session
        self.run_screen = RunScreen(run, start=start, watch=watch, clock=clock, make_run=make_run)
        self.title = f"pipedeck · {run.pipeline.name}"

    def on_mount(self) -> None:
        self.push_screen(self.run_screen)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if screen is self.run_screen:
            yield from self.run_screen.commands()

    async def on_unmount(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def action_quit(self) -> None:
        """ctrl+q and the palette's Quit go through the run screen's confirmation."""
        self.run_screen.action_quit()


def tui_session(
    pipeline: Pipeline,
    *,
    jobs: int | None = None,
    stages: Iterable[str] = (),
    no_cache: bool = False,
    force: Iterable[str] = (),
) -> Session:
    """The session of the TUI's runs: manual stages wait for `a`, services keep running until
    the run is cancelled or we quit; runs are cached and recorded in the history, and watch
    reruns share the session's executors (one SSH connection per host for the whole session)."""
    return Session(
        pipeline,
        jobs=jobs,
        targets=stages,
        no_cache=no_cache,
        force=force,
        manual="wait",
        keep_services=True,
    )


def run_tui(
    pipeline: Pipeline,
    *,
    watch: bool = False,
    start: bool = True,
    **options: Any,
) -> int:
    """Open the TUI on a new run of `pipeline` (`options`: those of `tui_session`); returns
    the run's exit code, or 0."""
    session = tui_session(pipeline, **options)
    app = PipedeckApp(
        session.new_run(), start=start, watch=watch, make_run=session.new_run, session=session
    )
    result = app.run()
    if app.return_code not in (None, 0):
        return app.return_code
    return result or 0
