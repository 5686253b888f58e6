"""Which changed paths watch mode ignores (SPEC §5).

Always ignored: `.git/`, `.pipedeck/`, editor swap and backup files, every stage's `outputs`,
the pipeline's `watch.ignore`, whatever `.gitignore` files ignore, and the files this process's
stdout and stderr go to (`pipedeck run --watch > log.txt` must not trigger itself). `outputs`
are globs and `.gitignore` files apply as `engine.fileset` says (as for the cache and sync); the
other rules are gitignore patterns matched by pathspec's `GitIgnoreSpec`.
"""

from __future__ import annotations

import os
from pathlib import Path

from pathspec import GitIgnoreSpec
from watchfiles import Change

from engine import fileset, globs
from engine.spec import Pipeline

ALWAYS = tuple(f"{name}/" for name in sorted(fileset.SKIP_DIRS))
EDITOR_TEMPS = ("*.swp", "*.swx", "*~", ".#*")


class IgnoreRules:
    """Decides whether a changed path (absolute) is ignored; `keep` is a watchfiles filter."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.workspace = pipeline.workspace
        outputs = tuple(glob for stage in pipeline.stages.values() for glob in stage.outputs)
        self._output = globs.matcher(outputs)
        self._fixed = GitIgnoreSpec.from_lines([*ALWAYS, *EDITOR_TEMPS, *pipeline.watch.ignore])
        self._gitignores = fileset.GitIgnores(self.workspace)
        self._own = own_output_files()

    def keep(self, change: Change, path: str) -> bool:
        """watchfiles `watch_filter`: True for a change that should count.

        A directory's own `modified` (its entries changed, as polling reports) is left out: the
        entries report themselves.
        """
        if os.path.basename(path) == ".gitignore":
            self._gitignores.forget(Path(path).parent)
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
        return any(self._gitignores.ignored(full, is_dir) for is_dir in kinds)


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
