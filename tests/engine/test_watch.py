"""Watch mode (SPEC §5) with real files, real watchfiles and real processes through Run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

import pytest

from engine.events import RUNNING, RunFinished, StageStatus
from engine.ignore import IgnoreRules
from engine.loader import load
from engine.run import Run
from engine.spec import Pipeline
from engine.watch import LOOP_LIMIT, SYSCTL, WatchError, WatchSession, changes
from tests.conftest import REPO, Recorder, marked_pids, pipedeck_bin
from tests.waiting import until

PIPELINE = """
    version: 1
    name: w
    watch:
      ignore: ["docs/_build/**"]
    stages:
      lint:
        run: echo lint
        inputs: ["src/**"]
      test:
        needs: [lint]
        run: echo test
      docs:
        run: echo docs
        inputs: ["docs/**/*.md"]
        outputs: ["dist/*.whl"]
"""


def make(tmp_path: Path, text: str = PIPELINE) -> Pipeline:
    (tmp_path / "pipedeck.yaml").write_text(
        "version: 1\n" * ("version:" not in text) + textwrap.dedent(text)
    )
    for folder in ("src", "docs", "dist", "sub/gen", ".git", ".pipedeck"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    return load(tmp_path / "pipedeck.yaml")


async def started(
    pipeline: Pipeline, **kwargs: bool
) -> tuple[AsyncGenerator[set[str], None], asyncio.Task[set[str]]]:
    """A change stream, and a task awaiting its first set; returns once the watches are set."""
    ready = asyncio.Event()
    stream = changes(pipeline, ready=ready, **kwargs)
    first = asyncio.create_task(anext(stream))
    await asyncio.wait_for(ready.wait(), 20)
    return stream, first


class Session:
    """A WatchSession over real Runs, recording every run, event, change and notice."""

    def __init__(
        self, pipeline: Pipeline, targets: tuple[str, ...] = (), keep_services: bool = False
    ) -> None:
        self.keep_services = keep_services  # what the TUI and `--watch` do (SPEC §10)
        self.runs: list[Run] = []
        self.recorder = Recorder()
        self.changed: list[set[str]] = []
        self.notices: list[str] = []
        self.session = WatchSession(
            pipeline,
            lambda **kw: Run(pipeline, jobs=4, targets=targets, **kw),
            on_run=self._on_run,
            on_change=self.changed.append,
            on_notice=self.notices.append,
        )
        self.task: asyncio.Task[None] | None = None

    def _on_run(self, run: Run) -> None:
        run.services.keep_running = self.keep_services
        self.runs.append(run)
        run.subscribe(self.recorder)

    def start(self, previous: Run | None) -> None:
        self.task = asyncio.create_task(self.session.run(previous))

    def finished(self, n: int) -> bool:
        """True once the first `n` runs have finished (a run made but not yet started is not
        running either: its `run_finished` event says it ran and ended)."""
        ended = {e.run_id for e in self.recorder.events if isinstance(e, RunFinished)}
        return len(self.runs) >= n and all(
            r.run_id in ended and not r.running for r in self.runs[:n]
        )

    def ran(self, run: Run) -> set[str]:
        """Stages that went `running` in `run`."""
        return {
            e.stage
            for e in self.recorder.events
            if isinstance(e, StageStatus) and e.run_id == run.run_id and e.status == RUNNING
        }

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def watching(tmp_path: Path) -> AsyncGenerator[Callable[..., Session], None]:
    """Start sessions; any still running at the end are cancelled."""
    made: list[Session] = []

    def start(
        pipeline: Pipeline,
        targets: tuple[str, ...] = (),
        previous: Run | None = None,
        keep_services: bool = False,
    ) -> Session:
        s = Session(pipeline, targets, keep_services)
        s.start(previous)
        made.append(s)
        return s

    yield start
    for s in made:
        if s.task is not None and not s.task.done():
            await s.stop()


# -- the ignore rules ----------------------------------------------------------------------------


def test_ignore_rules_follow_git_state_outputs_gitignores_and_watch_ignore(tmp_path: Path) -> None:
    pipeline = make(tmp_path)
    (tmp_path / ".gitignore").write_text("*.log\nbuild/\n!build/keep.txt\n")
    (tmp_path / "sub" / ".gitignore").write_text("gen/\n/local.txt\n!important.log\n")
    (tmp_path / "build").mkdir()
    rules = IgnoreRules(pipeline)
    ignored = [
        ".git/index",
        ".pipedeck/logs/x",
        "sub/.git/HEAD",  # git and state dirs, at any depth
        "dist/a.whl",  # a stage's outputs
        "docs/_build/html/index.html",  # watch.ignore
        "a.log",
        "src/deep/b.log",  # root .gitignore, any depth
        "build/out.o",
        "build/keep.txt",  # an ignored directory cannot be re-included
        "sub/gen/x.py",
        "sub/local.txt",  # nested .gitignore, relative to its own directory
        "src/.a.py.swp",
        "src/a.py~",  # editor temporaries
    ]
    kept = [
        "src/a.py",
        "docs/index.md",
        "dist/notes.txt",
        "pipedeck.yaml",
        "local.txt",  # `/local.txt` in sub/.gitignore is anchored to sub/
        "sub/important.log",  # re-included by the deeper .gitignore
        "sub/gen.py",
        ".gitignore",
    ]
    assert [p for p in ignored if not rules.ignored(tmp_path / p)] == []
    assert [p for p in kept if rules.ignored(tmp_path / p)] == []


# -- the change stream ---------------------------------------------------------------------------


async def test_ignored_paths_never_trigger(tmp_path: Path) -> None:
    pipeline = make(tmp_path)
    (tmp_path / "sub" / ".gitignore").write_text("gen/\n")
    stream, first = await started(pipeline)
    for path in (
        ".git/index",
        ".pipedeck/run.db",
        "dist/a.whl",
        "sub/gen/x.py",
        "docs/_build/page.html",
        "src/a.py.swp",
    ):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    (tmp_path / "src" / "a.py").write_text("x")  # were those not ignored, they'd come first
    assert await asyncio.wait_for(first, 20) == {"src/a.py"}
    await stream.aclose()


async def test_rename_save_is_one_change_of_the_target(tmp_path: Path) -> None:
    pipeline = make(tmp_path)
    (tmp_path / "src" / "a.py").write_text("old")
    stream, first = await started(pipeline)
    tmp = tmp_path / "src" / "a.py.tmp1234"
    tmp.write_text("new")
    os.replace(tmp, tmp_path / "src" / "a.py")
    assert await asyncio.wait_for(first, 20) == {"src/a.py"}
    await stream.aclose()


def write_burst(root: Path) -> None:
    """1000 new files in src/, written as fast as a checkout would (from another thread, as
    an editor or git writes from another process, not from the event loop)."""
    for i in range(1000):
        (root / "src" / f"f{i}.py").write_text(str(i))


async def test_a_burst_of_1000_files_is_one_change_set(tmp_path: Path) -> None:
    pipeline = make(tmp_path)
    stream, first = await started(pipeline)
    await asyncio.to_thread(write_burst, tmp_path)
    batch = await asyncio.wait_for(first, 20)
    assert batch == {f"src/f{i}.py" for i in range(1000)}
    await stream.aclose()


async def test_forced_polling_sees_changes(tmp_path: Path) -> None:
    pipeline = make(tmp_path)
    stream, first = await started(pipeline, force_polling=True)
    (tmp_path / "src" / "a.py").write_text("x")
    assert await asyncio.wait_for(first, 20) == {"src/a.py"}
    await stream.aclose()


def test_out_of_inotify_watches_says_so_and_polls(tmp_path: Path) -> None:
    """In a user namespace whose inotify watch limit is 2, watching 4 directories fails over
    to polling, and the message names the sysctl to raise."""
    pipeline = make(tmp_path)
    script = textwrap.dedent(f"""
        import asyncio
        from pathlib import Path
        from engine.loader import load
        from engine.watch import changes

        async def main():
            ready = asyncio.Event()
            stream = changes(load({str(pipeline.path)!r}), ready=ready)
            first = asyncio.create_task(anext(stream))
            await ready.wait()
            Path({str(tmp_path / "src" / "a.py")!r}).write_text("x")
            print(sorted(await asyncio.wait_for(first, 20)), flush=True)
            await stream.aclose()

        asyncio.run(main())
    """)
    limited = f'echo 2 > /proc/sys/user/max_inotify_watches && exec {sys.executable} -c "$0"'
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "sh", "-c", limited, script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['src/a.py']"
    assert "polling" in done.stderr and SYSCTL in done.stderr


# -- the session ---------------------------------------------------------------------------------


def test_a_missing_watch_path_is_refused_before_anything_runs(tmp_path: Path) -> None:
    pipeline = make(
        tmp_path,
        """
        watch:
          paths: ["src", "nope"]
        stages:
          a:
            run: touch ran
    """,
    )
    with pytest.raises(WatchError, match=r"watch path .*nope does not exist"):
        WatchSession(pipeline, lambda **kw: Run(pipeline, **kw))


async def test_affected_stages_rerun_in_a_new_run_and_the_rest_keep_their_result(
    tmp_path: Path, watching: Callable[..., Session]
) -> None:
    s = watching(make(tmp_path))
    await until(lambda: s.finished(1))
    first = s.runs[0]
    assert s.ran(first) == {"lint", "test", "docs"}
    (tmp_path / "src" / "a.py").write_text("x")
    await until(lambda: s.finished(2))
    second = s.runs[1]
    assert second.run_id != first.run_id and second.trigger == "watch"
    assert s.ran(second) == {"lint", "test"}
    assert s.changed == [{"src/a.py"}]
    assert s.session.last_change == "src/a.py"
    assert s.session.banner == "watching · last change: src/a.py"
    docs = second.states["docs"]
    assert (docs.status, docs.started) == ("succeeded", first.states["docs"].started)
    finished = [e for e in s.recorder.events if isinstance(e, RunFinished)]
    assert [e.run_id for e in finished] == [first.run_id, second.run_id]


async def test_a_change_to_the_pipeline_file_says_it_needs_a_restart(
    tmp_path: Path, watching: Callable[..., Session]
) -> None:
    s = watching(make(tmp_path))
    await until(lambda: s.finished(1))
    (tmp_path / "pipedeck.yaml").write_text("version: 1\nstages: {}\n")
    await until(lambda: bool(s.notices))
    assert s.notices == [
        "watch: pipedeck.yaml changed; restart pipedeck to use the new version "
        "(this session keeps the one it started with)"
    ]


async def test_a_targeted_run_reruns_only_within_its_targets(
    tmp_path: Path, watching: Callable[..., Session]
) -> None:
    s = watching(make(tmp_path), targets=("lint",))
    await until(lambda: s.finished(1))
    assert s.ran(s.runs[0]) == {"lint"}
    (tmp_path / "docs" / "index.md").write_text("affects docs and test, not `--stage lint`")
    (tmp_path / "src" / "a.py").write_text("x")
    await until(lambda: s.finished(2))
    assert s.changed == [{"src/a.py"}]  # docs/index.md can trigger nothing here: not named
    assert s.ran(s.runs[1]) == {"lint"}


def start_time(pid: int) -> int:
    """The process's start time (clock ticks since boot): the same pid and start time is the
    same process."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def pids(s: Session, stage: str) -> list[int]:
    return [int(line.split()[1]) for line in s.recorder.lines(stage) if line.startswith("pid ")]


async def test_a_change_during_a_run_restarts_only_the_affected_stages_in_that_run(
    tmp_path: Path, watching: Callable[..., Session]
) -> None:
    pipeline = make(
        tmp_path,
        """
        stages:
          slow:
            run: echo pid $$; sleep 60 & wait
            inputs: ["src/**"]
            kill_grace: 1s
          after:
            needs: [slow]
            run: echo after
          other:
            run: echo pid $$; exec sleep 60
            inputs: ["docs/**"]
    """,
    )
    s = watching(pipeline)
    await until(lambda: len(pids(s, "slow")) == 1 and len(pids(s, "other")) == 1)
    run = s.runs[0]
    slow, other = pids(s, "slow")[0], pids(s, "other")[0]
    other_started = start_time(other)
    await until(lambda: len(marked_pids(run.run_id)) == 3)  # slow's bash and sleep, other
    (tmp_path / "src" / "a.py").write_text("x")
    await until(lambda: len(pids(s, "slow")) == 2)
    assert s.runs == [run] and run.running  # the same, live run
    assert s.recorder.statuses("slow") == ["queued", "running", "cancelled", "pending",
                                           "queued", "running"]  # fmt: skip
    assert run.states["slow"].attempt == 2
    assert not os.path.exists(f"/proc/{slow}")  # the cancelled attempt's whole tree is gone
    assert run.states["other"].status == "running" and run.states["other"].attempt == 1
    assert start_time(other) == other_started  # untouched: the very same process
    assert s.recorder.statuses("other") == ["queued", "running"]
    assert s.changed == [{"src/a.py"}]
    assert run.states["after"].status == "pending"  # downstream follows the rerun


def when(s: Session, stage: str, status: str) -> list[float]:
    """When `stage` went `status`, each time."""
    return [
        e.ts
        for e in s.recorder.events
        if isinstance(e, StageStatus) and (e.stage, e.status) == (stage, status)
    ]


async def test_a_change_to_a_service_input_restarts_it_and_reruns_its_dependents_once_ready(
    tmp_path: Path, watching: Callable[..., Session]
) -> None:
    """SPEC §10: the service restarts, what needs it reruns after it is ready again, and an
    unrelated running stage keeps its very process."""
    pipeline = make(
        tmp_path,
        """
        stages:
          api:
            service: true
            kill_grace: 1s
            run: echo "pid $$"; echo "serving $PIPEDECK_ATTEMPT"; exec sleep 60
            ready: {log: "serving"}
            inputs: ["src/**"]
          test:
            needs: [api]
            run: echo tested
          other:
            run: echo pid $$; exec sleep 60
            inputs: ["docs/**"]
    """,
    )
    s = watching(pipeline, keep_services=True)
    await until(lambda: s.recorder.statuses("test")[-1:] == ["succeeded"])
    await until(lambda: len(pids(s, "other")) == 1)
    run = s.runs[0]
    api, other = pids(s, "api")[0], pids(s, "other")[0]
    other_started = start_time(other)
    assert run.states["api"].status == "ready"  # kept up in watch mode
    (tmp_path / "src" / "a.py").write_text("x")
    await until(lambda: s.recorder.statuses("test").count("succeeded") == 2)
    assert s.runs == [run] and run.running  # the same, live run
    assert s.changed == [{"src/a.py"}]
    assert [line for line in s.recorder.lines("api") if line.startswith("serving")] == [
        "serving 1",
        "serving 2",
    ]
    assert run.states["api"].status == "ready" and run.states["api"].attempt == 2
    await until(lambda: not os.path.exists(f"/proc/{api}"))  # the old service's tree is gone
    assert pids(s, "api")[1] != api
    assert when(s, "test", "running")[1] >= when(s, "api", "ready")[1]  # after ready again
    assert run.states["other"].status == "running" and run.states["other"].attempt == 1
    assert start_time(other) == other_started  # untouched: the very same process
    assert s.recorder.statuses("other") == ["queued", "running"]


async def test_an_adopted_run_executing_elsewhere_is_rerun_in_place(
    tmp_path: Path, watching: Callable[..., Session]
) -> None:
    pipeline = make(
        tmp_path,
        """
        stages:
          slow:
            run: sleep 60
            inputs: ["src/**"]
            kill_grace: 1s
    """,
    )
    tui_run = Run(pipeline)  # executed by its owner, as the TUI does
    executing = asyncio.create_task(tui_run.execute())
    await until(lambda: tui_run.states["slow"].status == "running")
    s = watching(pipeline, previous=tui_run)
    await until(s.session.ready.is_set)
    (tmp_path / "src" / "a.py").write_text("x")
    await until(lambda: tui_run.states["slow"].attempt == 2)
    await until(lambda: tui_run.states["slow"].status == "running")
    assert not executing.done() and s.runs == []  # no new run: the live one goes on
    tui_run.cancel_all()
    await executing


async def test_a_person_editing_an_input_while_a_stage_reads_it_never_pauses_watch(
    tmp_path: Path, watching: Callable[..., Session]
) -> None:
    """Issue 9 item 14: edits during a 5 s stage that only reads the file restart it; only a
    stage's own writes count toward the loop guard."""
    pipeline = make(
        tmp_path,
        """
        stages:
          test:
            run: cat src/a.txt; sleep 5
            inputs: ["src/**"]
            kill_grace: 1s
    """,
    )
    (tmp_path / "src" / "a.txt").write_text("edit 0\n")
    s = watching(pipeline)
    await until(lambda: bool(s.runs))
    run = s.runs[0]
    for edit in range(1, 2 * LOOP_LIMIT + 2):
        await until(lambda e=edit: len(s.recorder.lines("test")) == e)  # attempt e read it
        (tmp_path / "src" / "a.txt").write_text(f"edit {edit}\n")
        await until(lambda e=edit: run.states["test"].attempt == e + 1)
        assert not s.session.paused, s.notices
    await until(lambda: run.states["test"].status == "succeeded", timeout=60)
    assert s.runs == [run]
    assert not s.session.paused and s.notices == []
    assert s.recorder.lines("test")[-1] == f"edit {2 * LOOP_LIMIT + 1}"
    (tmp_path / "src" / "a.txt").write_text("after the run\n")  # still watching
    await until(lambda: len(s.runs) == 2 and s.finished(2), timeout=60)


async def test_a_rename_save_triggers_exactly_one_rerun(
    tmp_path: Path, watching: Callable[..., Session]
) -> None:
    s = watching(make(tmp_path))
    await until(lambda: s.finished(1))
    tmp = tmp_path / "src" / "4913"
    tmp.write_text("new")
    os.replace(tmp, tmp_path / "src" / "a.py")
    await until(lambda: s.finished(2))
    await later_change(tmp_path, s)
    assert s.changed == [{"src/a.py"}, {"docs/later.md"}]  # nothing in between


async def test_a_burst_of_1000_files_is_one_rerun(
    tmp_path: Path, watching: Callable[..., Session]
) -> None:
    s = watching(make(tmp_path))
    await until(lambda: s.finished(1))
    await asyncio.to_thread(write_burst, tmp_path)
    await until(lambda: s.finished(2))
    await later_change(tmp_path, s)
    assert [len(paths) for paths in s.changed] == [1000, 1]  # one set, then the later one


async def test_a_stage_changing_its_own_input_is_caught_as_a_loop(
    tmp_path: Path, watching: Callable[..., Session]
) -> None:
    pipeline = make(
        tmp_path,
        """
        stages:
          gen:
            run: echo more > gen/out-$PIPEDECK_RUN_ID.txt  # a new file each time
            inputs: ["gen/**"]
    """,
    )
    (tmp_path / "gen").mkdir()
    s = watching(pipeline)
    await until(lambda: s.session.paused)
    assert len(s.runs) == 1 + LOOP_LIMIT
    last = f"gen/out-{s.runs[-1].run_id}.txt"
    assert s.notices and f"stage gen keeps changing its own input {last}" in s.notices[-1]
    assert last in s.session.banner
    await until(lambda: s.finished(len(s.runs)))
    (tmp_path / "gen" / "in.txt").write_text("a person's edit")  # not a stage's: resumes
    await until(lambda: len(s.runs) == 2 + LOOP_LIMIT)
    assert s.changed[-1] == {"gen/in.txt"}


async def later_change(tmp_path: Path, s: Session) -> None:
    """Make a change of its own (to docs/later.md) and wait for its rerun: change sets are
    handled in order, so a wrong rerun from an earlier change would show before it."""
    runs = len(s.runs)
    (tmp_path / "docs" / "later.md").write_text("later")
    await until(lambda: s.finished(runs + 1))


async def test_changes_made_while_paused_by_hand_are_picked_up_on_resume(
    tmp_path: Path, watching: Callable[..., Session]
) -> None:
    s = watching(make(tmp_path))
    await until(lambda: s.finished(1))
    assert s.session.toggle() is False  # the TUI's W
    assert s.session.banner == "watch paused"
    (tmp_path / "src" / "a.py").write_text("while paused")
    await until(lambda: s.session.banner == "watch paused · held: src/a.py")
    assert len(s.runs) == 1  # nothing reran while paused
    assert s.session.toggle() is True
    await until(lambda: s.finished(2))
    assert s.changed == [{"src/a.py"}]
    assert s.ran(s.runs[1]) == {"lint", "test"}


async def test_a_manual_stage_without_inputs_makes_no_run_and_changed_names_triggers_only(
    tmp_path: Path, watching: Callable[..., Session]
) -> None:
    pipeline = make(
        tmp_path,
        """
        stages:
          lint:
            run: echo lint
            inputs: ["src/**"]
          deploy:
            when: manual
            run: echo deploy
    """,
    )
    s = watching(pipeline)
    await until(lambda: s.finished(1))
    (tmp_path / "README.md").write_text("matches no inputs: no run (deploy is manual)")
    (tmp_path / "notes.txt").write_text("neither")
    (tmp_path / "src" / "a.py").write_text("x")
    await until(lambda: s.finished(2))
    (tmp_path / "src" / "b.py").write_text("y")
    await until(lambda: s.finished(3))
    assert s.changed == [{"src/a.py"}, {"src/b.py"}]  # README.md, notes.txt: never named
    assert s.ran(s.runs[1]) == s.ran(s.runs[2]) == {"lint"}


async def test_cancelling_the_session_cancels_the_active_run_in_order(
    tmp_path: Path, watching: Callable[..., Session]
) -> None:
    pipeline = make(
        tmp_path,
        """
        stages:
          slow:
            run: echo up; sleep 60 & wait
            kill_grace: 1s
    """,
    )
    s = watching(pipeline)
    await until(lambda: s.recorder.lines("slow") == ["up"])  # started, its pipes connected
    await until(lambda: len(marked_pids(s.runs[0].run_id)) == 2)  # bash and sleep
    await s.stop()
    run = s.runs[0]
    assert not run.running and run.states["slow"].status == "cancelled"
    assert [(e.status, e.exit_code) for e in s.recorder.events if isinstance(e, RunFinished)] == [
        ("cancelled", 130)
    ]
    assert marked_pids(run.run_id) == []


def processes_in(folder: Path) -> list[int]:
    """Pids of the processes whose working directory is `folder`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(os.readlink(f"/proc/{entry}/cwd")) == folder:
                    found.append(int(entry))
            except OSError:
                continue
    return found


async def headless_watch(tmp_path: Path, fmt: str) -> str:
    """`pipedeck run --watch --format FMT > out.txt` in the workspace: a change reruns the
    stage running then, and Ctrl-C ends it with 130 and nothing left running; returns out.txt."""
    make(
        tmp_path,
        """
        stages:
          hi:
            run: echo hi
          slow:
            needs: [hi]
            run: echo up-marker; sleep 60
            inputs: ["src/**"]
            kill_grace: 1s
    """,
    )
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [pipedeck_bin(), "run", "--watch", "--format", fmt],
            cwd=tmp_path,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        await until(lambda: out.read_text().count("up-marker") == 1)
        (tmp_path / "src" / "a.py").write_text("x")
        await until(lambda: out.read_text().count("up-marker") == 2)
        proc.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc.wait, 30) == 130, err.read_text()
    finally:
        proc.kill()
        proc.wait()
    assert processes_in(tmp_path) == []
    return out.read_text()


async def test_headless_plain_watch_prints_one_separator_naming_the_change(
    tmp_path: Path,
) -> None:
    out = await headless_watch(tmp_path, "plain")
    changed = [line for line in out.splitlines() if "changed" in line]
    assert len(changed) == 1 and "src/a.py" in changed[0]  # out.txt itself never triggers


async def test_headless_json_watch_restarts_the_running_stage_within_the_run(
    tmp_path: Path,
) -> None:
    events = [json.loads(line) for line in (await headless_watch(tmp_path, "json")).splitlines()]
    runs = [
        (e["type"], e["run_id"]) for e in events if e["type"] in ("run_started", "run_finished")
    ]
    run_id = runs[0][1]
    assert runs == [("run_started", run_id), ("run_finished", run_id)]
    slow = [
        (e["status"], e["attempt"])
        for e in events
        if e["type"] == "stage_status" and e["stage"] == "slow"
    ]
    assert slow[:6] == [
        ("queued", 0),
        ("running", 1),
        ("cancelled", 1),  # the change
        ("pending", 1),
        ("queued", 1),
        ("running", 2),
    ]
    # hi has no inputs: every change reruns it, then slow (which needs it) again
    running = [e["stage"] for e in events if e.get("status") == "running"]
    assert running == ["hi", "slow", "hi", "slow"]
    assert (events[-1]["status"], events[-1]["exit_code"]) == ("cancelled", 130)
