"""Artifacts: each successful stage's outputs kept per run with a manifest, old runs pruned."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from engine.artifacts import keep_outputs, keep_runs, list_artifacts, prune
from engine.cache import StageCache
from engine.history import History
from engine.spec import Pipeline, Stage


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


def test_outputs_are_hard_linked_with_a_sha256_manifest(ws: Path) -> None:
    state = ws / ".pipedeck"
    stage_dir = keep_outputs(state, "r1", "build[py=3.11]", ws,
                             manifest_of(ws, "dist/app.whl", "dist/sub/notes.txt"))  # fmt: skip
    kept = stage_dir / "files/dist/app.whl"
    assert kept.read_bytes() == b"wheel"
    assert kept.stat().st_ino == (ws / "dist/app.whl").stat().st_ino  # a link, not a copy
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


def test_an_output_rewritten_in_place_marks_its_kept_link_changed(ws: Path) -> None:
    state = ws / ".pipedeck"
    keep_outputs(state, "r1", "build", ws, manifest_of(ws, "dist/app.whl"))
    with open(ws / "dist/app.whl", "r+b") as f:  # what a shell `>` redirect does: same inode
        f.write(b"WHEEL")
    os.utime(ws / "dist/app.whl", ns=(1, 1))
    (artifact,) = list_artifacts(state)
    assert not artifact.intact
    assert artifact.sha256 == hashlib.sha256(b"wheel").hexdigest()  # what the stage made


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
