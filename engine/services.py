"""Service stages (SPEC §10): readiness, restarts and their end, for the scheduler.

A `service: true` stage is `running` until its `ready` probe passes, then `ready`: stages that
need it may start then (`Run` treats `ready` as a met need). The attempt is the service's
process and its probe side by side:

- the probe passes: the stage becomes `ready` and keeps running;
- the probe times out: the service is killed (whole tree) and `failed` with the probe's error;
- the process exits on its own (before or after ready, whatever its code): `failed`, with its
  exit code; `restart: on_failure` starts it again, at most `retries` times;
- headless (`keep_running` False), once every other stage of the run has ended and each
  service is ready, `stop_idle` stops them (the executor's cancel: SIGTERM, `kill_grace`,
  SIGKILL, whole tree) and they end `succeeded`. In the TUI and in watch mode (`keep_running`
  True) they run until the run is cancelled or a rerun restarts them.

A service holds no `--jobs` slot (it would hold it for ever); on an SSH host it holds one of the
host's slots (a channel). Its cache verdict is never "fresh": a service runs every time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from engine.attempt import stage_env
from engine.events import Event, LogLines
from engine.executors.base import ExecResult
from engine.spec import Stage
from engine.status import FAILED, FINISHED, LOST, READY, SUCCEEDED

if TYPE_CHECKING:
    from engine.probes import LogMatcher
    from engine.run import Run

MARKERS = ("PIPEDECK_RUN_ID", "PIPEDECK_STAGE", "PIPEDECK_ATTEMPT")  # the attempt's, not a probe's


class Services:
    """The service lifecycle of one Run (see the module docstring)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.keep_running = False  # the TUI and watch mode: never stop services by themselves
        self._stop: dict[str, asyncio.Event] = {}  # service id -> set to stop it, succeeded

    def retries(self, stage: Stage) -> int:
        """Extra attempts: a service's only with `restart: on_failure`."""
        if stage.service and stage.restart != "on_failure":
            return 0
        return stage.retries

    def stop_idle(self) -> None:
        """Headless: once every other stage ended and every service is ready, stop them."""
        if self.keep_running or not self._stop:
            return
        states = self.run.states
        stages = self.run.pipeline.stages
        if any(st.status not in FINISHED for sid, st in states.items() if not stages[sid].service):
            return
        if all(states[sid].status == READY for sid in self._stop):
            for stop in self._stop.values():
                stop.set()

    async def attempt(
        self, stage: Stage, attempt: int, execute: Awaitable[ExecResult]
    ) -> tuple[str, ExecResult]:
        """Run one attempt of a service (`execute`: the executor's coroutine) with its probe."""
        sid = stage.id
        stop = self._stop[sid] = asyncio.Event()
        probe = stage.ready
        from engine.probes import LogMatcher  # http.client & co: only a pipeline with services

        matcher = LogMatcher(probe.target) if probe and probe.kind == "log" else None

        def feed(event: Event) -> None:
            if isinstance(event, LogLines) and (event.stage, event.attempt) == (sid, attempt):
                assert matcher is not None
                matcher.feed(event.lines)

        unsubscribe = self.run.subscribe(feed) if matcher else None
        running = asyncio.ensure_future(execute)
        waits: list[asyncio.Future[Any]] = []
        try:
            probing = asyncio.ensure_future(self._probe(stage, attempt, matcher))
            waits.append(probing)
            await asyncio.wait({running, probing}, return_when=asyncio.FIRST_COMPLETED)
            if not running.done():
                error = probing.result()
                if error is not None:
                    await _cancel(running)
                    return FAILED, ExecResult(None, reason=f"not ready: {error}")
                self.run._move(sid, READY, _describe(stage))
                stopping = asyncio.ensure_future(stop.wait())
                waits.append(stopping)
                await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not running.done():
                    await _cancel(running)
                    return SUCCEEDED, ExecResult(None, reason="stopped: the other stages ended")
            result = running.result()
            if result.lost:
                return LOST, result
            code = result.exit_code
            why = f"the service exited on its own (exit code {code})"
            return FAILED, ExecResult(code, reason=why)
        finally:
            for task in waits:
                task.cancel()
            if not running.done():  # this attempt was cancelled: kill the service first
                await _cancel(running)
            if unsubscribe:
                unsubscribe()
            del self._stop[sid]

    async def _probe(self, stage: Stage, attempt: int, matcher: LogMatcher | None) -> str | None:
        """None once the service is ready (at once without a probe), else the probe's error."""
        probe = stage.ready
        if probe is None:
            return None
        host = self.run.pipeline.hosts.get(stage.host)
        address = host.address if host is not None else "127.0.0.1"
        run = self._runner(stage) if probe.kind == "run" else None
        from engine.probes import wait_ready

        return await wait_ready(probe, address=address, log=matcher, run=run)

    def _runner(self, stage: Stage) -> Callable[[str], Awaitable[str | None]]:
        """Runs a `run` probe's command where the stage runs, with the stage's environment
        (less the attempt's marker variables: killing a probe must not touch the service)."""
        executor = self.run._executor(stage.host)
        env = stage_env(self.run.pipeline, stage, self.run.run_id, 0)
        env = {k: v for k, v in env.items() if k not in MARKERS}
        command = replace(stage, run="", tty=False, service=False, outputs=(), kill_grace=1.0)

        async def run(script: str) -> str | None:
            output: list[bytes] = []
            result = await executor.execute(
                replace(command, run=script), env, lambda _, data: output.append(data)
            )
            return _verdict(result.exit_code, b"".join(output), result.reason)

        if not stage.is_remote:
            return run
        from engine.executors.ssh import SshExecutor
        from engine.shell import remote_prelude

        if not isinstance(executor, SshExecutor):
            return run
        ssh = executor

        async def over_ssh(script: str) -> str | None:  # no workspace sync per try
            text = "\n".join([*remote_prelude(ssh.host.workdir, stage, env), script]) + "\n"
            status, out, err = await ssh.command("sh", text.encode())
            return _verdict(status, out + err, None)

        return over_ssh


def _verdict(code: int | None, output: bytes, reason: str | None) -> str | None:
    """None when a probe command exited 0, else why not, with its last line of output."""
    if code == 0:
        return None
    last = output.decode(errors="replace").strip().splitlines()[-1:]
    why = reason or f"exit code {code}"
    return f"{why}: {last[0]}" if last else why


def _describe(stage: Stage) -> str:
    probe = stage.ready
    return f"ready ({probe.kind}: {probe.target})" if probe else "ready (started)"


async def _cancel(task: asyncio.Future[ExecResult]) -> None:
    """Cancel the service's execution and wait for the executor to have killed its tree."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
