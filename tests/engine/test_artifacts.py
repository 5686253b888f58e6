"""Artifacts: each successful stage's outputs kept per run with a manifest, old runs pruned."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from engine.artifacts import keep_outputs, keep_runs, list_artifacts, prune
from engine.cache import StageCache
from engine.history import History
from engine.spec import Pipeline, Stage
from tests.conftest import pipedeck_bin


def manifest_of(ws: Path, *rels: str) -> dict[str, list[object]]:
    return {
        rel: [hashlib.sha256((ws / rel).read_bytes()).hexdigest(), (ws / rel).stat().st_size]
        for rel in rels
    }


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    (tmp_path / "dist/sub").mkdir(parents=True)
    (tmp_path / "dist/app.whl").write_bytes(b"wheel")
    (tmp_path / "dist/sub/notes.txt").write_text("notes")
    return tmp_path


def test_outputs_are_kept_as_read_only_copies_with_a_sha256_manifest(ws: Path) -> None:
    state = ws / ".pipedeck"
    stage_dir = keep_outputs(state, "r1", "build[py=3.11]", ws,
                             manifest_of(ws, "dist/app.whl", "dist/sub/notes.txt"))  # fmt: skip
    kept = stage_dir / "files/dist/app.whl"
    assert kept.read_bytes() == b"wheel"
    assert kept.stat().st_ino != (ws / "dist/app.whl").stat().st_ino  # a copy, never a link
    assert kept.stat().st_mode & 0o222 == 0
    body = json.loads((stage_dir / "manifest.json").read_text())
    assert body["stage"] == "build[py=3.11]"
    assert body["files"]["dist/app.whl"] == {
        "sha256": hashlib.sha256(b"wheel").hexdigest(),
        "size": 5,
        "mtime_ns": kept.stat().st_mtime_ns,
    }
    found = list_artifacts(state)
    assert [(a.run_id, a.stage, a.path, a.size) for a in found] == [
        ("r1", "build[py=3.11]", "dist/app.whl", 5),
        ("r1", "build[py=3.11]", "dist/sub/notes.txt", 5),
    ]
    assert found[0].stored == kept
    assert all(a.intact for a in found)


def test_an_output_rewritten_in_place_leaves_the_kept_copy_as_it_was(ws: Path) -> None:
    state = ws / ".pipedeck"
    keep_outputs(state, "r1", "build", ws, manifest_of(ws, "dist/app.whl"))
    with open(ws / "dist/app.whl", "r+b") as f:  # what a shell `>` redirect does: same inode
        f.write(b"WHEEL")
    (artifact,) = list_artifacts(state)
    assert artifact.stored.read_bytes() == b"wheel"
    assert artifact.intact
    assert artifact.sha256 == hashlib.sha256(b"wheel").hexdigest()


def test_a_kept_file_changed_afterwards_is_not_intact(ws: Path) -> None:
    state = ws / ".pipedeck"
    keep_outputs(state, "r1", "build", ws, manifest_of(ws, "dist/app.whl"))
    (kept,) = list_artifacts(state)
    kept.stored.chmod(0o644)
    kept.stored.write_bytes(b"WHEEL")
    os.utime(kept.stored, ns=(1, 1))
    assert not list_artifacts(state)[0].intact


def test_only_the_last_runs_are_kept(ws: Path) -> None:
    state = ws / ".pipedeck"
    for i in range(5):
        keep_outputs(state, f"r{i}", "build", ws, manifest_of(ws, "dist/app.whl"), keep=3)
        os.utime(state / "artifacts" / f"r{i}", ns=(i * 10**9, (i + 1) * 10**9))
    keep_outputs(state, "r5", "build", ws, manifest_of(ws, "dist/app.whl"), keep=3)
    assert sorted({a.run_id for a in list_artifacts(state)}) == ["r3", "r4", "r5"]
    assert [a.run_id for a in list_artifacts(state, run_id="r4")] == ["r4"]
    assert prune(state, 1, current="r4") == ["r3"]  # the current run is never pruned
    assert sorted({a.run_id for a in list_artifacts(state)}) == ["r4", "r5"]


def test_keep_runs_comes_from_the_environment() -> None:
    assert keep_runs({}) == 20
    assert keep_runs({"PIPEDECK_KEEP_RUNS": "3"}) == 3
    assert keep_runs({"PIPEDECK_KEEP_RUNS": "zero"}) == 20
    assert keep_runs({"PIPEDECK_KEEP_RUNS": "0"}) == 20


@pytest.mark.parametrize("value", ["zero", "0", "-3", "1e3", "99999999999999999999999x"])
def test_a_bad_keep_runs_is_reported(value: str) -> None:
    said: list[str] = []
    assert keep_runs({"PIPEDECK_KEEP_RUNS": value}, warn=said.append) == 20
    assert said == [f"PIPEDECK_KEEP_RUNS={value!r} is not a whole number >= 1; "
                    "keeping the artifacts of the last 20 runs"]  # fmt: skip
    assert keep_runs({"PIPEDECK_KEEP_RUNS": value}, warn=said.append) == 20 and len(said) == 1
    assert keep_runs({"PIPEDECK_KEEP_RUNS": "7"}, warn=said.append) == 7 and len(said) == 1


def test_a_bad_keep_runs_is_reported_by_a_run(ws: Path) -> None:
    (ws / "pipedeck.yaml").write_text("version: 1\nstages:\n  b:\n    run: 'true'\n")
    done = subprocess.run([pipedeck_bin(), "run", str(ws / "pipedeck.yaml")],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PIPEDECK_KEEP_RUNS": "all"})  # fmt: skip
    assert done.returncode == 0
    assert "PIPEDECK_KEEP_RUNS='all' is not a whole number" in done.stderr


def test_record_success_keeps_artifacts_and_metrics(ws: Path) -> None:
    (ws / "src").mkdir()
    (ws / "src/a.py").write_text("a")
    (ws / "m.json").write_text(json.dumps({"loss": 0.5, "eval": {"acc": 0.9}, "tag": "x"}))
    stage = Stage(id="build", name="build", run="true", inputs=("src/**",),
                  outputs=("dist/**",), metrics="m.json")  # fmt: skip
    p = Pipeline(ws / "pipedeck.yaml", "p", {"build": stage}, {"build": ("build",)})
    history = History.for_state_dir(p.state_dir)
    cache = StageCache(p, history)
    cache.record_success(stage, cache.decide(stage, {}, False).fingerprint, "r1")
    assert sorted(a.path for a in list_artifacts(p.state_dir, "r1")) == [
        "dist/app.whl",
        "dist/sub/notes.txt",
    ]
    assert history.metrics("build", 5) == [("r1", {"eval.acc": 0.9, "loss": 0.5})]


def pipedeck_run(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([pipedeck_bin(), "run", str(ws / "pipedeck.yaml"), *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_a_stage_rewriting_its_output_in_place_keeps_earlier_runs_outputs(tmp_path: Path):
    """Issue 9.7: a `>` redirect rewrites the same inode; a kept hard link would change too."""
    (tmp_path / "pipedeck.yaml").write_text(
        "version: 1\nstages:\n  build:\n    run: echo run $N > out.txt\n    outputs: [out.txt]\n"
    )
    (tmp_path / "out.txt").write_text("")
    for n in ("1", "2"):
        done = subprocess.run([pipedeck_bin(), "run", str(tmp_path / "pipedeck.yaml")],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "N": n})  # fmt: skip
        assert done.returncode == 0, done.stderr
    first, second = list_artifacts(tmp_path / ".pipedeck")
    assert first.stored.read_text() == "run 1\n" and first.intact
    assert second.stored.read_text() == "run 2\n" and second.intact


def test_symlinks_in_outputs_are_kept_as_symlinks_never_followed(tmp_path: Path) -> None:
    """Issue 9.8: a venv-like tree, `ln -s b out/a`, a dangling link, a link out of the
    workspace: the run succeeds and each link is kept as the same link."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not for artifacts")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "pipedeck.yaml").write_text(
        textwrap.dedent(f"""\
        version: 1
        stages:
          build:
            run: |
              rm -rf out && mkdir -p out/venv/lib out/venv/bin
              echo b > out/b
              ln -s b out/a
              ln -s missing out/dangling
              ln -s {outside}/secret.txt out/escape
              ln -s {outside} out/escape-dir
              echo x > out/venv/lib/site.py
              ln -s lib out/venv/lib64
              ln -s /usr/bin/python3 out/venv/bin/python
            outputs: ["out/**"]
        """)
    )
    done = pipedeck_run(ws)
    assert done.returncode == 0, done.stdout + done.stderr
    kept = {a.path: a for a in list_artifacts(ws / ".pipedeck")}
    links = {"out/a": "b", "out/dangling": "missing", "out/escape": f"{outside}/secret.txt",
             "out/escape-dir": str(outside), "out/venv/lib64": "lib",
             "out/venv/bin/python": "/usr/bin/python3"}  # fmt: skip
    assert set(kept) == {"out/b", "out/venv/lib/site.py", *links}
    for path, target in links.items():
        assert kept[path].stored.is_symlink() and os.readlink(kept[path].stored) == target
        assert kept[path].intact
    assert kept["out/b"].stored.read_text() == "b\n"
    assert not any(p.name == "secret.txt" for p in (ws / ".pipedeck").rglob("*"))
    again = pipedeck_run(ws)  # and the cache copes with the links too
    assert again.returncode == 0, again.stdout + again.stderr


def test_secret_values_in_output_names_are_masked(tmp_path: Path) -> None:
    """Issue 9.10: `artifacts`, `artifacts --json` and manifest.json never show a secret."""
    (tmp_path / "pipedeck.yaml").write_text(
        "version: 1\nsecrets: [TOKEN]\nstages:\n  build:\n"
        "    run: mkdir -p out && echo x > out/key-$TOKEN.txt\n    outputs: [out/*]\n"
    )
    env = {**os.environ, "TOKEN": "hunter2secret"}
    done = subprocess.run([pipedeck_bin(), "run", str(tmp_path / "pipedeck.yaml")],
                          capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    listing = subprocess.run(
        [pipedeck_bin(), "artifacts", "-f", str(tmp_path / "pipedeck.yaml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    as_json = subprocess.run(
        [pipedeck_bin(), "artifacts", "--json", "-f", str(tmp_path / "pipedeck.yaml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    (manifest,) = (tmp_path / ".pipedeck/artifacts").glob("*/*/manifest.json")
    for text in (listing.stdout, as_json.stdout, manifest.read_text()):
        assert "out/key-***.txt" in text and "hunter2secret" not in text
    assert not any("hunter2secret" in str(p) for p in (tmp_path / ".pipedeck").rglob("*"))
