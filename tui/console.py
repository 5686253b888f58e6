"""Headless output: plain lines (GitHub Actions-aware), NDJSON events (SPEC §7) and JUnit XML.
Each is an event sink."""

from __future__ import annotations

import os
import queue
import re
import shlex
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from engine.events import (
    BAD,
    CACHED,
    CANCELLED,
    FINISHED,
    RUNNING,
    SKIPPED,
    Event,
    HostStatus,
    Lines,
    LogLines,
    RunFinished,
    RunStarted,
    StageStatus,
    to_json_lines,
)
from engine.gha.commands import STEP_MARKER, marker_step_line
from engine.logs import LogStore
from engine.spec import Pipeline
from engine.status import NOT_CACHEABLE
from tui.widgets.groups import ENDGROUP, ESCAPES, marked

_COLORS = (36, 35, 33, 34, 32, 96, 95, 93, 94, 92)
_STATUS_COLOR = {
    "succeeded": 32,
    "cached": 32,
    "failed": 31,
    "timed_out": 31,
    "lost": 31,
    "cancelled": 33,
    "skipped": 90,
    "running": 36,
    "ready": 36,
}
_ALLOWED_COLOR = 33  # a failure that allow_failure lets pass
JUNIT_LOG_LINES = 5000  # the last lines of a failed stage's log kept in the report
SUMMARY_LINES = 10  # the last lines of each failed stage shown when a run ends
_LINE_CHARS = 500  # a summary line is cut at this many characters
_CHUNK = 1000  # log lines read from the store at once


def allowed_failure(pipeline: Pipeline | None, event: StageStatus) -> bool:
    """True for a failure that the stage's `allow_failure` lets pass."""
    stage = pipeline.stages.get(event.stage) if pipeline else None
    return event.status in BAD and stage is not None and stage.allow_failure


def silence_stdout() -> None:
    """The reader of stdout left (`pipedeck run | head`): write on into /dev/null, so the run
    finishes and records everything instead of dying halfway with a traceback."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)


def _stdout_failed(err: OSError) -> None:
    """A write to stdout failed: the reader left (quietly), or the disk is full or the device
    broken (said once on stderr); the run goes on writing into /dev/null."""
    if not isinstance(err, BrokenPipeError):
        print(
            f"pipedeck: cannot write to stdout ({err.strerror or err}); the run goes on and "
            "keeps every log: see `pipedeck logs STAGE`",
            file=sys.stderr,
        )
    silence_stdout()


def _tail(logs: LogStore, run_id: str, sid: str, attempt: int, count: int) -> list[str]:
    """The last `count` lines of an attempt's stored log (none before the stage ran)."""
    if attempt < 1 or attempt not in logs.attempts(run_id, sid):
        return []
    reader = logs.reader(run_id, sid, attempt)
    end = len(reader)
    return [line for _, line in reader.lines(max(0, end - count), end)]


def _all_lines(logs: LogStore, run_id: str, sid: str, attempt: int) -> Iterator[str]:
    """Every line of an attempt's stored log, read in chunks (a flood never sits in memory)."""
    if attempt < 1 or attempt not in logs.attempts(run_id, sid):
        return
    reader = logs.reader(run_id, sid, attempt)
    for start in range(0, len(reader), _CHUNK):
        for _, line in reader.lines(start, start + _CHUNK):
            yield line


def logs_command(pipeline: Pipeline | None, run_id: str, sid: str) -> str:
    """The `pipedeck logs` command that prints a stage's whole log."""
    words = ["pipedeck", "logs", "--run", run_id]
    if pipeline is not None and pipeline.workspace != Path.cwd():  # -f takes the directory
        relative = os.path.relpath(pipeline.workspace)
        words += ["-f", str(pipeline.workspace) if relative.startswith("..") else relative]
    return shlex.join([*words, sid])


def _cut(line: str) -> str:
    return line if len(line) <= _LINE_CHARS else line[:_LINE_CHARS] + "…"


class PlainReporter:
    """`--format plain`: every output line prefixed with its stage id; a line per start and end;
    when stages failed, a summary at the end: each one's last lines (read from `logs`) and the
    command that prints the rest. `pipeline` tells failures allowed by `allow_failure` apart."""

    def __init__(
        self,
        out: TextIO,
        color: bool = False,
        logs: LogStore | None = None,
        pipeline: Pipeline | None = None,
        strip: bool = False,
    ) -> None:
        self.out = out
        self.color = color
        self.strip = strip  # `--color never`: the stages' own escape sequences go too
        self.logs = logs
        self.pipeline = pipeline
        self._prefix: dict[str, str] = {}
        self._order: tuple[str, ...] = ()
        self._last: dict[str, StageStatus] = {}  # each stage's last finished status

    def _paint(self, code: int, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def prefix(self, stage: str) -> str:
        """`[stage] `, coloured per stage when colour is on."""
        if stage not in self._prefix:
            code = _COLORS[len(self._prefix) % len(_COLORS)]
            self._prefix[stage] = self._paint(code, f"[{stage}]") + " "
        return self._prefix[stage]

    def allowed(self, event: StageStatus) -> bool:
        """True for a failure that the stage's `allow_failure` lets pass."""
        return allowed_failure(self.pipeline, event)

    def failures(self) -> list[StageStatus]:
        """The stages whose failure fails the run, in topological order."""
        ends = [self._last[sid] for sid in self._order if sid in self._last]
        return [e for e in ends if e.status in BAD and not self.allowed(e)]

    def __call__(self, event: Event) -> None:
        try:
            self._write(event)
        except OSError as err:
            _stdout_failed(err)

    def _write(self, event: Event) -> None:
        if isinstance(event, LogLines):
            pre = self.prefix(event.stage)
            lines = event.lines
            sep = "\n" + pre
            text = _joined(lines, sep)
            if "##" in text:  # one substring test per chunk, not one per line
                # a GitHub Actions job's step markers and workflow commands, as they read
                shown = (self._job_line(x) if x.startswith("##") else x for x in lines)
                lines = tuple(line for line in shown if line is not None)
                text = sep.join(lines)
            if self.strip and "\x1b" in text:
                text = ESCAPES.sub("", text)
            if lines:
                self.out.write(pre + text + "\n")
        elif isinstance(event, StageStatus):
            if event.status in FINISHED:
                self._last[event.stage] = event
            self._status(event)
        elif isinstance(event, HostStatus):
            why = event.reason.removeprefix(f"host {event.host}: ") if event.reason else ""
            self.out.write(f"host {event.host}: {event.state}{': ' + why if why else ''}\n")
        elif isinstance(event, RunStarted):
            self._order = event.stages
            self._last.clear()
        elif isinstance(event, RunFinished):
            self._summary(event.run_id)
            verdict = self._paint(_STATUS_COLOR.get(event.status, 0), event.status)
            self.out.write(
                f"run {event.run_id} {verdict} in {event.duration:.1f}s (exit {event.exit_code})\n"
            )
            self.out.flush()

    def _job_line(self, line: str) -> str | None:
        """A finished step's marker as its step line (None: a starting step's); a workflow
        command (`##[group]`, `##[error]`...) as the log view draws it (None: a group's end)."""
        if line.startswith(STEP_MARKER):
            return self._step(line)
        if line.startswith(ENDGROUP):
            return None
        text = marked(line)
        return text if self.color or text is line else ESCAPES.sub("", text)

    def _step(self, marker: str) -> str | None:
        """A step marker's step line (painted), or None for a starting step's."""
        text = marker_step_line(marker)
        return None if text is None else self._paint(2, text)

    def _summary(self, run_id: str) -> None:
        """Each failed stage with its last lines and the command for the rest."""
        failed = self.failures()
        if not failed or self.logs is None:
            return
        self.out.write(f"\n{len(failed)} stage(s) failed:\n")
        for event in failed:
            head = f"── {event.stage} {event.status}" + (f": {event.reason}" * bool(event.reason))
            self.out.write(self._paint(_STATUS_COLOR[event.status], head) + "\n")
            lines = _tail(self.logs, run_id, event.stage, event.attempt, SUMMARY_LINES)
            shown = (self._job_line(x) if x.startswith("##") else x for x in lines)
            if self.strip:
                shown = (None if x is None else ESCAPES.sub("", x) for x in shown)
            self.out.writelines(f"   {_cut(line)}\n" for line in shown if line is not None)
            self.out.write(f"   whole log: {logs_command(self.pipeline, run_id, event.stage)}\n")
        self.out.write("\n")

    def _status(self, event: StageStatus) -> None:
        self._line(event)

    def _line(self, event: StageStatus) -> None:
        if event.status == RUNNING:
            text = f"▶ running (attempt {event.attempt})"
            if event.host != "local":
                text += f" on {event.host}"
            if event.reason and event.reason not in NOT_CACHEABLE:
                text += f": {event.reason}"
        elif event.status == "ready":  # a service (SPEC §10)
            text = f"● {event.reason or 'ready'}"
        elif event.status in FINISHED:
            text = self.finished_text(event)
        else:
            return
        self.out.write(self.prefix(event.stage) + self._paint(self._color_of(event), text) + "\n")
        self.out.flush()

    def finished_text(self, event: StageStatus) -> str:
        """`failed (allowed) in 1.2s: exit code 1`, `succeeded in 0.3s`..."""
        text = event.status + (" (allowed)" if self.allowed(event) else "")
        reason = event.reason
        if event.duration is not None:
            took = f"{event.duration:.1f}s"
            text += f" in {took}"
            if reason:  # `cancelled in 5.0s: run cancelled`, not `..., after 5.0s` again
                reason = reason.removesuffix(f", after {took}")
        if reason and event.status != "succeeded" and reason != event.status:
            text += f": {reason}"  # never `cancelled: cancelled`
        return text

    def _color_of(self, event: StageStatus) -> int:
        return _ALLOWED_COLOR if self.allowed(event) else _STATUS_COLOR.get(event.status, 0)


def _joined(lines: Sequence[str], sep: str = "\n") -> str:
    """A chunk's lines as one text (one substring test per chunk, not one per line)."""
    return lines.joined(sep) if isinstance(lines, Lines) else sep.join(lines)


def _escape_data(text: str) -> str:
    """Text for a GitHub workflow command's message."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    """Text for a GitHub workflow command's property (title=...)."""
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


_ICONS = {
    "succeeded": "✅",
    "cached": "✅",
    "failed": "❌",
    "timed_out": "⏱️",
    "lost": "❌",
    "cancelled": "🚫",
    "skipped": "⏭️",
}


class GithubReporter(PlainReporter):
    """Plain output inside GitHub Actions (`GITHUB_ACTIONS=true`): each stage attempt's output is
    printed, read from the log store, as one `::group::` when the attempt ends (parallel stages
    would otherwise interleave inside each other's folds); failures get an `::error` annotation
    (allowed ones a `::warning`); at the end a Markdown summary of the run is appended to
    `summary_path` ($GITHUB_STEP_SUMMARY). A thread of its own reads and writes, in event order,
    so a long log never holds up the event loop; `RunFinished` waits until all is written."""

    def __init__(
        self,
        out: TextIO,
        logs: LogStore,
        pipeline: Pipeline,
        color: bool = False,
        summary_path: str | None = None,
    ) -> None:
        super().__init__(out, color=color, logs=logs, pipeline=pipeline)
        self.summary_path = summary_path
        self._ran: set[tuple[str, int]] = set()  # attempts that started
        self._events: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._drain, name="github-output", daemon=True)
        self._writer.start()

    def __call__(self, event: Event) -> None:
        if isinstance(event, LogLines):
            return  # read from the log store when the attempt ends
        self._events.put(event)
        if isinstance(event, RunFinished):
            self._events.put(None)
            self._writer.join()

    def _drain(self) -> None:
        while (event := self._events.get()) is not None:
            super().__call__(event)

    def _write(self, event: Event) -> None:
        super()._write(event)
        if isinstance(event, RunFinished) and self.summary_path:
            self._step_summary(event)

    def _status(self, event: StageStatus) -> None:
        if event.status == RUNNING:
            self._ran.add((event.stage, event.attempt))
        if event.status not in FINISHED or (event.stage, event.attempt) not in self._ran:
            super()._status(event)
            return
        assert self.logs is not None
        run_id = event.run_id
        title = f"[{event.stage}] {self.finished_text(event)}"
        self.out.write(f"::group::{_escape_data(title)}\n")
        for line in _all_lines(self.logs, run_id, event.stage, event.attempt):
            self.out.write(line + "\n")
        self.out.write("::endgroup::\n")
        if event.status in BAD:
            kind = "warning" if self.allowed(event) else "error"
            message = f"{event.stage} {self.finished_text(event)}"
            self.out.write(
                f"::{kind} title={_escape_property(f'pipedeck: {event.stage}')}::"
                f"{_escape_data(message)}\n"
            )
        self.out.flush()

    def _step_summary(self, finished: RunFinished) -> None:
        """Append the run's Markdown summary to $GITHUB_STEP_SUMMARY."""
        assert self.summary_path is not None
        name = self.pipeline.name if self.pipeline else "pipeline"
        lines = [
            f"### pipedeck · {name}: {finished.status} in {finished.duration:.1f}s "
            f"(exit {finished.exit_code})",
            "",
            "| stage | status | duration | attempts |",
            "| --- | --- | --- | --- |",
        ]
        for sid in self._order:
            event = self._last.get(sid)
            if event is None:
                continue
            icon = "⚠️" if self.allowed(event) else _ICONS.get(event.status, "")
            status = f"{icon} {event.status}" + (" (allowed)" if self.allowed(event) else "")
            duration = "-" if event.duration is None else f"{event.duration:.1f}s"
            cell = sid.replace("|", "\\|")
            lines.append(f"| `{cell}` | {status} | {duration} | {event.attempt} |")
        for event in self.failures():
            assert self.logs is not None
            tail = _tail(self.logs, finished.run_id, event.stage, event.attempt, SUMMARY_LINES)
            runs = [len(m) for line in tail for m in re.findall("`+", line)]
            fence = "`" * max(3, max(runs, default=0) + 1)
            lines += ["", f"#### ❌ `{event.stage}` {event.status}: {event.reason or ''}", ""]
            lines += [f"{fence}text", *map(_cut, tail), fence, ""]
            command = logs_command(self.pipeline, finished.run_id, event.stage)
            lines.append(f"Whole log: `{command}`")
        try:
            with open(self.summary_path, "a", encoding="utf-8") as summary:
                summary.write("\n".join(lines) + "\n\n")
        except OSError as err:
            print(
                f"pipedeck: cannot append the run summary to {self.summary_path} "
                f"(GITHUB_STEP_SUMMARY): {err.strerror or err}",
                file=sys.stderr,
            )


class JsonReporter:
    """`--format json`: the SPEC §7 event stream, one object per line."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, event: Event) -> None:
        if isinstance(event, LogLines) and STEP_MARKER in _joined(event.lines):
            # a GitHub Actions job's step markers are its `step_status` events, not output
            lines = tuple(x for x in event.lines if not x.startswith(STEP_MARKER))
            event = event._replace(lines=lines)
        try:
            for line in to_json_lines(event):
                self.out.write(line + "\n")
            if not isinstance(event, LogLines):
                self.out.flush()
        except OSError as err:
            _stdout_failed(err)


class JUnitWriter:
    """`--junit FILE`: one testcase per stage, with its log for failures; written at run end.
    A failure allowed by `allow_failure` passes the run, so it is no `<failure>` (a CI report
    would turn red): it is `<skipped>` saying why, with its log in `<system-out>`."""

    def __init__(self, path: Path, pipeline: Pipeline, logs: LogStore) -> None:
        self.path = path
        self.pipeline = pipeline
        self.logs = logs
        self._last: dict[str, StageStatus] = {}
        self._order: list[str] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._order = list(event.stages)
        elif isinstance(event, StageStatus):
            self._last[event.stage] = event
        elif isinstance(event, RunFinished):
            self.write(event)

    def write(self, finished: RunFinished) -> None:
        """Write the report for the run that just finished."""
        import xml.etree.ElementTree as ET  # only with --junit

        suite = ET.Element("testsuite", name=self.pipeline.name, time=f"{finished.duration:.3f}")
        counts = {"tests": 0, "failures": 0, "skipped": 0, "errors": 0}
        for sid in self._order:
            last = self._last.get(sid)
            if last is None:
                continue
            counts["tests"] += 1
            case = ET.SubElement(
                suite,
                "testcase",
                classname=self.pipeline.name,
                name=sid,
                time=f"{last.duration or 0:.3f}",
            )
            if allowed_failure(self.pipeline, last):
                counts["skipped"] += 1
                why = f"allowed to fail: {last.reason or last.status}"
                ET.SubElement(case, "skipped", message=why, type=last.status)
                ET.SubElement(case, "system-out").text = self._log(
                    finished.run_id, sid, last.attempt
                )
            elif last.status in BAD:
                counts["failures"] += 1
                node = ET.SubElement(
                    case, "failure", message=last.reason or last.status, type=last.status
                )
                node.text = self._log(finished.run_id, sid, last.attempt)
            elif last.status in (SKIPPED, CANCELLED):
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=last.reason or last.status)
            elif last.status == CACHED:
                ET.SubElement(case, "system-out").text = "cached: up to date, not run"
        for key, value in counts.items():
            suite.set(key, str(value))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            ET.ElementTree(suite).write(self.path, encoding="utf-8", xml_declaration=True)
        except OSError as err:  # the run itself is over and recorded; say what was not written
            print(
                f"pipedeck: cannot write the JUnit report {self.path}: {err.strerror or err}",
                file=sys.stderr,
            )

    def _log(self, run_id: str, sid: str, attempt: int) -> str:
        text = "\n".join(_tail(self.logs, run_id, sid, attempt, JUNIT_LOG_LINES))
        return "".join(ch for ch in text if ch in "\t\n\r" or ch >= " ")  # XML-safe
