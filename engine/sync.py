"""Keep a remote copy of the workspace in step, sending only what changed (SPEC §4).

What goes: the workspace minus `.git/`, `.pipedeck/`, `.gitignore`d paths and the host's
`sync.exclude` globs, plus the declared outputs of upstream stages (ignored or not); which files
those are is `engine.fileset`'s business, as for the cache and watch mode. A manifest of what the
remote holds (relative path -> size, mtime and mode of the local file that was sent) lives at
`<workdir>/.pipedeck-sync.json`, so a later run, even from a new process, sends only files whose
signature changed, and deletes the remote copies of files deleted or newly ignored here (the
outputs of stages, `keep`, stay while they exist here). Files the remote stages make and that
are not in the manifest are never touched.

Changed and deleted files travel by rsync over the same SSH connection when both ends have
rsync (`engine.rsync`: delta transfer, the list of paths given here), else as one tar stream
into `tar -xo` on the remote plus one `rm` (one channel, no round trip per file). rsync is tried
first when there is one here; a host without one (its shell answers 127) gets tar from then on,
without a separate probe. The manifest and the fetched outputs go over exec channels too (`cat`,
`find`, `tar -c`): no SFTP subsystem is needed. This module does not import asyncssh: the
executor hands in a function that runs a shell command (`Shell`) and one that opens a remote
process for rsync.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote
from typing import Protocol

from engine import fileset, globs
from engine.executors.base import ExecResult
from engine.rsync import OpenProcess, RemoteRsyncMissing, local_rsync, nul_join, rsync_push
from engine.spec import Stage

MANIFEST = ".pipedeck-sync.json"
BIG_FIRST_SYNC = 100 * 1000 * 1000  # bytes: a first sync larger than this names its biggest folders
REMOTE_OWN = (MANIFEST, ".pipedeck-pids")  # pipedeck's files in the workdir, never outputs

Signature = tuple[int, int, int]  # size, mtime_ns, permission bits


class Shell(Protocol):
    """Runs a POSIX sh command on the host with `stdin` (data, or a local file to stream);
    returns its stdout, or writes it into the file `stdout`; raises OSError when it fails."""

    async def __call__(
        self, command: str, stdin: bytes | Path = b"", stdout: Path | None = None
    ) -> bytes: ...


def brings_back(stage: Stage, result: ExecResult) -> bool:
    """Whether a remote attempt's declared outputs come back: after a success; a GitHub Actions
    job's (its result file, SPEC §11) after any exit too, so that the jobs needing it see its
    result and outputs."""
    if result.status is not None or result.exit_code is None:
        return False
    return result.exit_code == 0 or stage.steps


def _signature(st: os.stat_result) -> Signature:
    return (st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))


def workspace_files(root: Path, exclude: Iterable[str] = ()) -> dict[str, Signature]:
    """Every regular file under `root` that is synced, keyed by its posix path relative to root:
    not in `.git`/`.pipedeck`, not ignored by a `.gitignore`, not matched by `exclude` globs."""
    ignores = fileset.GitIgnores(root)
    excluded = globs.matcher(tuple(exclude))

    def skip(rel: str, is_dir: bool) -> bool:
        return excluded(rel) or ignores.entry(rel, is_dir)

    return {rel: _signature(st) for rel, st in fileset.regular_files(root, skip=skip)}


def artifact_files(root: Path, patterns: Iterable[str]) -> dict[str, Signature]:
    """Local files the output globs select (relative to root)."""
    return {rel: _signature(st) for rel, st in fileset.select(root, patterns).items()}


def biggest_folders(files: dict[str, Signature], count: int = 3) -> list[tuple[str, int]]:
    """The top-level folders holding the most bytes of `files`, largest first."""
    sizes: dict[str, int] = {}
    for rel, (size, _, _) in files.items():
        top, sep, _ = rel.partition("/")
        if sep:
            sizes[top] = sizes.get(top, 0) + size
    return sorted(sizes.items(), key=lambda item: (-item[1], item[0]))[:count]


def human(size: int) -> str:
    """A byte count for people: `812 B`, `3.4 MB`."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


@dataclass
class SyncReport:
    """What one push sent and deleted (relative paths)."""

    sent: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    bytes_sent: int = 0  # the size of the files sent
    method: str = ""  # "rsync" or "tar"
    wire_bytes: int = 0  # what actually went to the remote (tar stream, or rsync's side)
    command: str = ""  # the remote rsync command the bridge carried
    warning: str | None = None  # a first sync over BIG_FIRST_SYNC: its biggest folders

    def summary(self, stage: str) -> dict[str, object]:
        """What `HostStatus.synced` carries: the stage synced for, counts, bytes, method."""
        return {
            "stage": stage,
            "files": len(self.sent),
            "bytes": self.bytes_sent,
            "deleted": len(self.deleted),
            "method": self.method,
            "wire_bytes": self.wire_bytes,
        }


class RemoteWorkspace:
    """The remote copy of one local workspace at `remote_root` on one host.

    `exclude`: globs never sent (the host's `sync.exclude`); `keep`: globs of stage outputs,
    whose remote copies stay while the file exists here, ignored or not.
    """

    def __init__(
        self,
        local_root: Path,
        remote_root: str,
        exclude: Iterable[str] = (),
        keep: Iterable[str] = (),
    ) -> None:
        self.local_root = local_root
        self.remote_root = remote_root
        self.exclude = tuple(exclude)
        self.keep = tuple(keep)
        self.reports: list[SyncReport] = []  # one per push that changed something
        self.remote_rsync = "rsync"  # the rsync program on the host, as its shell finds it
        self._rsync: str | None = None  # the local rsync, while the host seems to have one too
        self._probed = False  # whether the local one was looked for
        self._manifest: dict[str, Signature] | None = None
        self._lock = asyncio.Lock()

    async def push(
        self,
        shell: Shell,
        artifacts: Iterable[str],
        before_transfer: Callable[[], None] | None = None,
        open_process: OpenProcess | None = None,
    ) -> SyncReport:
        """Send changed workspace files and the local files matching `artifacts` globs.

        Without `open_process` (or without rsync at either end) the tar path is used.
        """
        async with self._lock:
            manifest = await self._load(shell)
            wanted, gone = await asyncio.to_thread(self._scan, manifest, list(artifacts))
            send = sorted(rel for rel, sig in wanted.items() if manifest.get(rel) != sig)
            report = SyncReport(sent=send, deleted=gone)
            if not send and not gone:
                return report
            if not manifest:
                report.warning = _big_first_sync({rel: wanted[rel] for rel in send})
            if before_transfer is not None:
                before_transfer()
            report.method = "tar"
            if open_process is not None and (rsync := await self._local_rsync()) is not None:
                # rsync deletes what is missing here; files still here but no longer wanted
                # (newly ignored or excluded) would be sent again: those go by `rm`
                unwanted = [rel for rel in gone if (self.local_root / rel).exists()]
                try:
                    report.command, report.wire_bytes = await rsync_push(
                        rsync,
                        open_process,
                        self.local_root,
                        self.remote_root,
                        send + [rel for rel in gone if rel not in unwanted],
                        self.remote_rsync,
                    )
                    report.method = "rsync"
                    report.wire_bytes += await self._delete(shell, unwanted)
                except RemoteRsyncMissing:
                    self._rsync = None  # tar from now on
            if report.method == "tar":
                report.sent, report.wire_bytes = await self._tar_push(shell, send, gone)
            for rel in gone:
                manifest.pop(rel, None)
            for rel in report.sent:
                manifest[rel] = wanted[rel]
            report.bytes_sent = sum(wanted[rel][0] for rel in report.sent)
            await self._save(shell, manifest)
            self.reports.append(report)
            return report

    async def _local_rsync(self) -> str | None:
        """The local rsync (looked for once), unless the host turned out to have none."""
        if not self._probed:
            self._rsync = await local_rsync()
            self._probed = True
        return self._rsync

    async def _tar_push(
        self, shell: Shell, send: list[str], gone: list[str]
    ) -> tuple[list[str], int]:
        """Send `send` as one tar stream, delete `gone`; the paths sent, the bytes on the wire."""
        root = quote(self.remote_root)
        wire = 0
        if send:
            with tempfile.TemporaryDirectory(prefix="pipedeck-sync-") as tmp:
                archive = Path(tmp, "send.tar")
                send = await asyncio.to_thread(_pack, self.local_root, send, archive)
                wire += archive.stat().st_size
                # -o: files belong to the remote user, whoever owned them here
                await shell(f"mkdir -p -- {root} && cd -- {root} && tar -xof -", archive)
        return send, wire + await self._delete(shell, gone)

    async def _delete(self, shell: Shell, rels: list[str]) -> int:
        """Remove the remote copies of `rels` in one command; the bytes sent for it."""
        if not rels:
            return 0
        names = nul_join(rels)
        await shell(f"cd -- {quote(self.remote_root)} && xargs -0 -r rm -f --", names)
        return len(names)

    async def fetch(self, shell: Shell, patterns: Iterable[str]) -> list[str]:
        """Bring back the remote files the output globs select (as `engine.fileset` selects
        them here) into the local workspace; their paths.

        They arrive as one tar stream, are unpacked beside the workspace and renamed into
        place, so a file is replaced, never rewritten in place."""
        patterns = tuple(patterns)
        async with self._lock:
            manifest = await self._load(shell)
            rels = await self._remote_select(shell, patterns)
            if not rels:
                return []
            spool = self.local_root / ".pipedeck"
            spool.mkdir(exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="fetch-", dir=spool) as tmp:
                archive = Path(tmp, "outputs.tar")
                await shell(
                    f"cd -- {quote(self.remote_root)} && tar -cf - --null -T -",
                    nul_join(rels),
                    stdout=archive,
                )
                await asyncio.to_thread(_unpack, archive, Path(tmp, "files"), self.local_root)
            got = await asyncio.to_thread(artifact_files, self.local_root, rels)
            if got:
                manifest.update(got)
                await self._save(shell, manifest)
            return sorted(got)

    async def _remote_select(self, shell: Shell, patterns: tuple[str, ...]) -> list[str]:
        """The remote files (and symlinks) under the globs' literal bases that they select."""
        bases = sorted(  # "./": a name starting with "-" is no option to find
            {f"./{globs.base(globs.normalize(p))}" for p in globs.split(patterns)[0]}
        )
        if not bases:
            return []
        prune = " -o ".join(f"-name {quote(name)}" for name in sorted(fileset.SKIP_DIRS))
        listing = await shell(
            f"cd -- {quote(self.remote_root)} 2>/dev/null || exit 0; "
            f"find {' '.join(quote(b) for b in bases)} \\( {prune} \\) -prune"
            " -o ! -type d -print0 2>/dev/null; exit 0"
        )
        test = globs.matcher(patterns)
        found = set()
        for raw in listing.split(b"\0"):
            rel = raw.decode("utf-8", "surrogateescape").removeprefix("./")
            if rel and rel.split("/")[0] not in REMOTE_OWN and test(rel):
                found.add(rel)
        return sorted(found)

    def _scan(
        self, manifest: dict[str, Signature], artifacts: list[str]
    ) -> tuple[dict[str, Signature], list[str]]:
        """(what the remote should hold, what it should no longer hold)."""
        wanted = workspace_files(self.local_root, self.exclude)
        wanted.update(artifact_files(self.local_root, artifacts))
        kept = globs.matcher(self.keep)
        gone = sorted(
            rel
            for rel in manifest
            if rel not in wanted and not (kept(rel) and (self.local_root / rel).exists())
        )
        return wanted, gone

    async def _load(self, shell: Shell) -> dict[str, Signature]:
        if self._manifest is None:
            raw = await shell(f"cat -- {quote(self._path(MANIFEST))} 2>/dev/null; exit 0")
            try:
                files = json.loads(raw)["files"] if raw else {}
                self._manifest = {k: (int(a), int(b), int(c)) for k, (a, b, c) in files.items()}
            except (ValueError, KeyError, TypeError, IndexError, AttributeError):
                self._manifest = {}
        return self._manifest

    async def _save(self, shell: Shell, manifest: dict[str, Signature]) -> None:
        path, tmp = quote(self._path(MANIFEST)), quote(self._path(MANIFEST + ".tmp"))
        data = json.dumps({"version": 1, "files": manifest}, separators=(",", ":")).encode()
        await shell(
            f"mkdir -p -- {quote(self.remote_root)} && cat > {tmp} && mv -f -- {tmp} {path}", data
        )

    def _path(self, rel: str) -> str:
        return f"{self.remote_root}/{rel}"


def _big_first_sync(files: dict[str, Signature]) -> str | None:
    """A warning naming the biggest folders of a first sync over `BIG_FIRST_SYNC` bytes."""
    total = sum(size for size, _, _ in files.values())
    if total <= BIG_FIRST_SYNC:
        return None
    folders = ", ".join(f"{name}/ ({human(size)})" for name, size in biggest_folders(files))
    return (
        f"first sync sends {human(total)} in {len(files)} files; biggest folders: "
        f"{folders or 'none'}; leave out what the host does not need with `.gitignore` "
        "or the host's `sync: {exclude: [...]}`"
    )


def _pack(root: Path, rels: list[str], archive: Path) -> list[str]:
    """Write the files `rels` (relative to root, symlinks followed) into a tar; those packed."""
    packed = []
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT, dereference=True) as tar:
        for rel in rels:
            try:
                tar.add(root / rel, arcname=rel, recursive=False)
            except OSError:  # gone since the scan: the next push will notice
                continue
            packed.append(rel)
    return packed


def _unpack(archive: Path, spool: Path, root: Path) -> None:
    """Unpack `archive` into `spool`, then rename each file (or symlink) into `root`."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if not m.isdir()]
        tar.extractall(spool, members=members, filter="tar")
    for member in members:
        target = root / member.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(spool / member.name, target)
