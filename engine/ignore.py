"""Which changed paths watch mode ignores (SPEC §5).

Always ignored: `.git/`, `.pipedeck/`, editor swap and backup files, every stage's `outputs`,
the pipeline's `watch.ignore`, whatever `.gitignore` files ignore, and the files this process's
stdout and stderr go to (`pipedeck run --watch > log.txt` must not trigger itself). `outputs`
are globs (`engine.globs`, as for the cache); every other rule is a gitignore pattern matched by
pathspec's `GitIgnoreSpec`; nested `.gitignore` files apply
relative to their own directory, deeper files win, and a path inside an ignored directory stays
ignored, as in git.
"""

from __future__ import annotations

import os
from pathlib import Path

from pathspec import GitIgnoreSpec
from watchfiles import Change

from engine import globs
from engine.spec import Pipeline

ALWAYS = (".git/", ".pipedeck/")
EDITOR_TEMPS = ("*.swp", "*.swx", "*~", ".#*")


def repo_root(workspace: Path) -> Path:
    """The nearest directory at or above `workspace` holding `.git`, else `workspace`."""
    for folder in (workspace, *workspace.parents):
        if (folder / ".git").exists():
            return folder
    return workspace


class IgnoreRules:
    """Decides whether a changed path (absolute) is ignored; `keep` is a watchfiles filter."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.workspace = pipeline.workspace
        outputs = tuple(glob for stage in pipeline.stages.values() for glob in stage.outputs)
        self._output = globs.matcher(outputs)
        self._fixed = GitIgnoreSpec.from_lines([*ALWAYS, *EDITOR_TEMPS, *pipeline.watch.ignore])
        self._base = repo_root(self.workspace)
        self._gitignores: dict[Path, GitIgnoreSpec | None] = {}
        self._own = own_output_files()

    def keep(self, change: Change, path: str) -> bool:
        """watchfiles `watch_filter`: True for a change that should count.

        A directory's own `modified` (its entries changed, as polling reports) is left out: the
        entries report themselves.
        """
        if os.path.basename(path) == ".gitignore":
            self._gitignores.pop(Path(path).parent, None)
        if change == Change.modified and os.path.isdir(path):
            return False
        return not self.ignored(path)

    def ignored(self, path: str | os.PathLike[str]) -> bool:
        """True when a change to `path` must not trigger anything."""
        full = Path(path)
        if self._own.get(full.name) == os.path.realpath(full):
            return True
        kinds = _kinds(full)
        rel = Path(os.path.relpath(full, self.workspace)).as_posix()
        if self._output(rel) or any(
            self._fixed.match_file(rel + ("/" if is_dir else "")) for is_dir in kinds
        ):
            return True
        try:
            parts = full.relative_to(self._base).parts
        except ValueError:
            return False
        for depth in range(1, len(parts)):
            if self._gitignored(parts[:depth], True):
                return True
        return any(self._gitignored(parts, is_dir) for is_dir in kinds)

    def _gitignored(self, parts: tuple[str, ...], is_dir: bool) -> bool:
        """The verdict of the `.gitignore` files above one entry: the deepest match wins."""
        verdict: bool | None = None
        for i in range(len(parts)):
            spec = self._spec(self._base.joinpath(*parts[:i]))
            if spec is None:
                continue
            include = spec.check_file("/".join(parts[i:]) + ("/" if is_dir else "")).include
            if include is not None:
                verdict = include
        return bool(verdict)

    def _spec(self, folder: Path) -> GitIgnoreSpec | None:
        """The parsed `.gitignore` of `folder` (None when it has none), cached until it changes."""
        if folder not in self._gitignores:
            try:
                lines = (folder / ".gitignore").read_text(errors="replace").splitlines()
            except OSError:
                self._gitignores[folder] = None
            else:
                self._gitignores[folder] = GitIgnoreSpec.from_lines(lines)
        return self._gitignores[folder]


def own_output_files() -> dict[str, str]:
    """File name -> real path of the regular files this process's stdout and stderr write to."""
    own = {}
    for fd in (1, 2):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if os.path.isfile(target):
            own[os.path.basename(target)] = target
    return own


def _kinds(path: Path) -> tuple[bool, ...]:
    """Whether to match `path` as a directory: its real kind, or both once it is gone."""
    if path.is_dir():
        return (True,)
    if path.exists():
        return (False,)
    return (False, True)
