"""The composition root: what every run of one pipeline in one pipedeck process shares.

`Session` builds each `Run` the same way for headless runs (tui/cli.py), the TUI (tui/app.py) and
watch mode (both): the run options, the history/cache/artifact/metrics hooks (`track_run`), and
one `Hosts` pool, so executors (SSH connections) and per-host slot limits outlive a watch rerun.

    session = Session(pipeline, jobs=2, on_run=add_reporters)
    run = session.new_run()                     # also the `make_run` of engine.watch
    code = await run.execute()
    await session.close()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from engine.hosts import Hosts
from engine.run import Run
from engine.spec import Pipeline
from engine.status import StageState


class Session:
    """Makes the runs of one pipeline with the same options, hooks and shared hosts."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        jobs: int | None = None,
        targets: Iterable[str] = (),
        approve: Iterable[str] = (),
        manual: str = "skip",
        no_cache: bool = False,
        force: Iterable[str] = (),
        keep_services: bool = False,
        history: bool = True,
        on_run: Callable[[Run], None] | None = None,
        trigger: str = "manual",
    ) -> None:
        """`manual="wait"` (the TUI) lets manual stages wait for approval; `keep_services` (the
        TUI, watch mode) keeps services running once the other stages ended; `on_run` is called
        with each new run before it starts (to subscribe reporters); `history=False` leaves
        runs without cache and history (tests); `trigger` names the first run's cause."""
        self.pipeline = pipeline
        self.hosts = Hosts(pipeline, jobs)
        self.targets = tuple(targets)
        self.approve = tuple(approve)
        self.manual = manual
        self.no_cache = no_cache
        self.force = tuple(force)
        self.keep_services = keep_services
        self.history = history
        self.on_run = on_run
        self.trigger = trigger
        if any(spec.executor == "slurm" for spec in pipeline.hosts.values()):
            from engine.executors.slurm import cancel_leftovers_soon

            cancel_leftovers_soon(pipeline)  # the jobs a crashed pipedeck left (SPEC §12)

    def new_run(
        self,
        *,
        only: Iterable[str] | None = None,
        carry: Mapping[str, StageState] | None = None,
        trigger: str | None = None,
    ) -> Run:
        """A new run, ready to `execute()`; the `make_run` of watch mode and the TUI."""
        run = Run(
            self.pipeline,
            hosts=self.hosts,
            targets=self.targets,
            approve=self.approve,
            manual=self.manual,
            no_cache=self.no_cache,
            force=self.force,
            only=only,
            carry=carry,
            trigger=self.trigger if trigger in (None, "manual") else trigger,
        )
        run.services.keep_running = self.keep_services
        if self.history:
            from engine.cache import track_run
            from engine.resources import track_resources

            cache = track_run(run)
            track_resources(run, cache.history)  # each attempt's CPU and memory (`u`, history)
        from engine.trace import subscribe_otel

        subscribe_otel(run)  # one OTLP trace per run when OTEL_EXPORTER_OTLP_ENDPOINT is set
        if self.on_run is not None:
            self.on_run(run)
        return run

    async def close(self) -> None:
        """Close the shared executors; call once, when no run of the session executes."""
        await self.hosts.close()
