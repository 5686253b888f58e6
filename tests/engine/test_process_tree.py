"""Cancel and timeout kill a stage's whole process tree, escapees included (SPEC §8)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from engine.executors.local import LocalExecutor
from engine.procs import find_marked, sweep
from engine.spec import Stage
from tests.waiting import until

# Every line "pid N" names a process that must be gone afterwards.
TREE = """
sh -c 'trap "" TERM; sleep 300 & echo "pid $$"; echo "pid $!"; wait' &
setsid sleep 300 & echo "pid $!"
sh -c 'sleep 300 & echo "pid $!"'
echo ready
sleep 300
"""


def make_env() -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "PIPEDECK_RUN_ID": uuid.uuid4().hex,
        "PIPEDECK_STAGE": "tree",
        "PIPEDECK_ATTEMPT": "1",
    }


class ReadySink:
    """Records output; sets `ready` once a line `ready` and `pids` lines `pid N` were printed."""

    def __init__(self, pids: int = 0) -> None:
        self.data = b""
        self.ready = asyncio.Event()
        self._pids = pids

    def __call__(self, stream: str, data: bytes) -> None:
        self.data += data
        if b"ready\n" in self.data and len(self.pids()) >= self._pids:
            self.ready.set()

    def pids(self) -> list[int]:
        return [int(pid) for pid in re.findall(rb"pid (\d+)", self.data)]


def gone(pid: int) -> bool:
    """True when `pid` no longer exists, not even as a zombie."""
    return not os.path.exists(f"/proc/{pid}")


async def start(
    script: str, kill_grace: float = 0.3, pids: int = 0
) -> tuple[asyncio.Task, ReadySink, dict]:
    env = make_env()
    sink = ReadySink(pids)
    stage = Stage(id="tree", name="tree", run=script, kill_grace=kill_grace)
    task = asyncio.create_task(LocalExecutor(Path.cwd()).execute(stage, env, sink))
    await asyncio.wait_for(sink.ready.wait(), 30)
    return task, sink, env


def assert_nothing_left(sink: ReadySink, env: dict[str, str]) -> None:
    assert find_marked({"PIPEDECK_RUN_ID": env["PIPEDECK_RUN_ID"]}) == []
    assert len(sink.pids()) == 4
    assert [pid for pid in sink.pids() if not gone(pid)] == []


async def test_cancel_kills_term_ignorers_setsid_escapees_and_double_forks() -> None:
    task, sink, env = await start(TREE, pids=4)
    marker = {"PIPEDECK_RUN_ID": env["PIPEDECK_RUN_ID"]}
    # a pid printed right after its fork may be mid-exec for a moment: /proc shows it soon
    await until(lambda: set(sink.pids()) <= set(find_marked(marker)), "every printed pid marked")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_nothing_left(sink, env)


async def test_timeout_kills_the_whole_tree() -> None:
    task, sink, env = await start(TREE, pids=4)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(task, 0.1)
    assert_nothing_left(sink, env)


async def test_asyncio_timeout_kills_the_whole_tree() -> None:
    task, sink, env = await start(TREE, pids=4)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await task
    assert_nothing_left(sink, env)


@pytest.mark.parametrize(("grace", "said_goodbye"), [(10.0, True), (0.0, False)])
async def test_kill_grace_is_the_time_between_term_and_kill(
    grace: float, said_goodbye: bool
) -> None:
    script = "trap 'sleep 1; echo goodbye; exit 5' TERM; echo ready; sleep 300 & wait"
    task, sink, env = await start(script, kill_grace=grace)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (b"goodbye\n" in sink.data) is said_goodbye
    assert find_marked({"PIPEDECK_RUN_ID": env["PIPEDECK_RUN_ID"]}) == []


async def test_second_cancel_skips_the_grace_period() -> None:
    task, _, env = await start("trap '' TERM; echo ready; sleep 300", kill_grace=600)
    task.cancel()
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 60)
    assert find_marked({"PIPEDECK_RUN_ID": env["PIPEDECK_RUN_ID"]}) == []


async def test_close_kills_running_attempts() -> None:
    env = make_env()
    sink = ReadySink()
    executor = LocalExecutor(Path.cwd())
    stage = Stage(id="tree", name="tree", run="echo ready; setsid sleep 300 & sleep 300")
    task = asyncio.create_task(executor.execute(stage, env, sink))
    await asyncio.wait_for(sink.ready.wait(), 30)
    await executor.close()
    result = await asyncio.wait_for(task, 60)
    assert result.exit_code in (128 + signal.SIGTERM, 128 + signal.SIGKILL)
    assert find_marked({"PIPEDECK_RUN_ID": env["PIPEDECK_RUN_ID"]}) == []


async def test_orphans_that_exit_on_their_own_are_reaped(tmp_path: Path) -> None:
    script = """
    ( sh -c 'echo "pid $$"; touch gone' & )
    setsid sh -c 'echo "pid $$"; touch gone2' &
    while [ ! -e gone ] || [ ! -e gone2 ]; do sleep 0.05; done
    sleep 0.2
    """
    sink = ReadySink()
    stage = Stage(id="s", name="s", run=script)
    result = await LocalExecutor(tmp_path).execute(stage, make_env(), sink)
    assert result.exit_code == 0
    assert len(sink.pids()) == 2
    assert [pid for pid in sink.pids() if not gone(pid)] == []


ENGINE = """
import asyncio, json, sys
from pathlib import Path
from engine.executors.local import LocalExecutor
from engine.spec import Stage

def sink(stream, data):
    sys.stdout.buffer.write(data)
    sys.stdout.flush()

# a stays in the group; the setsid one has left it (touched $ESCAPED) before the pids are told
stage = Stage(id="s", name="s", run='''sleep 300 & a=$!
setsid sh -c 'touch "$ESCAPED"; exec sleep 300' &
while [ ! -e "$ESCAPED" ]; do sleep 0.01; done
echo $$ $a; wait''')
asyncio.run(LocalExecutor(Path.cwd()).execute(stage, json.loads(sys.argv[1]), sink))
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


async def test_killed_engine_takes_its_stages_group_and_sweep_finds_the_rest(
    tmp_path: Path,
) -> None:
    """SIGKILL of the engine: engine.watchdog kills each running stage's whole group; what left
    the group (setsid) survives until the next start's sweep."""
    env = {**make_env(), "ESCAPED": str(tmp_path / "escaped")}
    engine = subprocess.Popen(
        [sys.executable, "-c", ENGINE, json.dumps(env)], stdout=subprocess.PIPE
    )
    assert engine.stdout is not None
    main, member = map(int, (await asyncio.to_thread(engine.stdout.readline)).split())
    engine.kill()
    engine.wait()
    await until(lambda: not alive(main) and not alive(member), "the engine's stages to die", 10)
    marker = {"PIPEDECK_RUN_ID": env["PIPEDECK_RUN_ID"]}
    assert find_marked(marker)  # the escaped grandchild survived the engine
    assert sweep(marker)
    assert find_marked(marker) == []


def test_find_marked_needs_every_pair_with_exact_values() -> None:
    token = uuid.uuid4().hex
    proc = subprocess.Popen(["sleep", "300"], env={"A": token, "B": "2"})
    try:
        assert proc.pid in find_marked({"A": token})
        assert proc.pid in find_marked({"A": token, "B": "2"})
        assert proc.pid not in find_marked({"A": token, "B": "3"})
        assert proc.pid not in find_marked({"A": token[:-1]})
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(ValueError):
        find_marked({})


@pytest.mark.timeout(60)
async def test_cancel_while_the_stage_is_still_starting_kills_the_tree() -> None:
    """A cancel that lands inside the spawn must not leave the shell's children (or hang)."""
    for yields in range(12):
        env = make_env()
        stage = Stage(id="s", name="s", run="sleep 300 & sleep 300 & wait", kill_grace=0.3)
        task = asyncio.create_task(LocalExecutor(Path.cwd()).execute(stage, env, ReadySink()))
        for _ in range(yields):
            await asyncio.sleep(0)
        await asyncio.sleep(0.001 * yields)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        assert find_marked({"PIPEDECK_RUN_ID": env["PIPEDECK_RUN_ID"]}) == [], yields


WATCHING = """
import os, subprocess, sys
from engine import watchdog

kept, killed = (subprocess.Popen(["sleep", "300"], start_new_session=True) for _ in range(2))
watchdog.watch(kept.pid)
watchdog.watch(killed.pid)
watchdog.forget(kept.pid)
print(kept.pid, killed.pid, flush=True)
sys.stdin.read()  # until the test kills us
"""


async def test_the_watchdog_kills_the_groups_still_watched_when_the_engine_dies() -> None:
    engine = subprocess.Popen(
        [sys.executable, "-c", WATCHING], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert engine.stdout is not None
    kept, killed = map(int, (await asyncio.to_thread(engine.stdout.readline)).split())
    try:
        engine.kill()
        engine.wait()
        await until(lambda: not alive(killed), "the watched group to die", 10)
        assert alive(kept)  # forgotten: no longer the engine's to kill
    finally:
        for pid in (kept, killed):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_an_ended_attempts_group_leaves_the_watchdog_list_soon_while_others_run() -> None:
    """An ended attempt's group is told to the watchdog with the next start, or within
    FORGET_WITHIN while other attempts run, or at once when none does: never left listed."""
    executor = LocalExecutor(Path.cwd())
    quick = Stage(id="q", name="q", run="true")
    slow = Stage(id="s", name="s", run="sleep 300", kill_grace=0.3)
    sink = ReadySink()
    running = asyncio.create_task(executor.execute(slow, make_env(), sink))
    await until(lambda: executor._running, "the slow attempt to start", 10)
    first = await executor.execute(quick, make_env(), sink)
    assert first.exit_code == 0
    assert len(executor._gone) == 1  # another attempt runs: told a little later
    await until(lambda: not executor._gone, "the watchdog to hear of the ended group", 5)
    await executor.execute(quick, make_env(), sink)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert executor._gone == []  # nothing runs any more: told at once
