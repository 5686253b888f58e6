"""Running a pipeline as `pipedeck run` does (a Session: history and resource monitor on) while
watching what the resource monitor reports: for the tests of CPU and memory figures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.history import AttemptRow
from engine.resources import INTERVAL, ResourceMonitor, Usage
from engine.run import Run
from engine.session import Session
from engine.spec import Pipeline

MIB = 1 << 20


def burner(gate: Path, mib: int, clear_env: bool = False) -> str:
    """A stage holding `mib` MiB and burning CPU in a grandchild until `gate` exists (with
    `clear_env`, one without the stage's environment: only its process group tells)."""
    return (
        ('env -i PATH="$PATH" ' if clear_env else "")
        + 'python3 -c "\nimport os, time\nblock = bytearray('
        f"{mib} << 20)\ndeadline = time.time() + 60\n"
        f"while not os.path.exists('{gate}') and time.time() < deadline:\n"
        '    sum(range(20000))\n" &\nwait\n'
    )


def busy(stages: tuple[str, ...], mib: int) -> Callable[[dict[str, Usage]], bool]:
    """A condition on the usage: every one of `stages` burns CPU and holds `mib` MiB."""

    def check(usage: dict[str, Usage]) -> bool:
        return all(
            sid in usage and usage[sid].cpu_percent > 0 and usage[sid].rss >= mib * MIB
            for sid in stages
        )

    return check


@dataclass
class Measured:
    """A run under way: its monitor, and the usage it reported at each look."""

    run: Run
    monitor: ResourceMonitor
    seen: list[dict[str, Usage]] = field(default_factory=list)

    async def until(self, condition: Callable[[dict[str, Usage]], bool], limit: float) -> None:
        """Look at the monitor's usage every 50 ms until `condition(usage)` holds."""
        deadline = time.monotonic() + limit
        while not condition(self.monitor.usage):
            if time.monotonic() > deadline:
                raise AssertionError(f"after {limit:g}s the monitor reports {self.seen[-3:]}")
            self.seen.append(self.monitor.usage)
            await asyncio.sleep(0.05)

    async def one_call_per_interval(self, calls: Callable[[], int]) -> None:
        """Assert that the counter `calls` (a host's measuring commands) grows by one per
        interval, whatever the number of stages: three more calls span two intervals at least."""
        first, began = calls(), time.monotonic()
        await self.until(lambda _: calls() >= first + 3, 30)
        assert time.monotonic() - began >= 2 * INTERVAL * 0.95


async def run_measured(
    pipeline: Pipeline, during: Callable[[Measured], object] | None = None, limit: float = 90
) -> tuple[int, list[AttemptRow]]:
    """Run `pipeline` (awaiting `during(measured)` meanwhile, when given); the exit code and the
    history's attempts of the run."""
    session = await asyncio.to_thread(Session, pipeline)  # opens SQLite: off the loop
    run = await asyncio.to_thread(session.new_run)
    monitor = ResourceMonitor.of_run(run.run_id)
    assert monitor is not None
    try:
        task = asyncio.create_task(run.execute())
        if during is not None:
            await during(Measured(run, monitor))  # type: ignore[misc]
        code = await asyncio.wait_for(task, limit)
    finally:
        await session.close()
    assert run.cache is not None
    history = run.cache.history
    assert history.flush(10)
    return code, history.attempts(run.run_id)
