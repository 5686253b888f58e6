"""The merged log (`m`): every stage's lines in arrival order, read from the log store.

`Arrivals` records, per `LogLines` event, which attempt's log grew and by how many lines: one
record per chunk, never one per line, and no text. `MergedReader` maps merged line N to
(attempt, line) through those records and reads the text from that attempt's `LogReader`, so
the `LogView` over it reads only the lines on screen, as it does for one stage.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable

from engine.events import LogLines
from tui.widgets.log_view import LineReader, last_state

AttemptKey = tuple[str, str, int]  # (run id, stage id, attempt)

# 256-colour foregrounds that read on dark and light backgrounds alike
PALETTE = (33, 172, 35, 168, 99, 37, 130, 63, 136, 161, 29, 98)


def short_id(stage_id: str) -> str:
    """A matrix instance's id with its values only: `test[3.12]` for `test[python=3.12]`."""
    name, bracket, values = stage_id.partition("[")
    if not bracket:
        return stage_id
    parts = values.rstrip("]").split(",")
    return f"{name}[{','.join(part.partition('=')[2] or part for part in parts)}]"


class Arrivals:
    """The order in which chunks of lines arrived, over every stage of a run (and its reruns)."""

    def __init__(self) -> None:
        self.keys: list[AttemptKey] = []
        self._key_index: dict[AttemptKey, int] = {}
        self.chunk_key = array("I")  # per chunk: index into `keys`
        self.chunk_start = array("Q")  # per chunk: its first line in that attempt's log
        self.chunk_size = array("I")  # per chunk: lines
        self._lines: list[int] = []  # per key: lines recorded so far

    def add(self, event: LogLines) -> None:
        """Record one `LogLines` event."""
        key = (event.run_id, event.stage, event.attempt)
        index = self._key_index.get(key)
        if index is None:
            index = self._key_index[key] = len(self.keys)
            self.keys.append(key)
            self._lines.append(0)
        self.chunk_key.append(index)
        self.chunk_start.append(self._lines[index])
        self.chunk_size.append(len(event.lines))
        self._lines[index] += len(event.lines)


class MergedReader:
    """A `LineReader` over the arrivals of the stages `keep` accepts (all when None).

    Each line is prefixed with its stage (`stage │ text`: what search and copy see); the log
    view colours the first `gutter` cells with `gutter_colour(line)`, the stage's colour.
    """

    def __init__(
        self,
        arrivals: Arrivals,
        open_log: Callable[[AttemptKey], LineReader],
        stages: Iterable[str],
        keep: re.Pattern[str] | None = None,
    ) -> None:
        self.arrivals = arrivals
        self.open_log = open_log
        self.keep = keep
        names = list(stages)
        longest = max((len(short_id(n)) for n in names), default=4)
        self.width = min(longest + 2, 20)  # 2: room for an attempt, `#2`
        self.gutter = self.width + 3  # the prefix: the name, then ` │ `
        self._colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
        self._readers: dict[int, LineReader] = {}
        self._chunks = array("Q")  # the accepted chunks, by index into the arrivals
        self._totals = array("Q")  # merged lines up to and including each accepted chunk
        self._seen = 0  # arrivals' chunks looked at so far
        self._accept: dict[int, bool] = {}  # key index -> kept by the filter

    def _sync(self) -> None:
        arrivals, total = self.arrivals, self._totals[-1] if self._totals else 0
        for chunk in range(self._seen, len(arrivals.chunk_key)):
            key = arrivals.chunk_key[chunk]
            kept = self._accept.get(key)
            if kept is None:
                stage = arrivals.keys[key][1]
                kept = self._accept[key] = self.keep is None or bool(self.keep.search(stage))
            if kept:
                total += arrivals.chunk_size[chunk]
                self._chunks.append(chunk)
                self._totals.append(total)
        self._seen = len(arrivals.chunk_key)

    def __len__(self) -> int:
        self._sync()
        return self._totals[-1] if self._totals else 0

    def _reader(self, key: int) -> LineReader:
        reader = self._readers.get(key)
        if reader is None:
            reader = self._readers[key] = self.open_log(self.arrivals.keys[key])
        return reader

    def _prefix(self, key: int) -> str:
        _, stage, attempt = self.arrivals.keys[key]
        name = short_id(stage) + (f"#{attempt}" if attempt > 1 else "")
        if len(name) > self.width:  # keep both ends: the stage and the matrix values differ
            half = (self.width - 1) // 2
            name = f"{name[:half]}…{name[len(name) - (self.width - 1 - half) :]}"
        return f"{name:<{self.width}} │ "

    def gutter_colour(self, index: int) -> int:
        """The 256-colour number of merged line `index`'s stage."""
        self._sync()
        chunk = self._chunks[bisect_right(self._totals, index)]
        stage = self.arrivals.keys[self.arrivals.chunk_key[chunk]][1]
        return self._colour.get(stage, PALETTE[sum(map(ord, stage)) % len(PALETTE)])

    def lines(self, start: int, stop: int) -> list[tuple[str, str]]:
        """Merged lines start..stop-1 (clamped) as (stream, prefixed text)."""
        start, stop, _ = slice(start, stop).indices(len(self))
        out: list[tuple[str, str]] = []
        arrivals = self.arrivals
        k = bisect_right(self._totals, start)
        while start < stop:
            chunk = self._chunks[k]
            first = self._totals[k - 1] if k else 0
            key = arrivals.chunk_key[chunk]
            offset = arrivals.chunk_start[chunk] + start - first
            take = min(stop, self._totals[k]) - start
            prefix = self._prefix(key)
            got = self._reader(key).lines(offset, offset + take)
            out += [(stream, prefix + last_state(text)) for stream, text in got]
            out += [("stdout", prefix)] * (take - len(got))  # not readable (yet): keep the count
            start += take
            k += 1
        return out
