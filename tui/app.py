"""The Textual app: one run screen over an `engine.run.Run`, and the `run_tui` entry point."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path

from textual.app import App, SystemCommand
from textual.screen import Screen

from engine.run import Run, StageState
from engine.spec import Pipeline
from tui.screens.run import RunLike, RunScreen


class PipedeckApp(App[int]):
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
    ) -> None:
        super().__init__()
        self.run_screen = RunScreen(run, start=start, watch=watch, clock=clock, make_run=make_run)
        self.title = f"pipedeck · {run.pipeline.name}"

    def on_mount(self) -> None:
        self.push_screen(self.run_screen)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if screen is self.run_screen:
            yield from self.run_screen.commands()

    async def action_quit(self) -> None:
        """ctrl+q and the palette's Quit go through the run screen's confirmation."""
        self.run_screen.action_quit()


def new_run(
    pipeline: Pipeline,
    jobs: int | None,
    *,
    only: Iterable[str] | None = None,
    carry: Mapping[str, StageState] | None = None,
    trigger: str = "manual",
    force: Iterable[str] = (),
) -> Run:
    """A run for the TUI: manual stages wait for `a`; cached, and recorded in the history."""
    from engine.cache import track_run

    run = Run(
        pipeline, manual="wait", jobs=jobs, only=only, carry=carry, trigger=trigger, force=force
    )
    run.services.keep_running = True  # services run until the run is cancelled or we quit
    track_run(run)
    return run


def run_tui(
    pipeline: Pipeline,
    *,
    watch: bool = False,
    start: bool = True,
    jobs: int | None = None,
    force: Iterable[str] = (),
) -> int:
    """Open the TUI on a new run of `pipeline`; returns the run's exit code, or 0."""
    make_run = partial(new_run, pipeline, jobs, force=force)
    app = PipedeckApp(make_run(), start=start, watch=watch, make_run=make_run)
    result = app.run()
    if app.return_code not in (None, 0):
        return app.return_code
    return result or 0
