"""Artifacts: the outputs of each successful stage, kept per run (SPEC §6).

Layout: `<state_dir>/artifacts/<run_id>/<stage>/manifest.json` and the output files under
`<stage>/files/<workspace-relative path>`. Files are hard-linked where the file system allows
(no copy, no extra space), else copied. A hard link shares the file with the workspace: a tool
that later rewrites that output *in place* (a shell `>` redirect does) changes the kept copy too.
The manifest records each kept file's size and mtime, so `list_artifacts` reports such a file as
not `intact` (its sha256 in the manifest is what the stage made).

The artifacts of the last `PIPEDECK_KEEP_RUNS` runs (default 20) are kept; older runs are pruned
whenever a new run stores its first artifact.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.logs import safe_name

DEFAULT_KEEP_RUNS = 20
KEEP_RUNS_ENV = "PIPEDECK_KEEP_RUNS"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Artifact:
    """One kept output file."""

    run_id: str
    stage: str
    path: str  # relative to the workspace
    sha256: str
    size: int
    stored: Path  # where the kept copy is
    intact: bool  # False when the kept file was changed (or removed) after it was kept


def keep_runs(environ: Mapping[str, str] | None = None) -> int:
    """How many runs' artifacts to keep: `PIPEDECK_KEEP_RUNS` when a whole number >= 1, else 20."""
    text = (os.environ if environ is None else environ).get(KEEP_RUNS_ENV, "")
    return int(text) if text.strip().isdigit() and int(text) >= 1 else DEFAULT_KEEP_RUNS


def keep_outputs(
    state_dir: Path,
    run_id: str,
    stage_id: str,
    workspace: Path,
    manifest: Mapping[str, list[Any]],
    keep: int | None = None,
) -> Path:
    """Store a stage's outputs (`manifest`: path -> [sha256, size]) for a run; returns its dir.

    When this is the run's first stored stage, runs beyond the last `keep` are pruned.
    """
    root = Path(state_dir) / "artifacts"
    run_dir = root / safe_name(run_id)
    first = not run_dir.exists()
    stage_dir = run_dir / safe_name(stage_id)
    files = stage_dir / "files"
    kept: dict[str, dict[str, object]] = {}
    for rel, (sha, size) in sorted(manifest.items()):
        target = files / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(workspace / rel, target)
        except OSError:
            shutil.copy2(workspace / rel, target)
        kept[rel] = {"sha256": sha, "size": size, "mtime_ns": target.stat().st_mtime_ns}
    stage_dir.mkdir(parents=True, exist_ok=True)
    body = {"run_id": run_id, "stage": stage_id, "created": time.time(), "files": kept}
    tmp = stage_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(body, indent=2))
    tmp.replace(stage_dir / MANIFEST)
    if first:
        prune(state_dir, keep_runs() if keep is None else keep, current=run_id)
    return stage_dir


def _run_dirs(state_dir: Path) -> list[Path]:
    """Run directories, oldest first (by modification time)."""
    root = Path(state_dir) / "artifacts"
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir()]
    return sorted(dirs, key=lambda p: (p.stat().st_mtime_ns, p.name))


def prune(state_dir: Path, keep: int, current: str | None = None) -> list[str]:
    """Delete the artifacts of all but the `keep` newest runs (never `current`); returns them."""
    dirs = _run_dirs(state_dir)
    doomed = [p for p in dirs[: max(0, len(dirs) - keep)] if p.name != safe_name(current or "")]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return [p.name for p in doomed]


def _intact(stored: Path, info: Mapping[str, object]) -> bool:
    try:
        st = stored.stat()
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == (info["size"], info.get("mtime_ns", st.st_mtime_ns))


def list_artifacts(state_dir: Path, run_id: str | None = None) -> list[Artifact]:
    """Kept artifacts, oldest run first; only `run_id`'s when given."""
    found: list[Artifact] = []
    for run_dir in _run_dirs(state_dir):
        if run_id is not None and run_dir.name != safe_name(run_id):
            continue
        for manifest in sorted(run_dir.glob(f"*/{MANIFEST}")):
            try:
                body = json.loads(manifest.read_text())
                for rel, info in body["files"].items():
                    stored = manifest.parent / "files" / rel
                    found.append(Artifact(body["run_id"], body["stage"], rel, info["sha256"],
                                          info["size"], stored, _intact(stored, info)))  # fmt: skip
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue  # a half-written or foreign manifest: not an artifact
    return found
