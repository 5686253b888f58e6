"""Artifacts: the outputs of each successful stage, kept per run (SPEC §6).

Layout: `<state_dir>/artifacts/<run_id>/<stage>/manifest.json` and the output files under
`<stage>/files/<workspace-relative path>`. Each file is an immutable copy: a reflink (FICLONE)
where the file system shares blocks copy-on-write (btrfs, XFS, bcachefs), else a plain copy; never
a hard link, which a tool rewriting the output *in place* (a shell `>` redirect) would change.
Kept files are made read-only. A symlink is kept as a symlink to the same target (never followed,
so a venv or a link out of the workspace is kept as it was, and a dangling link is no error).
The manifest records each kept file's size and mtime (a link's target), so `list_artifacts`
reports a kept file changed afterwards as not `intact`. Secret values in output paths are masked
in the manifest and in the kept file's name.

The artifacts of the last `PIPEDECK_KEEP_RUNS` runs (default 20) are kept; older runs are pruned
whenever a new run stores its first artifact. A value that is not a whole number >= 1 is reported
and the default used.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from engine.logs import safe_name
from engine.mask import Masker

DEFAULT_KEEP_RUNS = 20
KEEP_RUNS_ENV = "PIPEDECK_KEEP_RUNS"
MANIFEST = "manifest.json"
FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int), share the source's blocks
COPY_CHUNK = 1 << 20
_reported: set[str] = set()  # bad PIPEDECK_KEEP_RUNS values already reported


class Artifact(NamedTuple):
    """One kept output file (or symlink)."""

    run_id: str
    stage: str
    path: str  # relative to the workspace
    sha256: str
    size: int
    stored: Path  # where the kept copy is
    intact: bool  # False when the kept file was changed (or removed) after it was kept


def keep_runs(
    environ: Mapping[str, str] | None = None, warn: Callable[[str], None] | None = None
) -> int:
    """How many runs' artifacts to keep: `PIPEDECK_KEEP_RUNS` when a whole number >= 1, else 20
    (a set but unusable value is reported through `warn`, once per value and process)."""
    text = (os.environ if environ is None else environ).get(KEEP_RUNS_ENV)
    if text is None or text.strip() == "":
        return DEFAULT_KEEP_RUNS
    if text.strip().isdigit() and int(text) >= 1:
        return int(text)
    if warn is not None and text not in _reported:
        _reported.add(text)
        warn(f"{KEEP_RUNS_ENV}={text!r} is not a whole number >= 1; "
             f"keeping the artifacts of the last {DEFAULT_KEEP_RUNS} runs")  # fmt: skip
    return DEFAULT_KEEP_RUNS


def copy_immutable(source: Path, target: Path) -> None:
    """Copy `source` to a new `target`: a reflink where the file system can, else a copy; the
    copy is read-only. A symlink is copied as a symlink (its target is never read)."""
    if source.is_symlink():
        os.symlink(os.readlink(source), target)
        return
    with open(source, "rb") as src, open(target, "xb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        except OSError:
            _copy(src, dst)
    shutil.copystat(source, target)
    target.chmod(target.stat().st_mode & ~0o222)


def _copy(src: BinaryIO, dst: BinaryIO) -> None:
    """Copy in the kernel (`copy_file_range`), else through user space."""
    try:
        while os.copy_file_range(src.fileno(), dst.fileno(), COPY_CHUNK):
            pass
    except OSError:  # an old kernel, or file systems it cannot copy between
        src.seek(0)
        dst.seek(0)
        dst.truncate()
        shutil.copyfileobj(src, dst, COPY_CHUNK)


def keep_outputs(
    state_dir: Path,
    run_id: str,
    stage_id: str,
    workspace: Path,
    manifest: Mapping[str, list[Any]],
    keep: int | None = None,
    *,
    masker: Masker | None = None,
    warn: Callable[[str], None] | None = None,
) -> Path:
    """Store a stage's outputs (`manifest`: path -> [sha256, size]) for a run; returns its dir.

    Paths are masked with `masker`. When this is the run's first stored stage, runs beyond the
    last `keep` (default: `keep_runs()`) are pruned.
    """
    mask = masker.mask_text if masker else str
    root = Path(state_dir) / "artifacts"
    run_dir = root / safe_name(run_id)
    first = not run_dir.exists()
    stage_dir = run_dir / safe_name(stage_id)
    files = stage_dir / "files"
    kept: dict[str, dict[str, object]] = {}
    for rel, (sha, size) in sorted(manifest.items()):
        name = mask(rel)
        target = files / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)  # kept earlier in this run (a rerun in place)
        try:
            copy_immutable(workspace / rel, target)
        except FileNotFoundError:
            continue  # removed since it was hashed (by a sibling stage): nothing to keep
        st = target.lstat()
        info: dict[str, object] = {"sha256": sha, "size": size, "mtime_ns": st.st_mtime_ns}
        if stat.S_ISLNK(st.st_mode):
            info["link"] = mask(os.readlink(target))
        kept[name] = info
    stage_dir.mkdir(parents=True, exist_ok=True)
    body = {"run_id": run_id, "stage": stage_id, "created": time.time(), "files": kept}
    tmp = stage_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(body, indent=2))
    tmp.replace(stage_dir / MANIFEST)
    if first:
        prune(state_dir, keep_runs(warn=warn) if keep is None else keep, current=run_id)
    return stage_dir


def _run_dirs(state_dir: Path) -> list[Path]:
    """Run directories, oldest first (by modification time)."""
    root = Path(state_dir) / "artifacts"
    return _by_age([p for p in root.iterdir() if p.is_dir()] if root.is_dir() else [])


def _by_age(dirs: list[Path]) -> list[Path]:
    return sorted(dirs, key=lambda p: (p.stat().st_mtime_ns, p.name))


def prune(state_dir: Path, keep: int, current: str | None = None) -> list[str]:
    """Delete the artifacts of all but the `keep` newest runs (never `current`); returns them."""
    return prune_runs(_run_dirs(state_dir), keep, current)


def prune_runs(dirs: list[Path], keep: int, current: str | None = None) -> list[str]:
    """Delete all but the `keep` newest of run folders `dirs` (oldest first), never `current`'s
    (pipedeck's artifacts, a workflow run's `.pipedeck/gha/RUN_ID`); returns their names."""
    doomed = [p for p in dirs[: max(0, len(dirs) - keep)] if p.name != safe_name(current or "")]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return [p.name for p in doomed]


def _intact(stored: Path, info: Mapping[str, object]) -> bool:
    try:
        st = stored.lstat()
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode):
        return "link" in info
    return (st.st_size, st.st_mtime_ns) == (info["size"], info.get("mtime_ns", st.st_mtime_ns))


def list_artifacts(state_dir: Path, run_id: str | None = None) -> list[Artifact]:
    """Kept artifacts, oldest run first; only `run_id`'s when given. A workflow's
    `actions/upload-artifact` files are there too: their path is `NAME/FILE`, under the
    artifact's name, and their stage the job that uploaded them."""
    from engine.gha.actions import UPLOADS  # a workflow run's uploads folder

    uploads = [p.parent for p in Path(state_dir).glob(f"gha/*/{UPLOADS}") if p.is_dir()]
    found: list[Artifact] = []
    for run_dir in _by_age(_run_dirs(state_dir) + uploads):
        if run_id is not None and run_dir.name != safe_name(run_id):
            continue
        if run_dir.parent.name == "gha":
            found += _uploaded(state_dir, run_dir.name)
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


def _uploaded(state_dir: Path, run_id: str) -> list[Artifact]:
    """The files a workflow run's `actions/upload-artifact` steps kept."""
    from engine.gha.actions import uploaded

    found = []
    for folder, body in uploaded(state_dir, run_id):
        for rel, info in body["files"].items():
            with contextlib.suppress(KeyError, TypeError, AttributeError):
                stored = folder / rel
                found.append(Artifact(run_id, info["job"], f"{body['name']}/{rel}", info["sha256"],
                                      info["size"], stored, _intact(stored, info)))  # fmt: skip
    return found
