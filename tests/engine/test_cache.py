"""Stage fingerprints, the up-to-date check, its reasons and the stat cache (SPEC §6)."""

from __future__ import annotations

import itertools
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from engine.cache import StageCache, glob_files
from engine.history import History
from engine.spec import Host, Pipeline, SlurmOptions, Stage
from engine.status import NOT_CACHEABLE

_clock = itertools.count(1_600_000_000 * 10**9, 10**9)  # 2020: outside the racy window


def write(path: Path, text: str, old: bool = True) -> None:
    """Write a file; date it in the past (a distinct second each time) so its stat-cache entry
    is trusted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if old:
        stamp = next(_clock)
        os.utime(path, ns=(stamp, stamp))


def pipeline(ws: Path, *stages: Stage, secrets: dict[str, str] | None = None) -> Pipeline:
    return Pipeline(
        path=ws / "pipedeck.yaml",
        name="p",
        stages={s.id: s for s in stages},
        groups={s.id: (s.id,) for s in stages},
        secrets=secrets or {},
    )


BUILD = Stage(
    id="build",
    name="build",
    run="cp src/a.py out/a.txt",
    inputs=("src/**/*.py",),
    outputs=("out/*.txt",),
)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    write(tmp_path / "src/a.py", "a = 1\n")
    write(tmp_path / "src/pkg/b.py", "b = 2\n")
    return tmp_path


def run_stage(p: Pipeline, stage: Stage, run_id: str, upstream: dict[str, str] | None = None):
    """Decide, and when not fresh, make the outputs and record the success (like the engine)."""
    cache = StageCache(p, History.for_state_dir(p.state_dir))
    decision = cache.decide(stage, upstream or {}, False)
    if not decision.fresh:
        write(p.workspace / "out/a.txt", (p.workspace / "src/a.py").read_text(), old=False)
        cache.record_success(stage, decision.fingerprint, run_id)
    return decision


def decide(p: Pipeline, stage: Stage, upstream: dict[str, str] | None = None, no_cache=False):
    return StageCache(p, History.for_state_dir(p.state_dir)).decide(stage, upstream or {}, no_cache)


def test_first_run_has_no_earlier_run_then_second_is_cached(ws: Path) -> None:
    p = pipeline(ws, BUILD)
    first = run_stage(p, BUILD, "r1")
    assert (first.fresh, first.why) == (False, "no earlier run")
    second = decide(p, BUILD)
    assert second.fresh
    assert second.fingerprint == first.fingerprint


def test_no_cache_runs_a_fresh_stage(ws: Path) -> None:
    p = pipeline(ws, BUILD)
    run_stage(p, BUILD, "r1")
    decision = decide(p, BUILD, no_cache=True)
    assert (decision.fresh, decision.why) == (False, "--no-cache")


def test_a_changed_input_file_is_named(ws: Path) -> None:
    p = pipeline(ws, BUILD)
    run_stage(p, BUILD, "r1")
    write(ws / "src/a.py", "a = 2\n")
    assert decide(p, BUILD).why == "src/a.py changed"


def test_added_and_removed_inputs_are_named(ws: Path) -> None:
    p = pipeline(ws, BUILD)
    run_stage(p, BUILD, "r1")
    write(ws / "src/pkg/deep/c.py", "c = 3\n")
    assert decide(p, BUILD).why == "src/pkg/deep/c.py added"
    (ws / "src/pkg/deep/c.py").unlink()
    (ws / "src/pkg/b.py").unlink()
    assert decide(p, BUILD).why == "src/pkg/b.py removed"


def test_files_outside_the_globs_do_not_matter(ws: Path) -> None:
    p = pipeline(ws, BUILD)
    run_stage(p, BUILD, "r1")
    write(ws / "src/notes.md", "not python\n")
    write(ws / "README", "x\n")
    assert decide(p, BUILD).fresh


def test_command_and_env_changes_are_named(ws: Path) -> None:
    p = pipeline(ws, BUILD)
    run_stage(p, BUILD, "r1")
    assert decide(p, replace(BUILD, run="cp -v src/a.py out/a.txt")).why == "command changed"
    assert decide(p, replace(BUILD, shell=("sh", "-c"))).why == "command changed"
    assert decide(p, replace(BUILD, env={"MODE": "fast"})).why == "env changed"


def test_secret_values_are_left_out_but_names_count(ws: Path) -> None:
    p = pipeline(ws, BUILD, secrets={"TOKEN": "one"})
    run_stage(p, BUILD, "r1")
    assert decide(replace(p, secrets={"TOKEN": "two"}), BUILD).fresh
    assert decide(replace(p, secrets={"OTHER": "one"}), BUILD).why == "env changed"


def test_moving_a_stage_to_another_host_is_not_cached(ws: Path) -> None:
    """Issue 9.4: the host (address, workdir, executor settings) is part of the fingerprint."""
    box = Host(name="box", address="10.0.0.1", workdir="/srv/a")
    remote = replace(BUILD, host="box")
    p = replace(pipeline(ws, remote), hosts={"box": box})
    run_stage(p, remote, "r1")
    assert decide(p, remote).fresh
    assert decide(replace(p, hosts={"box": replace(box, slots=9)}), remote).fresh
    assert decide(replace(p, hosts={"box": replace(box, address="10.0.0.2")}), remote).why == (
        "host changed"
    )
    assert decide(replace(p, hosts={"box": replace(box, workdir="/srv/b")}), remote).why == (
        "host changed"
    )
    assert decide(replace(p, hosts={"box": replace(box, port=2222)}), remote).why == (
        "host changed"
    )
    cluster = replace(box, executor="slurm", slurm=SlurmOptions(partition="gpu"))
    assert decide(replace(p, hosts={"box": cluster}), remote).why == "host changed"
    run_stage(replace(p, hosts={"box": cluster}), remote, "r2")
    other_partition = replace(cluster, slurm=SlurmOptions(partition="cpu"))
    assert decide(replace(p, hosts={"box": other_partition}), remote).why == "host changed"
    assert decide(replace(p, hosts={"box": replace(cluster, identity_file="k")}), remote).fresh
    other = {"box": box, "box2": replace(box, name="box2")}
    assert decide(replace(p, hosts=other), replace(remote, host="box2")).why == "host changed"
    assert decide(p, BUILD).why == "host changed"  # back to local


def test_symlinked_inputs_count_as_links_never_read_outside_the_workspace(tmp_path: Path):
    """Issue 9.8: a link is hashed as its target path plus, inside the workspace only, the
    target's contents; a dangling link or a linked directory is no error."""
    ws, outside = tmp_path / "ws", tmp_path / "outside.txt"
    write(ws / "src/a.py", "a = 1\n")
    write(ws / "src/real.py", "x = 1\n")
    write(outside, "secret\n")
    (ws / "src/inside.py").symlink_to("real.py")
    (ws / "src/escape.py").symlink_to(outside)
    (ws / "src/dangling.py").symlink_to("nowhere.py")
    (ws / "src/dir.py").symlink_to(tmp_path)
    stage = replace(BUILD, inputs=("src/**",))
    p = pipeline(ws, stage)
    run_stage(p, stage, "r1")
    assert decide(p, stage).fresh
    write(outside, "changed outside\n")
    assert decide(p, stage).fresh  # never read
    write(ws / "src/real.py", "x = 2\n")
    why = decide(p, stage).why
    assert why.startswith("src/inside.py changed") or why.startswith("src/real.py changed")
    run_stage(p, stage, "r2")
    (ws / "src/escape.py").unlink()
    (ws / "src/escape.py").symlink_to(tmp_path / "other.txt")
    assert decide(p, stage).why == "src/escape.py changed"


def test_globs_never_lead_out_of_the_workspace(tmp_path: Path) -> None:
    """An output `../manifest.json` is no file of the workspace: never hashed, never kept."""
    ws = tmp_path / "ws"
    write(ws / "src/a.py", "a\n")
    write(tmp_path / "manifest.json", "{}")
    write(tmp_path / "x.txt", "x")
    for patterns in [("../manifest.json",), ("src/../../x.txt",), ("../*.txt",), ("../**",)]:
        assert glob_files(ws, patterns) == [], patterns
    stage = replace(BUILD, outputs=("out/*.txt", "../manifest.json"))
    p = pipeline(ws, stage)
    run_stage(p, stage, "r1")
    from engine.artifacts import list_artifacts

    assert [a.path for a in list_artifacts(p.state_dir)] == ["out/a.txt"]


def test_upstream_change_is_named(ws: Path) -> None:
    p = pipeline(ws, BUILD)
    run_stage(p, BUILD, "r1", upstream={"gen": "f1"})
    assert decide(p, BUILD, upstream={"gen": "f1"}).fresh
    assert decide(p, BUILD, upstream={"gen": "f2"}).why == "upstream gen changed"


def test_missing_or_changed_outputs_rerun(ws: Path) -> None:
    p = pipeline(ws, BUILD)
    run_stage(p, BUILD, "r1")
    write(ws / "out/a.txt", "tampered\n")
    assert decide(p, BUILD).why == "outputs changed"
    (ws / "out/a.txt").unlink()
    assert decide(p, BUILD).why == "outputs missing"


@pytest.mark.parametrize(
    ("inputs", "outputs", "why"),
    [
        (True, False, "no outputs declared"),
        (False, True, "no inputs declared"),
        (False, False, "no inputs/outputs declared"),
    ],
)
def test_stage_without_inputs_or_outputs_always_runs_saying_what_is_missing(
    ws: Path, inputs: bool, outputs: bool, why: str
) -> None:
    stage = replace(BUILD, inputs=BUILD.inputs if inputs else (),
                    outputs=BUILD.outputs if outputs else ())  # fmt: skip
    p = pipeline(ws, stage)
    run_stage(p, stage, "r1")
    decision = decide(p, stage)
    assert (decision.fresh, decision.why) == (False, why)
    assert why in NOT_CACHEABLE  # plain output leaves it out
    assert decision.fingerprint  # still given, for downstream stages


def test_decide_now_answers_for_a_stage_without_inputs_as_decide_does(ws: Path) -> None:
    """The event loop's verdict, without a thread hop: the same fingerprint and reason as
    `decide`, only for a stage without inputs (nothing to hash), only while no other call holds
    the cache."""
    bare = replace(BUILD, id="bare", inputs=())
    p = pipeline(ws, BUILD, bare)
    cache = StageCache(p, History.for_state_dir(p.state_dir))
    up = {"build": "f" * 64}
    now = cache.decide_now(bare, up, False)
    assert now is not None and now == decide(p, bare, up)
    assert cache.decide_now(bare, up, True) == decide(p, bare, up, no_cache=True)
    assert cache.decide_now(BUILD, {}, False) is None  # it has files to hash
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with cache._lock:
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        held.wait(5)
        assert cache.decide_now(bare, up, False) is None  # busy: never waits on the loop
    finally:
        release.set()
        holder.join()


def test_outputs_inside_the_input_globs_are_not_inputs(ws: Path) -> None:
    stage = replace(BUILD, inputs=("**",), outputs=("out/**",))
    p = pipeline(ws, stage)
    run_stage(p, stage, "r1")
    assert decide(p, stage).fresh


def test_unchanged_files_are_not_hashed_again(ws: Path) -> None:
    for i in range(50):
        write(ws / f"src/many/m{i}.py", f"m = {i}\n")
    p = pipeline(ws, BUILD)
    run_stage(p, BUILD, "r1")
    cache = StageCache(p, History.for_state_dir(p.state_dir))
    assert cache.decide(BUILD, {}, False).fresh
    assert cache.hasher.hashed == 1  # only out/a.txt, written a moment ago, is read again
    write(ws / "src/many/m7.py", "m = 700\n")
    cache = StageCache(p, History.for_state_dir(p.state_dir))
    assert cache.decide(BUILD, {}, False).why == "src/many/m7.py changed"
    assert cache.hasher.hashed == 1  # m7.py alone (outputs are not checked on a mismatch)


def test_a_replaced_file_with_the_same_size_and_mtime_is_hashed_again(ws: Path) -> None:
    p = pipeline(ws, BUILD)
    run_stage(p, BUILD, "r1")
    st = (ws / "src/a.py").stat()
    write(ws / "src/a_new.py", "a = 9\n")
    os.utime(ws / "src/a_new.py", ns=(st.st_mtime_ns, st.st_mtime_ns))
    os.replace(ws / "src/a_new.py", ws / "src/a.py")  # same size and mtime, another inode
    assert decide(p, BUILD).why == "src/a.py changed"


def test_each_decision_is_remembered_for_downstream_stages(ws: Path) -> None:
    p = pipeline(ws, BUILD)
    cache = StageCache(p, History.for_state_dir(p.state_dir))
    decision = cache.decide(BUILD, {}, False)
    assert cache.fingerprints == {"build": decision.fingerprint}


def test_globs(tmp_path: Path) -> None:
    for rel in ("a.py", "src/b.py", "src/x/c.py", "src/x/d.txt", ".git/e.py", "src/.pipedeck/f"):
        write(tmp_path / rel, "x")
    assert glob_files(tmp_path, ("**/*.py",)) == ["a.py", "src/b.py", "src/x/c.py"]
    assert glob_files(tmp_path, ("src/*.py",)) == ["src/b.py"]
    assert glob_files(tmp_path, ("src",)) == ["src/b.py", "src/x/c.py", "src/x/d.txt"]
    assert glob_files(tmp_path, ("./src/x/?.[pt]*",)) == ["src/x/c.py", "src/x/d.txt"]
    assert glob_files(tmp_path, ("src/**",), exclude=("**/*.txt",)) == ["src/b.py", "src/x/c.py"]
    assert glob_files(tmp_path, ("nothing/**", "a.py")) == ["a.py"]


def test_a_success_makes_files_under_its_outputs_visible_to_later_decisions(ws: Path) -> None:
    gen = Stage(id="gen", name="gen", run="make gen", inputs=("src/**",), outputs=("gen/**",))
    use = Stage(id="use", name="use", run="use gen", needs=("gen",), inputs=("gen/**", "src/**"),
                outputs=("out/use.txt",))  # fmt: skip
    p = pipeline(ws, gen, use)
    cache = StageCache(p, History.for_state_dir(p.state_dir))
    before = cache.decide(use, {"gen": "f"}, False).fingerprint
    decision = cache.decide(gen, {}, False)
    write(ws / "gen/made.py", "made\n")
    cache.record_success(gen, decision.fingerprint, "r1")
    after = cache.decide(use, {"gen": "f"}, False).fingerprint
    assert after != before
    write(ws / "src/new.py", "new\n")  # not under any succeeded stage's outputs
    assert cache.decide(use, {"gen": "f"}, False).fingerprint == after  # one listing per run
    cache.forget()  # what track_run does when the run (re)starts executing
    assert cache.decide(use, {"gen": "f"}, False).why == "no earlier run"
    assert cache.decide(use, {"gen": "f"}, False).fingerprint != after


def test_files_a_sibling_made_under_the_same_globs_do_not_count(ws: Path) -> None:
    p = pipeline(ws, BUILD)
    run_stage(p, BUILD, "r1")
    write(ws / "out/sibling.txt", "made by another matrix instance\n")
    assert decide(p, BUILD).fresh


def test_stat_cache_entries_of_deleted_files_are_dropped(ws: Path) -> None:
    p = pipeline(ws, BUILD)
    run_stage(p, BUILD, "r1")
    history = History.for_state_dir(p.state_dir)
    assert "src/pkg/b.py" in history.file_hashes()
    (ws / "src/pkg/b.py").unlink()
    decide(p, BUILD)
    assert set(history.file_hashes()) == {"src/a.py"}


TREE = ("a.py", "b.txt", ".hidden.py", "src/c.py", "src/d/e.py", "src/d/f/g.py", "src/d/f/h.txt",
        "docs/i.md", "docs/src/j.py", "x1.py", "x22.py")  # fmt: skip


@pytest.mark.parametrize(
    "pattern",
    ["*.py", "**/*.py", "src/**", "src/**/*.py", "src/*/*.py", "**/f/*", "**/src/**/*.py",
     "x?.py", "x[0-9].py", "x[!1]*.py", "src/d/**/g.py", "**", "*/*", "docs/**/j.py"],
)  # fmt: skip
def test_globs_match_like_python_glob(tmp_path: Path, pattern: str) -> None:
    import glob

    for rel in TREE:
        write(tmp_path / rel, "x")
    expected = sorted(
        p for p in glob.glob(pattern, root_dir=tmp_path, recursive=True, include_hidden=True)
        if (tmp_path / p).is_file()
    )  # fmt: skip
    assert glob_files(tmp_path, (pattern,)) == expected


def test_runs_tracked_in_one_project_share_one_history_connection(ws: Path) -> None:
    from engine.cache import track_run
    from engine.run import Run

    p = pipeline(ws, BUILD)
    first, second = Run(p), Run(p, trigger="watch")
    assert track_run(first).history is track_run(second).history
    assert first.cache is not None and first.cache is not second.cache


def test_cache_and_watch_mode_agree_on_what_inputs_match(tmp_path: Path) -> None:
    """One glob meaning: the files the cache hashes are exactly those whose change reruns."""
    from engine import globs

    for rel in ["a.py", "src/b.py", "src/x/c.py", "docs/_build/i.html", "docs/g.md", "setup.cfg"]:
        write(tmp_path / rel, "x")
    everything = glob_files(tmp_path, ("**",))
    for patterns in [
        ("*.py",),
        ("src/*",),
        ("**/*.py", "!src/x/**"),
        ("docs", "!docs/_build/**"),
        ("/setup.cfg",),
        ("./src/**",),
    ]:
        hashed = glob_files(tmp_path, patterns)
        watched = [p for p in everything if globs.matcher(patterns)(p)]
        assert hashed == watched, patterns


def test_the_stores_never_import_the_scheduler() -> None:
    """Issue 10: the session wires cache and history to a Run; the stores do not import it."""
    import subprocess
    import sys

    code = ("import sys, engine.cache, engine.history, engine.artifacts, engine.metrics, "
            "engine.logs; print(sorted(m for m in sys.modules if m in "
            "('engine.run', 'engine.session', 'textual', 'rich')))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
