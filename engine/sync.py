"""Keep a remote copy of the workspace in step, sending only what changed (SPEC §4).

What goes: the workspace minus `.git/`, `.pipedeck/` and `.gitignore`d paths, plus the declared
outputs of upstream stages (ignored or not). A manifest of what the remote holds (relative path ->
size, mtime and mode of the local file that was sent) lives at `<workdir>/.pipedeck-sync.json`, so
a later run, even from a new process, sends only files whose signature changed, and deletes
remote copies of files that no longer exist locally. Files the remote stages make and that are
not in the manifest are never touched.

Changed and deleted files travel by rsync over the same SSH connection when both ends have
rsync (`engine.rsync`: delta transfer, the list of paths given here), else as one tar stream
into `tar -xo` on the remote plus one `rm` (one channel, no round trip per file). rsync is tried
first when there is one here; a host without one (its shell answers 127) gets tar from then on,
without a separate probe. The manifest and the
fetched outputs go over SFTP. This module does not import asyncssh: the executor hands in an open
SFTP client, a function that runs a shell command with some stdin (bytes, or a local file to
stream), and one that opens a remote process for rsync.
"""

from __future__ import annotations

import asyncio
import json
import os
import posixpath
import stat
import tarfile
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote
from typing import Any

import pathspec

from engine.rsync import OpenProcess, RemoteRsyncMissing, local_rsync, nul_join, rsync_push

MANIFEST = ".pipedeck-sync.json"
ALWAYS_EXCLUDED = frozenset({".git", ".pipedeck"})

Signature = tuple[int, int, int]  # size, mtime_ns, permission bits
RunShell = Callable[[str, "bytes | Path"], Awaitable[None]]  # (command, stdin data or file)


def _signature(st: os.stat_result) -> Signature:
    return (st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))


def _ignore_spec(directory: Path) -> pathspec.PathSpec | None:
    try:
        lines = (directory / ".gitignore").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines.splitlines())


def workspace_files(root: Path) -> dict[str, Signature]:
    """Every regular file under `root` that is synced, keyed by its posix path relative to root.

    Honours `.gitignore` files at any depth (each relative to its own directory).
    """
    files: dict[str, Signature] = {}
    specs: dict[str, list[tuple[str, pathspec.PathSpec]]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        active = list(specs.get(rel_dir, specs.get(posixpath.dirname(rel_dir), [])))
        own = _ignore_spec(Path(dirpath))
        if own is not None:
            active.append((rel_dir, own))

        def ignored(rel: str, is_dir: bool, active: list[tuple[str, Any]] = active) -> bool:
            for base, spec in active:
                sub = posixpath.relpath(rel, base) if base else rel
                if spec.match_file(sub + "/" if is_dir else sub):
                    return True
            return False

        kept = []
        for name in sorted(dirnames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if name in ALWAYS_EXCLUDED or ignored(rel, True) or os.path.islink(Path(dirpath, name)):
                continue
            kept.append(name)
            specs[rel] = active
        dirnames[:] = kept
        for name in filenames:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if ignored(rel, False):
                continue
            try:
                st = os.stat(Path(dirpath, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                files[rel] = _signature(st)
    return files


def artifact_files(root: Path, patterns: Iterable[str]) -> dict[str, Signature]:
    """Local files matching output globs (relative to root), directories expanded."""
    files: dict[str, Signature] = {}
    for pattern in patterns:
        try:
            matches = sorted(root.glob(pattern))
        except (ValueError, NotImplementedError):
            continue
        for match in matches:
            for path in _walk_files(match):
                try:
                    rel = path.relative_to(root).as_posix()
                    files[rel] = _signature(path.stat())
                except (ValueError, OSError):
                    continue
    return files


def _walk_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
    elif path.is_dir():
        for dirpath, _dirs, names in os.walk(path):
            for name in names:
                yield Path(dirpath, name)


@dataclass
class SyncReport:
    """What one push sent and deleted (relative paths)."""

    sent: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    bytes_sent: int = 0  # the size of the files sent
    method: str = ""  # "rsync" or "tar"
    wire_bytes: int = 0  # what actually went to the remote (tar stream, or rsync's side)
    command: str = ""  # the remote rsync command the bridge carried


class RemoteWorkspace:
    """The remote copy of one local workspace at `remote_root` on one host."""

    def __init__(self, local_root: Path, remote_root: str) -> None:
        self.local_root = local_root
        self.remote_root = remote_root
        self.reports: list[SyncReport] = []  # one per push that changed something
        self.remote_rsync = "rsync"  # the rsync program on the host, as its shell finds it
        self._rsync: str | None = None  # the local rsync, while the host seems to have one too
        self._probed = False  # whether the local one was looked for
        self._manifest: dict[str, Signature] | None = None
        self._lock = asyncio.Lock()

    def _remote(self, rel: str) -> str:
        return f"{self.remote_root}/{rel}"

    async def push(
        self,
        sftp: Any,
        run_shell: RunShell,
        artifacts: Iterable[str],
        before_transfer: Callable[[], None] | None = None,
        open_process: OpenProcess | None = None,
    ) -> SyncReport:
        """Send changed workspace files and the local files matching `artifacts` globs.

        Without `open_process` (or without rsync at either end) the tar path is used.
        """
        async with self._lock:
            manifest = await self._load(sftp)
            wanted, gone = await asyncio.to_thread(self._scan, manifest, list(artifacts))
            send = sorted(rel for rel, sig in wanted.items() if manifest.get(rel) != sig)
            report = SyncReport(sent=send, deleted=gone)
            if not send and not gone:
                return report
            if before_transfer is not None:
                before_transfer()
            report.method = "tar"
            if open_process is not None and (rsync := await self._local_rsync()) is not None:
                try:
                    report.command, report.wire_bytes = await rsync_push(
                        rsync,
                        open_process,
                        self.local_root,
                        self.remote_root,
                        send + gone,
                        self.remote_rsync,
                    )
                    report.method = "rsync"
                except RemoteRsyncMissing:
                    self._rsync = None  # tar from now on
            if report.method == "tar":
                report.sent, report.wire_bytes = await self._tar_push(run_shell, send, gone)
            for rel in gone:
                manifest.pop(rel, None)
            for rel in report.sent:
                manifest[rel] = wanted[rel]
            report.bytes_sent = sum(wanted[rel][0] for rel in report.sent)
            await self._save(sftp, manifest)
            self.reports.append(report)
            return report

    async def _local_rsync(self) -> str | None:
        """The local rsync (looked for once), unless the host turned out to have none."""
        if not self._probed:
            self._rsync = await local_rsync()
            self._probed = True
        return self._rsync

    async def _tar_push(
        self, run_shell: RunShell, send: list[str], gone: list[str]
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
                await run_shell(f"mkdir -p -- {root} && cd -- {root} && tar -xof -", archive)
        if gone:
            names = nul_join(gone)
            wire += len(names)
            await run_shell(f"cd -- {root} && xargs -0 -r rm -f --", names)
        return send, wire

    async def fetch(self, sftp: Any, patterns: Iterable[str]) -> list[str]:
        """Copy remote files matching output globs into the local workspace; their paths."""
        async with self._lock:
            manifest = await self._load(sftp)
            fetched: list[str] = []
            for pattern in patterns:
                matches = await sftp.glob(self._remote(pattern), error_handler=lambda _exc: None)
                for match in matches:
                    rel = posixpath.relpath(str(match), self.remote_root)
                    if rel.startswith("../"):
                        continue
                    local = self.local_root / rel
                    local.parent.mkdir(parents=True, exist_ok=True)
                    # into the parent: a directory lands at `local` even when it exists already
                    await sftp.get(match, str(local.parent), preserve=True, recurse=True)
                    fetched.append(rel)
            got = await asyncio.to_thread(artifact_files, self.local_root, fetched)
            if got:
                manifest.update(got)
                await self._save(sftp, manifest)
            return sorted(got)

    def _scan(
        self, manifest: dict[str, Signature], artifacts: list[str]
    ) -> tuple[dict[str, Signature], list[str]]:
        wanted = workspace_files(self.local_root)
        wanted.update(artifact_files(self.local_root, artifacts))
        gone = sorted(
            rel for rel in manifest if rel not in wanted and not (self.local_root / rel).exists()
        )
        return wanted, gone

    async def _load(self, sftp: Any) -> dict[str, Signature]:
        if self._manifest is None:
            self._manifest = {}
            path = self._remote(MANIFEST)
            if await sftp.exists(path):
                async with sftp.open(path, "rb") as handle:
                    raw = await handle.read()
                try:
                    files = json.loads(raw)["files"]
                    self._manifest = {k: (int(a), int(b), int(c)) for k, (a, b, c) in files.items()}
                except (ValueError, KeyError, TypeError, IndexError, AttributeError):
                    self._manifest = {}
        return self._manifest

    async def _save(self, sftp: Any, manifest: dict[str, Signature]) -> None:
        path = self._remote(MANIFEST)
        data = json.dumps({"version": 1, "files": manifest}, separators=(",", ":")).encode()
        async with sftp.open(path + ".tmp", "wb") as handle:
            await handle.write(data)
        await sftp.posix_rename(path + ".tmp", path)


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
