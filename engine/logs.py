"""Append-only stage logs on disk, with a line index and masking on the way in.

Layout: `<root>/<run_id>/<stage id>/<attempt>.log` and `<attempt>.idx` (names percent-encoded
where a character is unsafe in a path), made on the attempt's first output. An attempt that
prints nothing is only listed, as a line `<stage id> TAB <attempt>`, in its run's
`<root>/<run_id>/.silent` (one appended line instead of a folder and two files; a stage id never
starts with a dot): either way it is one of the stage's `attempts()` and its log reads empty.
The `.log` file holds each stream's complete lines,
masked, in the order they completed, byte for byte (newlines kept). They are stored in *blocks*:
the lines one read completed on one stream, or one unterminated piece. The `.idx` file has one
record per block, two native u64: the block's END offset in the `.log` file (top bit set for
stderr) and the number of lines stored up to and including it. Line N is found by a binary search
over the records (kept in memory, a few per 64 KiB of output) and read from its block, whatever
the log's size; a reader sees a consistent prefix while a writer appends (the writer writes the
bytes before their record, and readers trust only whole records). One record per block, not per
line, keeps the hot path free of per-line Python work.

Partial lines are buffered per stream and masked whole once complete, so a secret split across
two writes is caught. A partial line longer than `PARTIAL_LIMIT` (1 MiB) is masked and all but its
last (longest secret - 1) bytes are stored as a line *segment* (an index entry whose bytes don't
end in a newline); the rest of the line continues as the next line. A secret straddling the cut is
still masked: whatever starts before the kept tail fits entirely in the masked buffer.

A log directory that cannot be made (`.pipedeck/logs` is a file, a read-only disk) is a
StateError naming the path and the cause (from the first `feed` that stores a line, or from
`finish`); a full disk is a NoSpaceError (`no space left on
device: <path>`), after which the writer stores nothing more and `finish` only closes its files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from hashlib import sha256
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote

from engine.events import Lines
from engine.fserrors import NoSpaceError, StateError, cause, make_dirs
from engine.mask import Masker

STREAMS = ("stdout", "stderr")
PARTIAL_LIMIT = 1 << 20
_STDERR = 1 << 63
_OFFSET = _STDERR - 1
_RECORD = 16  # bytes per index record: end offset (+ stderr bit), lines so far
_CACHED_BLOCKS = 8
_TAG = {"stdout": 0, "stderr": _STDERR}
SILENT = ".silent"  # in a run's folder: the attempts that printed nothing
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


@lru_cache(maxsize=4096)  # a run asks for the same run and stage names once per attempt
def safe_name(name: str) -> str:
    """A file name for `name`: percent-encoded, never `.`/`..`, at most ~200 bytes."""
    safe = quote(name, safe="[]=,+@")
    if safe.startswith("."):
        safe = "%2E" + safe[1:]
    if len(safe) > 200:
        safe = f"{safe[:150]}~{sha256(name.encode()).hexdigest()[:16]}"
    return safe


def _pread(fd: int, size: int, offset: int) -> bytes:
    """`size` bytes at `offset` (a single pread may return less for huge reads)."""
    chunks = []
    while size > 0:
        data = os.pread(fd, size, offset)
        if not data:
            break
        chunks.append(data)
        size -= len(data)
        offset += len(data)
    return b"".join(chunks)


_silent_lock = threading.Lock()
_silent_open: tuple[Path, int] | None = None  # the `.silent` file last appended to, open


def _append_silent(path: Path, line: bytes) -> None:
    """Append `line` to a run's `.silent` index (one short O_APPEND write: never torn). The
    last index written stays open, one descriptor in the whole process, for the run's next
    silent attempts: one `fstat` and one `write` each, not an open, a write and a close. An
    index deleted meanwhile (its run folder pruned) is made again, as before."""
    global _silent_open
    with _silent_lock:
        kept = _silent_open
        if kept is None or kept[0] != path or not os.fstat(kept[1]).st_nlink:
            if kept is not None:
                _silent_open = None
                os.close(kept[1])
            try:
                fd = os.open(path, _APPEND)
            except FileNotFoundError:  # the run's first silent attempt, no log yet
                make_dirs(path.parent, "stage logs")
                fd = os.open(path, _APPEND)
            _silent_open = kept = (path, fd)
        os.write(kept[1], line)


class LogStore:
    """Stage logs of every run under `root` (`<state_dir>/logs`), masking `secrets`."""

    def __init__(self, root: Path, secrets: Iterable[str] = ()) -> None:
        self.root = Path(root)
        self.masker = Masker(secrets)
        self._live: dict[tuple[str, str, int], LogWriter] = {}  # writers not finished yet
        self._silent_path: tuple[str, Path] | None = None  # the last run's `.silent` file

    def _dir(self, run_id: str, stage_id: str) -> Path:
        return self.root / safe_name(run_id) / safe_name(stage_id)

    def writer(self, run_id: str, stage_id: str, attempt: int) -> LogWriter:
        """A writer for a new attempt's log (an existing one is truncated at its first output)."""
        writer = LogWriter(lambda: self._paths(run_id, stage_id, attempt), self.masker)
        key = (run_id, stage_id, attempt)
        self._live[key] = writer
        writer.on_finish = lambda: self._finished(key, writer)
        return writer

    def _paths(self, run_id: str, stage_id: str, attempt: int) -> tuple[Path, Path]:
        """An attempt's log and index files (asked for at its first output only)."""
        folder = self._dir(run_id, stage_id)
        return folder / f"{attempt}.log", folder / f"{attempt}.idx"

    def _finished(self, key: tuple[str, str, int], writer: LogWriter) -> None:
        """A writer is done: forget it; list its attempt as silent when it stored nothing."""
        self._live.pop(key, None)
        if writer.silent:
            run_id, stage_id, attempt = key
            path = self._silent_file(run_id)
            try:
                _append_silent(path, f"{safe_name(stage_id)}\t{attempt}\n".encode())
            except OSError as err:
                raise _state_error(err, path) from None

    def _silent_file(self, run_id: str) -> Path:
        if self._silent_path is None or self._silent_path[0] != run_id:
            self._silent_path = (run_id, self.root / safe_name(run_id) / SILENT)
        return self._silent_path[1]

    def _silent(self, run_id: str) -> dict[str, set[int]]:
        """Stage folder name -> the attempts of a run that printed nothing."""
        try:
            data = (self.root / safe_name(run_id) / SILENT).read_bytes()
        except OSError:
            return {}
        silent: dict[str, set[int]] = {}
        for line in data.decode("utf-8", "replace").split("\n")[:-1]:
            name, _, attempt = line.rpartition("\t")
            if attempt.isdigit():
                silent.setdefault(name, set()).add(int(attempt))
        return silent

    def partial(self, run_id: str, stage_id: str, attempt: int) -> tuple[str, str] | None:
        """(stream, text) of the unterminated line an attempt is writing now (test dots, a
        progress bar), masked; None when there is none. For live views: not stored yet."""
        writer = self._live.get((run_id, stage_id, attempt))
        return writer.partial() if writer is not None else None

    def reader(self, run_id: str, stage_id: str, attempt: int) -> LogReader:
        """A reader of an attempt's log; empty until the writer has created it."""
        folder = self._dir(run_id, stage_id)
        return LogReader(folder / f"{attempt}.log", folder / f"{attempt}.idx")

    def attempts(self, run_id: str, stage_id: str) -> list[int]:
        """The attempt numbers with a stored log (a silent one's reads empty), ascending."""
        folder = self._dir(run_id, stage_id)
        found = {int(p.stem) for p in folder.glob("*.log") if p.stem.isdigit()}
        found.update(self._silent(run_id).get(folder.name, ()))
        return sorted(found)

    def stage_ids(self, run_id: str) -> list[str]:
        """The stage ids with a stored log (or a silent attempt) in a run, sorted."""
        run_dir = self.root / safe_name(run_id)
        names = set(self._silent(run_id))
        with contextlib.suppress(OSError):
            names.update(entry.name for entry in run_dir.iterdir() if entry.is_dir())
        return sorted(unquote(name) for name in names)


class LogWriter:
    """Appends one attempt's output; see the module docstring for the format."""

    def __init__(self, paths: Callable[[], tuple[Path, Path]], masker: Masker) -> None:
        """`paths`: the log and index files to make at the first output."""
        self._where = paths
        self._paths: tuple[Path, Path] | None = None
        self._files: tuple[BinaryIO, BinaryIO] | None = None  # made by the first block
        self._failed: StateError | None = None
        self._masker = masker
        self._keep = max(masker.longest - 1, 0)
        self._size = 0
        self._lines = 0
        self._partial = {stream: bytearray() for stream in STREAMS}
        self._latest = STREAMS[0]  # the stream fed last
        self.on_finish: Callable[[], None] | None = None

    def feed(self, stream: str, data: bytes) -> Sequence[str]:
        """Store the lines `data` completes; return them masked and decoded, without newlines
        (a `Lines`: split into strings only if looked at one by one)."""
        self._latest = stream
        partial = self._partial[stream]
        cut = data.rfind(b"\n") + 1
        lines: Sequence[str] = []
        if cut:
            if partial:
                block = bytes(partial) + data[:cut]
                partial.clear()
            else:
                block = data if cut == len(data) else data[:cut]
            lines = self._store_lines(stream, block)
            data = data[cut:]
        partial += data
        if len(partial) > PARTIAL_LIMIT:
            segment = self._store_segment(stream, partial)
            lines = Lines.of([*lines, *segment]) if lines else segment
        return lines

    def finish(self) -> list[tuple[str, str]]:
        """Store each stream's unterminated last line, close the files; return those lines."""
        out: list[tuple[str, str]] = []
        try:
            for stream, partial in self._partial.items():
                if partial and self._failed is None:
                    masked = self._masker.mask(bytes(partial))
                    partial.clear()
                    self._append(stream, masked, 1)
                    out.append((stream, masked.decode("utf-8", "replace")))
        finally:
            for file in self._files or ():
                with contextlib.suppress(OSError):  # flushed after each block: nothing is lost
                    file.close()
            if self.on_finish is not None:
                self.on_finish()
        return out

    def partial(self) -> tuple[str, str] | None:
        """(stream, text) of the unterminated line last fed, masked; its last (longest secret -
        1) bytes, which could begin a secret, are held back. None when there is none."""
        for stream in (self._latest, *STREAMS):
            if self._partial[stream]:
                masked = self._masker.mask(bytes(self._partial[stream]))
                shown = masked[: len(masked) - self._keep] if self._keep else masked
                return (stream, shown.decode("utf-8", "replace")) if shown else None
        return None

    @property
    def silent(self) -> bool:
        """True while no block was stored (nor failed to be): the log's files don't exist."""
        return self._files is None and self._failed is None

    def _open(self) -> tuple[BinaryIO, BinaryIO]:
        """The log and index files, made (with their folder) on the first block."""
        log_path, index_path = self._paths = self._where()
        make_dirs(log_path.parent, "stage logs")
        try:
            log = open(log_path, "wb")  # noqa: SIM115 - closed by finish()
        except OSError as err:
            raise _state_error(err, log_path) from None
        try:
            index = open(index_path, "wb")  # noqa: SIM115
        except OSError as err:
            log.close()
            raise _state_error(err, index_path) from None
        self._files = (log, index)
        return self._files

    def _store_lines(self, stream: str, block: bytes) -> Sequence[str]:
        """Store `block`, a run of newline-terminated lines."""
        masked = self._masker.mask(block)
        self._append(stream, masked, masked.count(b"\n"))
        text = masked.decode("utf-8", "replace")
        end = text.rfind("\n")  # the last: a secret ending in a newline may have taken it
        return Lines(text[:end]) if end >= 0 else []

    def _store_segment(self, stream: str, partial: bytearray) -> list[str]:
        """Store an oversized partial line except its last `longest secret - 1` bytes."""
        masked = self._masker.mask(bytes(partial))
        cut = len(masked) - self._keep
        for _ in range(3):  # don't split a UTF-8 sequence when avoidable
            if 0 < cut < len(masked) and masked[cut] & 0xC0 == 0x80:
                cut -= 1
        if cut <= 0:
            return []
        partial[:] = masked[cut:]
        piece = masked[:cut]
        self._append(stream, piece, 1)
        return [piece.decode("utf-8", "replace")]

    def _append(self, stream: str, data: bytes, lines: int) -> None:
        """Store one block of `lines` lines and its index record."""
        if self._failed is not None:
            raise self._failed
        try:
            log, index = self._files or self._open()
        except StateError as err:
            self._failed = err
            raise
        try:
            log.write(data)
            log.flush()  # bytes first: a record never points past the data
            self._size += len(data)
            self._lines += lines
            array("Q", (self._size | _TAG[stream], self._lines)).tofile(index)
            index.flush()
        except OSError as err:
            assert self._paths is not None  # the files are open
            self._failed = _state_error(err, self._paths[0])
            raise self._failed from None


def _state_error(err: OSError, path: Path) -> StateError:
    """A full disk as NoSpaceError, anything else as a StateError naming the log and cause."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpaceError(path)
    return StateError(f"cannot write the stage log {path}: {cause(err, path)}")


class LogReader:
    """Random access to one attempt's lines; safe while a writer appends, and across threads."""

    def __init__(self, log_path: Path, index_path: Path) -> None:
        self._paths = (log_path, index_path)
        self._fds: tuple[int, int] | None = None
        self._ends = array("Q")  # per block: end offset | stderr bit
        self._totals = array("Q")  # per block: lines stored up to and including it
        self._cache: OrderedDict[int, tuple[str, list[bytes]]] = OrderedDict()

    def _open(self) -> tuple[int, int] | None:
        if self._fds is None:
            try:
                log = os.open(self._paths[0], os.O_RDONLY)
            except FileNotFoundError:
                return None
            try:
                index = os.open(self._paths[1], os.O_RDONLY)
            except FileNotFoundError:
                os.close(log)
                return None
            self._fds = (log, index)
        return self._fds

    def close(self) -> None:
        """Release the file descriptors."""
        if self._fds is not None:
            for fd in self._fds:
                os.close(fd)
            self._fds = None

    def __del__(self) -> None:
        self.close()

    def _refresh(self) -> None:
        """Load the index records the writer has added since last time."""
        fds = self._open()
        if fds is None:
            return
        have = len(self._totals) * _RECORD
        size = os.fstat(fds[1]).st_size // _RECORD * _RECORD
        if size > have:
            fresh = array("Q")
            fresh.frombytes(_pread(fds[1], size - have, have))
            self._ends.extend(fresh[0::2])
            self._totals.extend(fresh[1::2])

    def __len__(self) -> int:
        self._refresh()
        return self._totals[-1] if self._totals else 0

    def _block(self, k: int) -> tuple[str, list[bytes]]:
        """Block `k`'s stream and lines (without newlines), from a small LRU cache."""
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        assert self._fds is not None
        begin = self._ends[k - 1] & _OFFSET if k else 0
        entry = self._ends[k]
        data = _pread(self._fds[0], (entry & _OFFSET) - begin, begin)
        lines = data[:-1].split(b"\n") if data.endswith(b"\n") else [data]
        self._cache[k] = block = (STREAMS[entry >> 63], lines)
        if len(self._cache) > _CACHED_BLOCKS:
            self._cache.popitem(last=False)
        return block

    def _raw(self, start: int, stop: int) -> list[tuple[str, bytes]]:
        """Lines start..stop-1 (already clamped) as (stream, raw bytes)."""
        out: list[tuple[str, bytes]] = []
        k = bisect_right(self._totals, start)
        while start < stop:
            first = self._totals[k - 1] if k else 0
            stream, lines = self._block(k)
            take = lines[start - first : stop - first]
            out += [(stream, line) for line in take]
            start += len(take)
            k += 1
        return out

    def line(self, n: int) -> tuple[str, bytes]:
        """(stream, raw masked bytes without the newline) of line `n` (negative counts back)."""
        length = len(self)
        if n < 0:
            n += length
        if not 0 <= n < length:
            raise IndexError(f"line {n} out of range (log has {length} lines)")
        return self._raw(n, n + 1)[0]

    def lines(self, start: int, stop: int) -> list[tuple[str, str]]:
        """Lines start..stop-1 (clamped to the log) as (stream, decoded text)."""
        start, stop, _ = slice(start, stop).indices(len(self))
        return [(s, raw.decode("utf-8", "replace")) for s, raw in self._raw(start, stop)]

    def read_bytes(self) -> bytes:
        """The whole log as stored (every indexed line, both streams in completion order)."""
        if not len(self):
            return b""
        return _pread(self._fds[0], self._ends[-1] & _OFFSET, 0)  # type: ignore[index]
