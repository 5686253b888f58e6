"""Errors of pipedeck's own state (`.pipedeck/`: history, logs, artifacts), said in one line.

Each message names the path and the cause ("... is a file, not a directory", "read-only file
system", "no space left on device"); none advises throwing the history away.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from engine.errors import PipedeckError


class StateError(PipedeckError):
    """pipedeck's state directory (or a file in it) cannot be used; the message says why."""


class NoSpaceError(StateError):
    """The disk holding pipedeck's state is full: `no space left on device: <path>`."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(f"no space left on device: {path}")
        self.path = Path(path)


def not_a_directory(path: Path) -> Path | None:
    """The first of `path` and its ancestors that exists but is not a directory, if any."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def cause(err: OSError, path: Path) -> str:
    """Why an operation on `path` failed, in a few words that name the culprit."""
    blocker = not_a_directory(path)
    if blocker is not None and err.errno in (errno.ENOTDIR, errno.EEXIST, errno.ENOENT):
        return f"{blocker} is a file, not a directory"
    if err.errno == errno.EROFS:
        return f"{path} is on a read-only file system"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to write to {path}"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on device: {path}"
    return f"{path}: {err.strerror or err}"


def make_dirs(path: Path, what: str) -> None:
    """`mkdir -p path`, or a StateError naming `what` lives there and why it cannot be made."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise StateError(f"cannot create {path} ({what}): {cause(err, path)}") from None
