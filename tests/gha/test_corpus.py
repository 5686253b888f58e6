"""Real workflows of well-known Python projects validate, and `graph` gives the instance count
GitHub runs (checked by hand for httpx: 5, requests: 8x3-1 + 2, textual: 3x6, flask: 11 include
entries + 1, fastapi: 5x2 + 3, requests' typecheck: 2, pydantic's integration: 6 + 6, pytest's
deploy: 5 jobs without a matrix; black's release tests: 4x3, its diff-shades: 4 jobs, one a
matrix `include` from needs (one stage), fastapi's redistribute: 2 + 1).

The workflows are not copied into this repository (they are the projects' files): tests/gha/
corpus.json names each one's repository, path and commit, and they are read from a local git
mirror (`PIPEDECK_GHA_MIRRORS`, default /work/.mirror/OWNER+NAME/repo, as the project's
`fetch` tool lays them out). This machine has no network but the package registries, so the files
cannot be fetched at test time: where a mirror is missing, its tests fail in CI (`CI` set) and
skip on a developer machine, naming it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from engine.gha.loader import load_workflow
from tests.conftest import pipedeck_bin

CORPUS = json.loads((Path(__file__).parent / "corpus.json").read_text())
MIRRORS = Path(os.environ.get("PIPEDECK_GHA_MIRRORS", "/work/.mirror"))


def fetch(entry: dict[str, Any], into: Path) -> Path:
    """The workflow file at its commit, written under `into`/.github/workflows."""
    target = into / entry["path"]
    target.parent.mkdir(parents=True, exist_ok=True)
    mirror = MIRRORS / entry["repo"].replace("/", "+") / "repo"
    if mirror.is_dir():
        done = subprocess.run(
            ["git", "-C", str(mirror), "show", f"{entry['commit']}:{entry['path']}"],
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            target.write_bytes(done.stdout)
            return target
    missing = f"{entry['repo']} at {entry['commit'][:12]} is not mirrored under {MIRRORS}"
    if os.environ.get("CI"):
        pytest.fail(missing + " (CI must have every corpus mirror)")
    pytest.skip(missing + " (a developer machine without the mirror)")


@pytest.mark.parametrize("entry", CORPUS, ids=[f"{e['repo']}:{e['path']}" for e in CORPUS])
def test_real_workflow_validates_with_githubs_instance_count(
    entry: dict[str, Any], tmp_path: Path
) -> None:
    path = fetch(entry, tmp_path)
    pipeline = load_workflow(path).pipeline
    assert len(pipeline.groups) == entry["jobs"]
    assert len(pipeline.stages) == entry["instances"]


def test_corpus_has_at_least_ten_projects() -> None:
    assert len({e["repo"] for e in CORPUS}) >= 10


def test_graph_of_a_real_workflow_lists_matrix_instances(tmp_path: Path) -> None:
    entry = next(e for e in CORPUS if e["repo"] == "encode/httpx")
    path = fetch(entry, tmp_path)
    done = subprocess.run([pipedeck_bin(), "graph", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for version in ("3.9", "3.10", "3.11", "3.12", "3.13"):
        assert f"tests[python-version={version}]" in done.stdout
