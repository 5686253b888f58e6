"""A GitHub Actions job's log as the TUI shows it (SPEC §11).

The job runner's step markers (`##pipedeck[step] {...}`) stay in the log store byte for byte;
`JobReader` shows each as a step header line as it is read (what the plain console prints
instead of them), the workflow command lines marked (`tui.widgets.groups`) and the groups
folded that its `folds` say. `StepMarks` records where each step's lines start and end, from the
`LogLines` events as they arrive (a job's lines only), and `StepReader` shows one step's own
lines: its markers left out, since its tree row shows its status and duration.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.events import BAD, RUNNING, SKIPPED, LogLines
from engine.gha.commands import STEP_MARKER, parse_step_marker, step_line
from tui.widgets.groups import GROUP, Folds, marked
from tui.widgets.log_view import LineReader
from tui.widgets.merged import AttemptKey
from tui.widgets.status import ICONS

_ANSI_COLOUR = {RUNNING: "36", SKIPPED: "2"}  # bold, then this colour; bad: red; else green


def step_header(line: str) -> str:
    """A step marker line as a header: `▶ step 2 Run tests` when the step starts,
    `✔ step 2 Run tests: succeeded in 3.1s` when it ends (bold, in its status colour, as
    ANSI: search and copy see the text); any other line as it is."""
    data = parse_step_marker(line)
    if data is None:
        return line
    status, name = str(data.get("status", "")), str(data.get("name", ""))
    if status == RUNNING:
        text = f"step {data['step'] + 1} {name}"
    else:
        text = step_line(data["step"], name, status, data.get("duration"), data.get("reason"))
    colour = "31" if status in BAD else _ANSI_COLOUR.get(status, "32")
    return f"\x1b[1;{colour}m{ICONS.get(status, ICONS['failed'])} {text}\x1b[0m"


class JobReader:
    """A job's whole log, each step marker shown as its header (`step_header`), each workflow
    command line marked, and the groups in `folds` folded (line numbers: the folded log's)."""

    def __init__(self, reader: LineReader) -> None:
        self.reader = reader
        self.folds = Folds()  # the view gives each log's reader that log's

    def __len__(self) -> int:
        return len(self.reader) - self.folds.hidden

    def lines(self, start: int, stop: int) -> list[tuple[str, str]]:
        shown: list[tuple[str, str]] = []
        for first, end in self.folds.runs(start, min(stop, len(self))):
            for at, (stream, text) in enumerate(self.reader.lines(first, end), first):
                if text.startswith(STEP_MARKER):
                    text = step_header(text)
                elif text.startswith("##["):
                    text = marked(text, self.folds.inside(at) if text.startswith(GROUP) else None)
                shown.append((stream, text))
        return shown

    def raw(self, start: int, stop: int) -> list[str]:
        """Lines `start` to `stop` of the unfolded log, as stored."""
        return [text for _, text in self.reader.lines(start, stop)]

    def stored_len(self) -> int:
        """Lines in the unfolded log."""
        return len(self.reader)


Span = tuple[int, int | None]
"""A step's own lines in its job's log: (first, stop); stop is None while the step runs."""


class StepMarks:
    """Where each step of each job attempt has its lines, from the job's `LogLines` events
    (counted as the log store stores them: one event's lines after the previous ones)."""

    def __init__(self) -> None:
        self._lines: dict[AttemptKey, int] = {}  # lines seen so far
        self._spans: dict[AttemptKey, dict[int, list[int | None]]] = {}  # step -> [first, stop]

    def add(self, event: LogLines) -> None:
        """Record one `LogLines` event of a job."""
        key = (event.run_id, event.stage, event.attempt)
        first = self._lines.get(key, 0)
        self._lines[key] = first + len(event.lines)
        for offset, line in enumerate(event.lines):
            data = parse_step_marker(line) if line.startswith(STEP_MARKER) else None
            if data is None:
                continue
            at = first + offset
            span = self._spans.setdefault(key, {}).setdefault(data["step"], [at, None])
            if data.get("status") == RUNNING:
                span[:] = [at + 1, None]  # after the marker: its lines follow
            else:  # its end (a step skipped without starting has no lines)
                span[1] = at

    def span(self, key: AttemptKey, step: int) -> Span | None:
        """Step `step`'s lines in the log of `key`; None before its first marker arrived."""
        span = self._spans.get(key, {}).get(step)
        return None if span is None else (span[0] or 0, span[1])


class _StepLines:
    """One step's own lines of a job's log: `span()` says where they are, live."""

    def __init__(self, reader: LineReader, span: Callable[[], Span | None]) -> None:
        self.reader = reader
        self.span = span

    def _bounds(self) -> tuple[int, int]:
        span = self.span()
        if span is None:
            return 0, 0
        first, stop = span
        return first, max(first, len(self.reader) if stop is None else stop)

    def __len__(self) -> int:
        first, stop = self._bounds()
        return stop - first

    def lines(self, start: int, stop: int) -> list[tuple[str, str]]:
        first, end = self._bounds()
        start, stop, _ = slice(start, stop).indices(end - first)
        return self.reader.lines(first + start, first + stop)


class StepReader(JobReader):
    """One step's own lines of a job's log, shown as `JobReader` shows them."""

    def __init__(self, reader: LineReader, span: Callable[[], Span | None]) -> None:
        super().__init__(_StepLines(reader, span))
