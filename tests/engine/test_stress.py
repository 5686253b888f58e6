"""Random commands against a Run with real processes, for a bounded time (issue 9, item 5).

Bursts of rerun / cancel / rerun_failed / cancel_all / approve, as fast as a person mashing keys
(and faster). After every burst: at most one attempt of each stage has live processes (read from
/proc), and no stage is queued or running without a task. In the end the run still finishes, and
then runs to success. The seed is in the failure message: rerun with PIPEDECK_STRESS_SEED=N.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from engine.events import Event, RunFinished
from engine.loader import load
from engine.run import Run
from engine.status import CANCELLED, QUEUED, RUNNING
from tests.conftest import Recorder, marked_pids

Write = Callable[..., Path]
SECONDS = 4.0

PIPELINE = """
    version: 1
    stages:
      a: {kill_grace: 0.1s, run: 'sleep 0.0$((RANDOM % 9))'}
      b: {needs: [a], kill_grace: 0.1s, run: 'trap "" TERM; sleep 0.3'}
      c: {needs: [a], when: manual, run: 'sleep 0.1'}
      d: {kill_grace: 0.2s, run: 'sleep 30 & sleep 30; wait'}
      e: {needs: [b, d], when: always, run: 'true'}
      f: {retries: 1, run: 'sleep 0.05; exit $((PIPEDECK_ATTEMPT % 2))'}
"""


def live_attempts(run_id: str) -> dict[str, set[str]]:
    """Stage -> the attempts that have live (non-zombie) processes now."""
    alive: dict[str, set[str]] = defaultdict(set)
    for pid in marked_pids(run_id):
        try:
            env = dict(
                item.split(b"=", 1)
                for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                if b"=" in item
            )
        except OSError:
            continue  # gone meanwhile
        alive[env[b"PIPEDECK_STAGE"].decode()].add(env[b"PIPEDECK_ATTEMPT"].decode())
    return alive


async def check(run: Run, seed: int) -> None:
    alive = await asyncio.to_thread(live_attempts, run.run_id)  # /proc: off the loop
    for stage, attempts in alive.items():
        assert len(attempts) <= 1, f"seed {seed}: {stage} has attempts {attempts} alive at once"
    tasks = run._tasks  # white box: the scheduler's own record of what runs
    for sid, state in run.states.items():
        if state.status in (QUEUED, RUNNING):
            assert sid in tasks, f"seed {seed}: {sid} is {state.status} with no task"
    for sid, task in tasks.items():
        if not task.done():
            assert run.states[sid].status in (QUEUED, RUNNING), f"seed {seed}: {sid} task"


async def test_random_commands_keep_the_invariants(
    write_pipeline: Write, recorder: Recorder
) -> None:
    seed = int(os.environ.get("PIPEDECK_STRESS_SEED", random.randrange(1_000_000)))
    rng = random.Random(seed)
    run = Run(load(write_pipeline(PIPELINE)), manual="wait", jobs=3)
    run.subscribe(recorder)
    stages = list(run.states)

    def truthful(event: Event) -> None:  # the verdict never hides a cancelled stage
        if isinstance(event, RunFinished) and event.status == "succeeded":
            cancelled = [s for s, st in run.states.items() if st.status == CANCELLED]
            assert not cancelled, f"seed {seed}: succeeded with {cancelled} cancelled"

    run.subscribe(truthful)
    commands: list[Callable[[], None]] = [
        lambda: run.rerun(rng.choice(stages), downstream=rng.random() < 0.5),
        lambda: run.cancel(rng.choice(stages)),
        run.rerun_failed,
        lambda: run.cancel_all(),
        lambda: run.approve("c"),
    ]
    weights = [5, 5, 2, 1, 1]
    task = asyncio.create_task(run.execute())
    bursts = 0
    end = time.monotonic() + SECONDS
    while time.monotonic() < end:
        for _ in range(rng.randint(1, 8)):
            rng.choices(commands, weights)[0]()
            if rng.random() < 0.5:
                await asyncio.sleep(rng.uniform(0, 0.02))
        if task.done():  # what the TUI does after a command on a finished run
            task.result()
            task = asyncio.create_task(run.execute())
        await asyncio.sleep(rng.uniform(0, 0.15))
        await check(run, seed)
        bursts += 1
    assert bursts > 10, f"seed {seed}: only {bursts} bursts"

    run.cancel_all()
    await asyncio.wait_for(asyncio.shield(task), 20)
    assert await asyncio.to_thread(marked_pids, run.run_id) == [], f"seed {seed}: leftovers"
    # and it still runs to success
    run.approve("c")
    for sid in ("a", "d", "f"):
        run.rerun(sid)
    run.cancel("d")  # d sleeps 30 s: cancel it again, and let the rest finish
    code = await asyncio.wait_for(run.execute(), 30)
    assert code == 130 and run.status == CANCELLED, f"seed {seed}"
    assert {sid: st.status for sid, st in run.states.items() if sid != "d"} == {
        "a": "succeeded",
        "b": "succeeded",
        "c": "succeeded",
        "e": "succeeded",
        "f": "succeeded",
    }, f"seed {seed}"
    assert await asyncio.to_thread(marked_pids, run.run_id) == []
