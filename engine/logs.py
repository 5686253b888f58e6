"""Append-only stage logs on disk, with a line index and masking on the way in.

Layout: `<root>/<run_id>/<stage id>/<attempt>.log` and `<attempt>.idx` (names percent-encoded
where a character is unsafe in a path). The `.log` file holds each stream's complete lines,
masked, in the order they completed, byte for byte (newlines kept). The `.idx` file is an array of
native u64, one per line: the line's END offset in the `.log` file, with the top bit set for
stderr. Line N is therefore two `pread`s (index entries N-1 and N, then the bytes), whatever the
log's size, and a reader sees a consistent prefix while a writer appends (the writer writes the
bytes before their index entries, and readers trust only whole index entries).

Partial lines are buffered per stream and masked whole once complete, so a secret split across
two writes is caught. A partial line longer than `PARTIAL_LIMIT` (1 MiB) is masked and all but its
last (longest secret - 1) bytes are stored as a line *segment* (an index entry whose bytes don't
end in a newline); the rest of the line continues as the next line. A secret straddling the cut is
still masked: whatever starts before the kept tail fits entirely in the masked buffer.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterable
from hashlib import sha256
from itertools import accumulate, count
from operator import add
from pathlib import Path
from urllib.parse import quote

from engine.mask import Masker

STREAMS = ("stdout", "stderr")
PARTIAL_LIMIT = 1 << 20
_STDERR = 1 << 63
_OFFSET = _STDERR - 1
_ENTRY = 8  # bytes per index entry
_TAG = {"stdout": 0, "stderr": _STDERR}


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


class LogStore:
    """Stage logs of every run under `root` (`<state_dir>/logs`), masking `secrets`."""

    def __init__(self, root: Path, secrets: Iterable[str] = ()) -> None:
        self.root = Path(root)
        self.masker = Masker(secrets)

    def _dir(self, run_id: str, stage_id: str) -> Path:
        return self.root / safe_name(run_id) / safe_name(stage_id)

    def writer(self, run_id: str, stage_id: str, attempt: int) -> LogWriter:
        """A writer for a new attempt's log (an existing one is truncated)."""
        folder = self._dir(run_id, stage_id)
        folder.mkdir(parents=True, exist_ok=True)
        return LogWriter(folder / f"{attempt}.log", folder / f"{attempt}.idx", self.masker)

    def reader(self, run_id: str, stage_id: str, attempt: int) -> LogReader:
        """A reader of an attempt's log; empty until the writer has created it."""
        folder = self._dir(run_id, stage_id)
        return LogReader(folder / f"{attempt}.log", folder / f"{attempt}.idx")

    def attempts(self, run_id: str, stage_id: str) -> list[int]:
        """The attempt numbers with a stored log, ascending."""
        folder = self._dir(run_id, stage_id)
        return sorted(int(p.stem) for p in folder.glob("*.log") if p.stem.isdigit())


class LogWriter:
    """Appends one attempt's output; see the module docstring for the format."""

    def __init__(self, log_path: Path, index_path: Path, masker: Masker) -> None:
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed by finish()
        self._index = open(index_path, "wb")  # noqa: SIM115
        self._masker = masker
        self._keep = max(masker.longest - 1, 0)
        self._size = 0
        self._partial = {stream: bytearray() for stream in STREAMS}

    def feed(self, stream: str, data: bytes) -> list[str]:
        """Store the lines `data` completes; return them masked and decoded, without newlines."""
        partial = self._partial[stream]
        cut = data.rfind(b"\n") + 1
        lines: list[str] = []
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
            lines += self._store_segment(stream, partial)
        return lines

    def finish(self) -> list[tuple[str, str]]:
        """Store each stream's unterminated last line, close the files; return those lines."""
        out: list[tuple[str, str]] = []
        for stream, partial in self._partial.items():
            if partial:
                masked = self._masker.mask(bytes(partial))
                partial.clear()
                self._append(masked, array("Q", (self._size + len(masked) + _TAG[stream],)))
                out.append((stream, masked.decode("utf-8", "replace")))
        self._log.close()
        self._index.close()
        return out

    def _store_lines(self, stream: str, block: bytes) -> list[str]:
        """Store `block`, a run of newline-terminated lines."""
        masked = self._masker.mask(block)
        # Index entries: cumulative line lengths from size (+ the stderr bit, added once).
        start = self._size + _TAG[stream]
        ends: Iterable[int]
        if b"\r" in masked:  # splitlines() would split at \r too: add the newlines back
            parts = masked.split(b"\n")
            parts.pop()
            ends = map(add, accumulate(map(len, parts), initial=start), count())
        else:
            ends = accumulate(map(len, masked.splitlines(True)), initial=start)
        index = array("Q", ends)
        del index[0]  # the initial value
        self._append(masked, index)
        lines = masked.decode("utf-8", "replace").split("\n")
        lines.pop()
        return lines

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
        self._append(piece, array("Q", (self._size + cut + _TAG[stream],)))
        return [piece.decode("utf-8", "replace")]

    def _append(self, data: bytes, index: array[int]) -> None:
        self._log.write(data)
        self._log.flush()  # bytes first: an index entry never points past the data
        index.tofile(self._index)
        self._index.flush()
        self._size += len(data)


class LogReader:
    """Random access to one attempt's lines; safe while a writer appends, and across threads."""

    def __init__(self, log_path: Path, index_path: Path) -> None:
        self._paths = (log_path, index_path)
        self._fds: tuple[int, int] | None = None

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

    def __len__(self) -> int:
        fds = self._open()
        return os.fstat(fds[1]).st_size // _ENTRY if fds else 0

    def _span(self, start: int, stop: int) -> tuple[int, array[int]]:
        """(offset where line `start` begins, index entries of lines start..stop-1)."""
        assert self._fds is not None
        first = max(start - 1, 0)
        entries = array("Q")
        entries.frombytes(_pread(self._fds[1], (stop - first) * _ENTRY, first * _ENTRY))
        if start == 0:
            return 0, entries
        return entries[0] & _OFFSET, entries[1:]

    def line(self, n: int) -> tuple[str, bytes]:
        """(stream, raw masked bytes without the newline) of line `n` (negative counts back)."""
        length = len(self)
        if n < 0:
            n += length
        if not 0 <= n < length:
            raise IndexError(f"line {n} out of range (log has {length} lines)")
        begin, (entry,) = self._span(n, n + 1)
        data = _pread(self._fds[0], (entry & _OFFSET) - begin, begin)  # type: ignore[index]
        return STREAMS[entry >> 63], data.removesuffix(b"\n")

    def lines(self, start: int, stop: int) -> list[tuple[str, str]]:
        """Lines start..stop-1 (clamped to the log) as (stream, decoded text)."""
        start, stop, _ = slice(start, stop).indices(len(self))
        if start >= stop:
            return []
        begin, entries = self._span(start, stop)
        ends = [(entry & _OFFSET) - begin for entry in entries]
        data = _pread(self._fds[0], ends[-1], begin)  # type: ignore[index]
        starts = [0, *ends[:-1]]
        return [
            (STREAMS[entry >> 63], data[a:b].removesuffix(b"\n").decode("utf-8", "replace"))
            for entry, a, b in zip(entries, starts, ends, strict=True)
        ]

    def read_bytes(self) -> bytes:
        """The whole log as stored (every indexed line, both streams in completion order)."""
        length = len(self)
        if not length:
            return b""
        _, (entry,) = self._span(length - 1, length)
        end = entry & _OFFSET
        return _pread(self._fds[0], end, 0)  # type: ignore[index]
