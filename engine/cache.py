"""Stage fingerprints and the up-to-date check (SPEC §6).

A stage's fingerprint is a sha256 over its command (script, shell, cwd), its environment (secret
names, never their values), where it runs (a remote stage's host: address, port, user, workdir
and executor settings), its declared input and output globs, the contents of the files its
inputs match (outputs excluded) and its upstream stages' fingerprints. A stage with both `inputs`
and `outputs` is fresh (`cached`) when its fingerprint equals that of its last success and its
outputs still exist with the contents recorded then.

File hashes are kept in a stat cache in the history database: a file whose size, mtime_ns and
inode are unchanged is not read again. Entries for files modified in the last second are not
trusted (a second write in the same clock tick could keep size and mtime).

Globs mean what `engine.globs` says; the walk is `engine.fileset`'s, which never searches `.git`
and `.pipedeck` directories.
Symlinks are never followed out of the workspace: a symlink counts as itself, its target path
(plus, for a regular file inside the workspace, that file's contents); a symlinked directory is
not descended into, and a dangling link is no error.

Within one execution of a run, directory listings and input hashes are shared between decisions,
so the 200 stages of a no-op rerun list and check a large tree once. A stage's success drops the
listings its declared `outputs` could touch: files one stage writes and another reads must be
declared as the writer's `outputs` (as with make or go-task).

`decide` and `record_success` are thread-safe (one lock per cache) and do file and database work:
the scheduler calls them in a worker thread, never on the event loop; `decide_now` gives the
verdict of a stage without inputs, which needs neither, at once.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import itertools
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from engine import artifacts, fileset, globs, mask
from engine.events import Event, RunStarted
from engine.history import History, Success, open_history, pipeline_file
from engine.mask import Masker
from engine.spec import Host, Pipeline, Stage
from engine.status import not_cacheable

RACY_NS = 1_000_000_000

__all__ = ["Decision", "FileHasher", "StageCache", "glob_files", "track_run"]


class Decision(NamedTuple):
    """A cache verdict: the stage's fingerprint, whether its last success still holds, and why."""

    fingerprint: str
    fresh: bool
    why: str


class _Entry(NamedTuple):
    """A file (or symlink) found by a walk: its workspace-relative path and stat identity."""

    rel: str
    size: int
    mtime_ns: int
    inode: int
    link: str | None = None  # a symlink's target, as written


def _entry(rel: str, path: str | Path) -> _Entry | None:
    """The entry of a regular file or symlink (never followed); None for anything else."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return _Entry(rel, st.st_size, st.st_mtime_ns, st.st_ino, os.readlink(path))
    if stat.S_ISREG(st.st_mode):
        return _Entry(rel, st.st_size, st.st_mtime_ns, st.st_ino)
    return None


class _Walker:
    """Lists files under workspace directories, remembering each listing until `forget()`."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self._listings: dict[str, list[_Entry]] = {}
        self.new: list[str] = []  # bases listed since the caller last emptied this

    def forget(self, bases: set[str]) -> None:
        """Drop the listings that files under any of `bases` could be part of."""
        for base in [b for b in self._listings if any(_overlap(b, other) for other in bases)]:
            del self._listings[base]

    def listing(self, base: str) -> list[_Entry]:
        """Every file under `base` (workspace-relative, "" for the workspace), recursively."""
        if base not in self._listings:
            found: list[_Entry] = []
            if not _escapes(base) and not (self.workspace / base).is_symlink():
                for rel, entry in fileset.walk(self.workspace, base):
                    try:
                        file = _entry(rel, entry.path)
                    except OSError:
                        continue
                    if file is not None:
                        found.append(file)
            self._listings[base] = found
            self.new.append(base)
        return self._listings[base]

    def expand(self, pattern: str) -> list[_Entry]:
        """The files one glob matches."""
        pattern = globs.normalize(pattern)
        if not globs.has_magic(pattern):
            if _escapes(pattern):
                return []
            target = self.workspace / pattern
            if target.is_dir() and not target.is_symlink():
                return self.listing("" if pattern == "." else pattern)
            try:
                file = _entry(pattern, target)
            except OSError:
                return []
            return [file] if file is not None else []
        base = globs.base(pattern)
        if pattern == f"{base}/**" or (not base and pattern == "**"):
            return self.listing(base)
        regex = globs.regex(pattern)
        return [e for e in self.listing(base) if regex.fullmatch(e.rel)]


def _escapes(rel: str) -> bool:
    """True when a workspace-relative path leads out of the workspace (`../x`, `a/../../x`)."""
    return os.path.normpath(rel).split(os.sep, 1)[0] == ".."


def _overlap(a: str, b: str) -> bool:
    """True when one workspace-relative path is (under) the other."""
    return not a or not b or a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _match(walker: _Walker, patterns: tuple[str, ...]) -> list[_Entry]:
    """The files the globs match, minus those a `!glob` excludes, sorted."""
    include, exclude = globs.split(patterns)
    found = {e.rel: e for pattern in include for e in walker.expand(pattern)}
    paths = sorted(found)
    excluded = _matching(paths, exclude) if exclude else set()
    return [found[rel] for rel in paths if rel not in excluded]


def _matching(paths: list[str], patterns: tuple[str, ...]) -> set[str]:
    """The paths (sorted) that any glob matches, looking only under each glob's literal base."""
    hits: set[str] = set()
    for pattern in map(globs.normalize, patterns):
        base = globs.base(pattern)
        literal = not globs.has_magic(pattern)
        start = bisect.bisect_left(paths, base)
        if literal and start < len(paths) and paths[start] == base:
            hits.add(base)
        prefix = f"{base}/" if base else ""
        fullmatch = None if literal else globs.regex(pattern).fullmatch
        for path in itertools.islice(paths, bisect.bisect_left(paths, prefix), None):
            if not path.startswith(prefix):
                break
            if fullmatch is None or fullmatch(path):
                hits.add(path)
    return hits


def glob_files(
    workspace: Path, patterns: tuple[str, ...], exclude: tuple[str, ...] = ()
) -> list[str]:
    """Workspace-relative paths of the files the globs match, minus those `exclude` matches."""
    paths = [e.rel for e in _match(_Walker(workspace), patterns)]
    excluded = _matching(paths, exclude)
    return [p for p in paths if p not in excluded]


class FileHasher:
    """sha256 of workspace files, reusing earlier hashes while size, mtime_ns and inode hold."""

    def __init__(self, workspace: Path, history: History) -> None:
        self.workspace = workspace
        self._real = os.path.realpath(workspace)
        self.history = history
        self._known: dict[str, tuple[int, int, int, str]] | None = None
        self._dirty: dict[str, tuple[int, int, int, str]] = {}
        self._gone: set[str] = set()
        self.hashed = 0  # files actually read, for tests and benchmarks

    def _entries(self) -> dict[str, tuple[int, int, int, str]]:
        if self._known is None:
            self._known = self.history.file_hashes()
        return self._known

    def digest(self, entry: _Entry) -> str:
        """The file's sha256 (hex), read from disk only when its stat identity changed."""
        if entry.link is not None:
            return self._link_digest(entry)
        known = self._entries().get(entry.rel)
        if known and known[:3] == (entry.size, entry.mtime_ns, entry.inode):
            return known[3]
        with open(self.workspace / entry.rel, "rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()
        self.hashed += 1
        if entry.mtime_ns < time.time_ns() - RACY_NS:
            row = (entry.size, entry.mtime_ns, entry.inode, sha)
            self._entries()[entry.rel] = self._dirty[entry.rel] = row
        return sha

    def _link_digest(self, entry: _Entry) -> str:
        """A symlink's digest: its target path, and the contents of the target when that is a
        regular file inside the workspace (a target outside it is never read)."""
        content = ""
        real = os.path.realpath(self.workspace / entry.rel)
        if real.startswith(self._real + os.sep):
            rel = os.path.relpath(real, self._real)
            try:
                target = _entry(rel, real)
                if target is not None and target.link is None:
                    content = self.digest(target)
            except OSError:
                pass
        return hashlib.sha256(f"symlink\0{entry.link}\0{content}".encode()).hexdigest()

    def prune(self, base: str, present: list[_Entry]) -> None:
        """Forget the entries of files under `base` that a full listing of it no longer has."""
        prefix = f"{base}/" if base else ""
        names = {e.rel for e in present}
        known = self._entries()
        for path in [p for p in known if p.startswith(prefix) and p not in names]:
            del known[path]
            self._dirty.pop(path, None)
            self._gone.add(path)

    def manifest(self, entries: list[_Entry]) -> dict[str, list[object]]:
        """path -> [sha256, size] for files that still exist."""
        result: dict[str, list[object]] = {}
        for entry in entries:
            try:
                result[entry.rel] = [self.digest(entry), entry.size]
            except OSError:
                continue
        return result

    def flush(self) -> None:
        """Persist new stat-cache entries and drop those of files that are gone."""
        if self._dirty or self._gone:
            self.history.store_file_hashes(self._dirty, gone=self._gone)
            self._dirty, self._gone = {}, set()


def _sha(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def host_identity(host: Host | None) -> str:
    """What about a host decides where and how a stage runs: its address, port, user, workdir,
    executor and its settings (not its name, credentials files or slots)."""
    if host is None:
        return ""
    return repr(dataclasses.replace(host, name="", identity_file=None, known_hosts=None, slots=0))


class StageCache:
    """Fingerprints and verdicts for the stages of one pipeline; one per `Run`. Thread-safe.

    `warn` receives one-line problems that do not stop a run (an unreadable metrics file, a bad
    `PIPEDECK_KEEP_RUNS`); the default is the history's.
    """

    def __init__(
        self, pipeline: Pipeline, history: History, warn: Callable[[str], None] | None = None
    ) -> None:
        self.pipeline = pipeline
        self.history = history
        self.file = pipeline_file(pipeline.path, pipeline.state_dir)  # whose successes
        self.warn = warn or history.warn
        self.masker = Masker(pipeline.secrets.values())
        self.keep_runs = artifacts.keep_runs(warn=self.warn)  # a bad value is said at the start
        self._lock = threading.RLock()
        self.hasher = FileHasher(pipeline.workspace, history)
        self.fingerprints: dict[str, str] = {}  # stage id -> fingerprint of its last decision
        self._walker = _Walker(pipeline.workspace)
        self._inputs: dict[tuple[str, ...], tuple[str, dict[str, str], list[str]]] = {}
        self._pending: dict[str, tuple[dict[str, object], dict[str, str]]] = {}
        self._successes: dict[str, Success] | None = None
        self._stored_sets: set[str] = set()
        self._stale = False

    def forget(self) -> None:
        """Drop every listing and input hash: the next decisions look at the files again.
        Never waits (it is called on the event loop): the next decision does the dropping."""
        self._stale = True

    def _refresh(self) -> None:
        if self._stale:
            self._stale = False
            self._walker.forget({""})
            self._inputs.clear()

    def _prune_and_flush(self) -> None:
        """Keep the stat cache to files that exist: prune under each new listing, then save."""
        for base in self._walker.new:
            self.hasher.prune(base, self._walker.listing(base))
        self._walker.new.clear()
        self.hasher.flush()

    def _input_files(self, stage: Stage) -> tuple[str, dict[str, str]]:
        """The digest and hashes of the stage's input files, its own outputs left out."""
        if stage.inputs not in self._inputs:
            files = {e.rel: self.hasher.digest(e) for e in _match(self._walker, stage.inputs)}
            digest = _sha([list(stage.inputs), sorted(files.items())])
            self._inputs[stage.inputs] = (digest, files, sorted(files))
        digest, files, paths = self._inputs[stage.inputs]
        excluded = _matching(paths, stage.outputs)
        if not excluded:
            return digest, files
        files = {path: sha for path, sha in files.items() if path not in excluded}
        return _sha([list(stage.inputs), sorted(files.items())]), files

    def _parts(
        self, stage: Stage, upstream: Mapping[str, str]
    ) -> tuple[dict[str, object], dict[str, str]]:
        digest, files = self._input_files(stage)
        parts: dict[str, object] = {
            "command": _sha([stage.run, list(stage.shell), stage.cwd]),
            "env": _sha([sorted(stage.env.items()), sorted(self.pipeline.secrets)]),
            "inputs": digest,
            "outputs": _sha(list(stage.outputs)),
            "upstream": dict(sorted(upstream.items())),
        }
        if stage.is_remote:  # local stages keep the fingerprints they had before hosts counted
            host = self.pipeline.hosts.get(stage.host)
            parts["host"] = _sha([stage.host, host_identity(host)])
        return parts, files

    def decide(self, stage: Stage, upstream: Mapping[str, str], no_cache: bool = False) -> Decision:
        """The stage's fingerprint, whether its last success still holds, and why it runs.
        Reads and hashes files: call it in a worker thread."""
        with self._lock:
            return self._decide(stage, upstream, no_cache)

    def decide_now(
        self, stage: Stage, upstream: Mapping[str, str], no_cache: bool = False
    ) -> Decision | None:
        """`decide`, for a stage without `inputs` while no other call is at work: then it
        reads no file and no database (no inputs to hash; such a stage is never fresh), and
        the event loop may call it. None otherwise: ask `decide` in a worker thread."""
        if stage.inputs or not self._lock.acquire(blocking=False):
            return None
        try:
            return self._decide(stage, upstream, no_cache)
        finally:
            self._lock.release()

    def _decide(self, stage: Stage, upstream: Mapping[str, str], no_cache: bool) -> Decision:
        self._refresh()
        parts, files = self._parts(stage, upstream)
        fingerprint = _sha(parts)
        self.fingerprints[stage.id] = fingerprint
        self._pending[stage.id] = (parts, files)
        try:
            why = self._why(stage, fingerprint, parts, files, no_cache)
        finally:
            self._prune_and_flush()
        return Decision(fingerprint, why is None, why or "up to date")

    def _why(
        self,
        stage: Stage,
        fingerprint: str,
        parts: dict[str, object],
        files: dict[str, str],
        no_cache: bool,
    ) -> str | None:
        """Why the stage must run, or None when it is fresh."""
        if no_cache:
            return "--no-cache"
        if not (stage.inputs and stage.outputs):
            return not_cacheable(bool(stage.inputs), bool(stage.outputs))
        if self._successes is None:
            self._successes = self.history.successes(self.file)
        last = self._successes.get(stage.id)
        if last is None:
            return "no earlier run"
        if last.fingerprint != fingerprint:
            return self._difference(last.parts, parts, files)
        now = self.hasher.manifest(_match(self._walker, stage.outputs))
        if not now or any(path not in now for path in last.outputs):
            return "outputs missing"
        if any(now[path] != list(kept) for path, kept in last.outputs.items()):
            return "outputs changed"
        return None  # files the globs match that it did not make (a sibling's) do not count

    def _difference(
        self, old: Mapping[str, object], new: Mapping[str, object], files: dict[str, str]
    ) -> str:
        """A short reason naming the first thing that differs from the last success."""
        if old.get("host") != new.get("host"):
            return "host changed"
        for key in ("command", "env"):
            if old.get(key) != new.get(key):
                return f"{key} changed"
        if old.get("inputs") != new.get("inputs"):
            previous = self.history.input_set(str(old.get("inputs")))
            return _files_changed(previous, files)
        old_up = old.get("upstream") or {}
        new_up = new.get("upstream") or {}
        assert isinstance(old_up, dict) and isinstance(new_up, dict)
        for name in sorted(set(old_up) | set(new_up)):
            if old_up.get(name) != new_up.get(name):
                return f"upstream {name} changed"
        return "declared outputs changed"

    def keeps(self, stage: Stage) -> bool:
        """Whether `record_success` has anything to keep of `stage` (a success to reuse,
        artifacts, metrics); the scheduler skips the call (a thread hop) when it has not."""
        return bool(stage.outputs or stage.metrics)

    def record_success(self, stage: Stage, fingerprint: str, run_id: str) -> None:
        """After a stage succeeded: remember its fingerprint and outputs, keep its artifacts
        (pruning old runs), and record its metrics. Call for every succeeded stage, in a worker
        thread (it hashes and copies files)."""
        with self._lock:
            self._record_success(stage, fingerprint, run_id)

    def _record_success(self, stage: Stage, fingerprint: str, run_id: str) -> None:
        self._refresh()
        bases = {globs.base(globs.normalize(p)) for p in stage.outputs}
        self._walker.forget(bases)
        for key in [k for k in self._inputs if any(_overlap(globs.base(globs.normalize(p)), b)
                                                  for p in k for b in bases)]:  # fmt: skip
            del self._inputs[key]
        manifest = self.hasher.manifest(_match(self._walker, stage.outputs))
        self._prune_and_flush()
        pending = self._pending.get(stage.id)
        if stage.inputs and stage.outputs and pending and _sha(pending[0]) == fingerprint:
            success = Success(fingerprint, run_id, pending[0], manifest)
            digest = str(pending[0]["inputs"])
            files = None if digest in self._stored_sets else pending[1]
            self.history.record_success(self.file, stage.id, success, files)
            self._stored_sets.add(digest)
            if self._successes is not None:
                self._successes[stage.id] = success
        if manifest:
            artifacts.keep_outputs(self.pipeline.state_dir, run_id, stage.id,
                                   self.pipeline.workspace, manifest, self.keep_runs,
                                   masker=self.masker)  # fmt: skip
        if stage.metrics:
            from engine import metrics  # only for stages that name a metrics file

            metrics.record(self.history, self.pipeline.workspace, run_id, stage,
                           masker=self.masker, warn=self.warn)  # fmt: skip


def _files_changed(previous: Mapping[str, str] | None, files: Mapping[str, str]) -> str:
    """A reason such as `src/a.py changed` or `src/b.py added (+2 more)`."""
    if previous is None:
        return "inputs changed"
    changes = [f"{p} changed" for p in sorted(files) if p in previous and previous[p] != files[p]]
    changes += [f"{p} added" for p in sorted(files) if p not in previous]
    changes += [f"{p} removed" for p in sorted(previous) if p not in files]
    if not changes:
        return "inputs changed"
    return changes[0] + (f" (+{len(changes) - 1} more)" if len(changes) > 1 else "")


class Tracked(Protocol):
    """What `track_run` needs of a run (an `engine.run.Run`)."""

    pipeline: Pipeline
    run_id: str
    trigger: str
    cache: Any

    def subscribe(self, subscriber: Callable[[Event], Any]) -> Any: ...


def track_run(
    run: Tracked, history: History | None = None, warn: Callable[[str], None] | None = None
) -> StageCache:
    """Give `run` a stage cache and record it in the history: call before `run.execute()`.

    Marks runs left behind by a crashed pipedeck as interrupted, sweeping their processes (in a
    background thread, once per history: this never waits on SQLite or /proc),
    warns about secrets too short to mask gracefully, sets `run.cache`, and subscribes the
    history recorder with the run's trigger (its writes go to the history's writer thread).
    Each `execute()` (a watch-mode rerun too) starts with fresh listings. One history (one
    connection, one writer thread) serves every run of a project. `warn` (default: stderr)
    receives the store's one-line notices: a damaged history moved aside, a full disk, a short
    secret, an unusable metrics file.
    """
    if history is None:
        history = open_history(run.pipeline.state_dir, warn)
    history.mark_interrupted_soon()
    mask.warn_short(run.pipeline.secrets, history.warn)
    cache = StageCache(run.pipeline, history)
    run.cache = cache
    run.subscribe(lambda event: cache.forget() if isinstance(event, RunStarted) else None)
    run.subscribe(history.recorder(run.run_id, run.trigger, cache.fingerprints, cache.file))
    return cache
