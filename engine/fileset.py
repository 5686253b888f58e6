"""Which files a set of globs selects: one meaning for the cache, watch mode, sync and artifacts.

Globs (`inputs`, `outputs`, a host's `sync.exclude`) mean what `engine.globs` says: relative to
the workspace, `**` across directories, a directory named without wildcards means everything
under it, `!glob` excludes.

`.gitignore` files (pathspec's `GitIgnoreSpec`) apply relative to their own directory from the
repository root down; the deepest match wins, and a path inside an ignored directory stays
ignored, as in git (`GitIgnores`).

The tree walk (`walk`) never enters `.git` or `.pipedeck` (`SKIP_DIRS`) nor a symlinked
directory; the cache keeps symlinks as themselves, sync and `select` take the regular files a
name leads to (`regular_files`). `select` is that under the globs' literal bases, filtered by
`matcher`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from engine.globs import base, matcher, normalize, split

if TYPE_CHECKING:  # pathspec (10 ms) only when a .gitignore is read: not for a plain run
    from pathspec import GitIgnoreSpec

SKIP_DIRS = frozenset({".git", ".pipedeck"})


def repo_root(workspace: Path) -> Path:
    """The nearest directory at or above `workspace` holding `.git`, else `workspace`."""
    for folder in (workspace, *workspace.parents):
        if (folder / ".git").exists():
            return folder
    return workspace


class GitIgnores:
    """What the `.gitignore` files from the repository root down ignore, for paths under
    `workspace`. Each file is read once, until `forget` is told it changed."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.top = repo_root(workspace)
        self._prefix = workspace.relative_to(self.top).parts
        self._specs: dict[Path, GitIgnoreSpec | None] = {}

    def forget(self, folder: Path) -> None:
        """`folder`'s `.gitignore` changed: read it again when next needed."""
        self._specs.pop(folder, None)

    def ignored(self, path: Path, is_dir: bool) -> bool:
        """True when git ignores `path` (absolute) or a directory above it."""
        try:
            parts = path.relative_to(self.top).parts
        except ValueError:
            return False
        for depth in range(1, len(parts)):
            if self._verdict(parts[:depth], True):
                return True
        return self._verdict(parts, is_dir)

    def entry(self, rel: str, is_dir: bool) -> bool:
        """True when git ignores the workspace-relative `rel` itself (its parents not checked:
        for a walk that does not enter ignored directories)."""
        return self._verdict((*self._prefix, *rel.split("/")), is_dir)

    def _verdict(self, parts: tuple[str, ...], is_dir: bool) -> bool:
        """The verdict of the `.gitignore` files above one entry: the deepest match wins."""
        verdict: bool | None = None
        for i in range(len(parts)):
            spec = self._spec(self.top.joinpath(*parts[:i]))
            if spec is None:
                continue
            include = spec.check_file("/".join(parts[i:]) + ("/" if is_dir else "")).include
            if include is not None:
                verdict = include
        return bool(verdict)

    def _spec(self, folder: Path) -> GitIgnoreSpec | None:
        if folder not in self._specs:
            try:
                lines = (folder / ".gitignore").read_text(errors="replace").splitlines()
            except OSError:
                self._specs[folder] = None
            else:
                from pathspec import GitIgnoreSpec

                self._specs[folder] = GitIgnoreSpec.from_lines(lines)
        return self._specs[folder]


def walk(
    root: Path, start: str = "", skip: Callable[[str, bool], bool] | None = None
) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(path relative to `root`, its directory entry) of everything but directories under
    `root/start`: files, symlinks (never followed, a symlinked directory included) and the
    like, for the caller to stat as it means to. `skip(rel, is_dir)` leaves out entries (a
    skipped directory is not entered)."""
    stack = [(root / start if start else root, start)]
    while stack:
        folder, rel = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:  # not a directory (any more), unreadable
            continue
        for entry in entries:
            child = f"{rel}/{entry.name}" if rel else entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                if entry.name not in SKIP_DIRS and not (skip and skip(child, True)):
                    stack.append((Path(entry.path), child))
            elif skip is None or not skip(child, False):
                yield child, entry


def regular_files(
    root: Path, start: str = "", skip: Callable[[str, bool], bool] | None = None
) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, stat) of the regular files `walk` finds, a symlink to one included
    with its target's stat."""
    for rel, entry in walk(root, start, skip):
        try:
            st = entry.stat()
        except OSError:  # gone, or a dangling symlink
            continue
        if stat.S_ISREG(st.st_mode):
            yield rel, st


def select(root: Path, patterns: Iterable[str]) -> dict[str, os.stat_result]:
    """The regular files under `root` the globs select (see above), by relative path."""
    patterns = tuple(patterns)
    test = matcher(patterns)
    starts = sorted({base(normalize(p)) for p in split(patterns)[0]})
    found: dict[str, os.stat_result] = {}
    for start in starts:
        if any(start.startswith(f"{other}/") or not other for other in starts if other != start):
            continue  # walked with the folder above it
        if start and not (root / start).is_dir():
            try:
                st = (root / start).stat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and test(start):
                found[start] = st
            continue
        found.update((rel, st) for rel, st in regular_files(root, start) if test(rel))
    return found
