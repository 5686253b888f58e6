"""Loaded pipelines kept in `.pipedeck/loaded/`, so that an unchanged file loads without PyYAML.

`load(path)` returns what `engine.loader.load(path)` would. A valid pipeline is stored, pickled,
with what it was made of: the file's absolute path, size, mtime and sha256, and a stamp of
pipedeck's own code (its version and each engine module's size and mtime: a changed loader or
model never reads an old entry). A later load that finds all of them unchanged unpickles the
entry instead of parsing the YAML; anything else (no entry, an edited file, a damaged entry, one
written by other code) loads the file, and stores it again when it is valid. Invalid files are
never stored: their problems are always the loader's FILE:LINE:COL ones.

What the loader reads besides the file is not stored: secret values are looked up again on each
load, from the environment and then `.env` (a `.env` with a problem goes to the loader, which
reports it), and a pipeline naming a host found only in `~/.ssh/config` is not cached at all.

Entries are written only into an existing `.pipedeck/` (a `validate` of a fresh checkout leaves
no trace), atomically (a temporary file renamed), and best-effort: an unwritable folder only
means no cache. Unpickling admits only the model's own classes, so an entry crafted by someone
else can make nothing but a pipeline.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import stat
import sys
from dataclasses import replace
from typing import Any

from engine import __version__, spec
from engine.spec import LOCAL, MAX_FILE_BYTES, Pipeline

FOLDER = "loaded"  # under the pipeline's .pipedeck/
_FORMAT = 1
_ENGINE = os.path.dirname(os.path.abspath(spec.__file__))
_ALLOWED = {
    ("engine.spec", name)
    for name in ("Pipeline", "Stage", "Host", "SlurmOptions", "WatchConfig", "Resources", "Probe")
} | {("pathlib", "PosixPath")}


class _ModelUnpickler(pickle.Unpickler):
    """Unpickles the pipeline model's classes and nothing else (no other callables)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a pipeline")
        return super().find_class(module, name)


def load(path: str) -> Pipeline:
    """The pipeline at `path`, from the cache when nothing it was made of changed; else
    `engine.loader.load` (raising its `ConfigError`), storing the result when valid."""
    file = os.path.abspath(path)
    key = None
    try:
        info = os.stat(file)
        if stat.S_ISREG(info.st_mode) and info.st_size <= MAX_FILE_BYTES:
            with open(file, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
            key = _key(file, info, data)
            cached = _read(_entry(file), key)
            if cached is not None:
                return cached
    except (OSError, ValueError):  # unreadable: the loader says why, with the position
        pass
    from engine.loader import load as load_file

    if key is None:
        return load_file(path)
    pipeline = load_file(path, data=data)  # the bytes the key was made of
    if _cacheable(pipeline):
        _write(_entry(file), key, pipeline)
    return pipeline


def _key(file: str, info: os.stat_result, data: bytes) -> tuple[object, ...]:
    """What an entry is valid for: the file, its contents, and the code that loaded it."""
    code = sorted(
        (entry.name, st.st_size, st.st_mtime_ns)
        for entry in os.scandir(_ENGINE)
        if entry.name.endswith(".py") and (st := entry.stat())
    )
    digest = hashlib.sha256(data).hexdigest()
    return (
        _FORMAT,
        __version__,
        sys.hexversion,
        code,
        file,
        info.st_size,
        info.st_mtime_ns,
        digest,
    )


def _entry(file: str) -> str:
    """The entry's path: `.pipedeck/loaded/<sha256 of the file's path>.pickle` beside it."""
    name = hashlib.sha256(file.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return os.path.join(os.path.dirname(file), ".pipedeck", FOLDER, f"{name}.pickle")


def _cacheable(pipeline: Pipeline) -> bool:
    """False when a stage's host was found in ~/.ssh/config, which the key does not cover."""
    return all(s.host == LOCAL or s.host in pipeline.hosts for s in pipeline.stages.values())


def _read(entry: str, key: tuple[object, ...]) -> Pipeline | None:
    """The entry's pipeline, with today's secret values, if it was stored for `key`."""
    try:
        with open(entry, "rb") as handle:
            stored_key, names, pipeline = _ModelUnpickler(handle).load()
    except Exception:  # none, damaged or foreign: the file is loaded instead
        return None
    if stored_key != key or not isinstance(pipeline, Pipeline):
        return None
    if not names:
        return pipeline
    from engine import envfile

    secrets, problems = envfile.secret_values(names, os.environ, pipeline.path.parent / ".env")
    return None if problems else replace(pipeline, secrets=secrets)  # the loader reports them


def _write(entry: str, key: tuple[object, ...], pipeline: Pipeline) -> None:
    """Store the pipeline without its secret values, if `.pipedeck/` exists; best-effort."""
    state = os.path.dirname(os.path.dirname(entry))
    if not os.path.isdir(state):
        return
    names = list(pipeline.secrets)
    data = pickle.dumps((key, names, replace(pipeline, secrets={})), pickle.HIGHEST_PROTOCOL)
    temp = f"{entry}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(entry), exist_ok=True)
        with open(temp, "wb") as handle:
            handle.write(data)
        os.replace(temp, entry)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp)
