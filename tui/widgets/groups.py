"""Workflow command lines of a GitHub Actions job's log, as the log view shows them.

The job runner stores `##[group]Title`, `##[endgroup]` and `##[error]file:line: message` lines
(GitHub's raw log format, `engine.gha.commands`). `marked` draws them: a group as a `▾ Title`
header (`▸` folded), its end as a faint `╰`, errors, warnings and notices coloured with an icon
and GitHub's `Error:` label (what search, copy and `e` see). `Folds` holds one log's folded
groups: the lines they hide, so a reader shows line N of the folded log without a whole-log index.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable

from engine.gha.commands import STEP_MARKER

# Every CSI sequence (colours, cursor moves, erases) and OSC (titles, links) in a log line: what
# the log view's search and copy, and `run --color never`, leave out.
ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")

GROUP = "##[group]"
ENDGROUP = "##[endgroup]"
_READ = 4096  # lines per read while looking for a group's end or header
_NOTES = {  # command: (ANSI colour, icon, label)
    "error": ("1;31", "✖", "Error"),
    "warning": ("1;33", "⚠", "Warning"),
    "notice": ("1;34", "ℹ", "Notice"),
    "debug": ("35", "·", "Debug"),
}


def marked(line: str, folded: int | None = None) -> str:
    """A workflow command line as drawn (ANSI); any other line as it is. `folded`: the lines
    in a folded group, its end line not counted (None: the group is open)."""
    if not line.startswith("##["):
        return line
    if line.startswith(GROUP):
        if folded is None:
            return f"\x1b[1m▾ {line[len(GROUP) :]}\x1b[0m"
        count = f"{folded:,} line{'s' * (folded != 1)}"
        return f"\x1b[1m▸ {line[len(GROUP) :]}\x1b[0;2m ({count})\x1b[0m"
    if line.startswith(ENDGROUP):
        return "\x1b[2m╰\x1b[0m"
    command, close, message = line[3:].partition("]")
    note = _NOTES.get(command)
    if not close or note is None:
        return line
    colour, icon, label = note
    return f"\x1b[{colour}m{icon} {label}: {message}\x1b[0m"


def group_stop(
    raw: Callable[[int, int], list[str]], header: int, stored: int
) -> tuple[int, int] | None:
    """Where the group at line `header` stops, and the lines in it: after its end line (groups
    nest), or at a step marker (GitHub closes a step's groups when it ends); None while it goes
    on. `raw(a, b)` reads the whole log's lines a to b as stored."""
    depth, start = 0, header + 1
    while start < stored:
        lines = raw(start, min(stored, start + _READ))
        for at, text in enumerate(lines, start):
            if text.startswith(GROUP):
                depth += 1
            elif text.startswith(ENDGROUP):
                if not depth:
                    return at + 1, at - header - 1
                depth -= 1
            elif text.startswith(STEP_MARKER):
                return at, at - header - 1
        start += len(lines)
    return None


def group_around(raw: Callable[[int, int], list[str]], line: int) -> int | None:
    """The header of the innermost group that line `line` is in (read back at most `_READ`
    lines), or None."""
    depth = 0
    above = raw(max(0, line - _READ), line)
    for at, text in zip(range(line - 1, -1, -1), reversed(above), strict=False):
        if text.startswith(GROUP):
            if not depth:
                return at
            depth -= 1
        elif text.startswith(ENDGROUP):
            depth += 1
        elif text.startswith(STEP_MARKER):
            return None
    return None


class Folds:
    """One log's folded groups: each hides the lines `first` to `stop` (exclusive) after its
    header `first - 1`. Line numbers are the unfolded log's; `shown` and `stored` translate."""

    def __init__(self) -> None:
        self._firsts: list[int] = []  # sorted; no two ranges overlap
        self._stops: list[int] = []
        self._insides: list[int] = []  # each group's lines, its end line not counted
        self._before: list[int] = [0]  # lines hidden by the ranges before range i

    @property
    def hidden(self) -> int:
        """Lines hidden in all."""
        return self._before[-1]

    def inside(self, header: int) -> int | None:
        """The lines in the group at `header` (its end line not counted) when it is folded;
        None when it is open."""
        i = bisect_right(self._firsts, header + 1) - 1
        return self._insides[i] if i >= 0 and self._firsts[i] == header + 1 else None

    def holding(self, line: int) -> int | None:
        """The header of the folded group that hides `line`, or None when it is shown."""
        i = bisect_right(self._firsts, line) - 1
        return self._firsts[i] - 1 if i >= 0 and line < self._stops[i] else None

    def fold(self, header: int, stop: int, inside: int) -> None:
        """Hide lines `header + 1` to `stop` (exclusive), `inside` of them the group's own;
        the groups folded within are unfolded (a nested group is folded with its outer one)."""
        if stop > header + 1 and self.inside(header) is None:
            i, j = bisect_right(self._firsts, header), bisect_right(self._firsts, stop)
            self._firsts[i:j], self._stops[i:j], self._insides[i:j] = [header + 1], [stop], [inside]
            self._changed()

    def unfold(self, header: int) -> None:
        if self.inside(header) is not None:
            i = self._firsts.index(header + 1)
            del self._firsts[i], self._stops[i], self._insides[i]
            self._changed()

    def _changed(self) -> None:
        before = [0]
        for first, stop in zip(self._firsts, self._stops, strict=True):
            before.append(before[-1] + stop - first)
        self._before = before

    def stored(self, shown: int) -> int:
        """The unfolded log's line number of line `shown` of the folded log."""
        line = shown
        for first, stop in zip(self._firsts, self._stops, strict=True):
            if line < first:
                break
            line += stop - first
        return line

    def shown(self, stored: int) -> int:
        """Where line `stored` shows in the folded log (a hidden line: at its group's header)."""
        header = self.holding(stored)
        if header is not None:
            stored = header
        return stored - self._before[bisect_right(self._firsts, stored)]

    def runs(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The unfolded log's line ranges that lines `start` to `stop` of the folded log are."""
        runs: list[tuple[int, int]] = []
        line, left = self.stored(start), stop - start
        while left > 0:
            i = bisect_right(self._firsts, line)
            end = self._firsts[i] if i < len(self._firsts) else line + left
            take = min(left, end - line)
            runs.append((line, line + take))
            left -= take
            line = self._stops[i] if i < len(self._firsts) else line + take
        return runs
