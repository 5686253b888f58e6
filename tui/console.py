"""Headless output: plain lines, NDJSON events (SPEC §7) and JUnit XML. Each is an event sink."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
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
    LogLines,
    RunFinished,
    RunStarted,
    StageStatus,
    to_json_lines,
)
from engine.logs import LogStore

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
JUNIT_LOG_LINES = 5000  # the last lines of a failed stage's log kept in the report


def silence_stdout() -> None:
    """The reader of stdout left (`pipedeck run | head`): write on into /dev/null, so the run
    finishes and records everything instead of dying halfway with a traceback."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)


class PlainReporter:
    """`--format plain`: every output line prefixed with its stage id; a line per start and end."""

    def __init__(self, out: TextIO, color: bool = False) -> None:
        self.out = out
        self.color = color
        self._prefix: dict[str, str] = {}

    def _paint(self, code: int, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def prefix(self, stage: str) -> str:
        """`[stage] `, coloured per stage when colour is on."""
        if stage not in self._prefix:
            code = _COLORS[len(self._prefix) % len(_COLORS)]
            self._prefix[stage] = self._paint(code, f"[{stage}]") + " "
        return self._prefix[stage]

    def __call__(self, event: Event) -> None:
        try:
            self._write(event)
        except BrokenPipeError:
            silence_stdout()

    def _write(self, event: Event) -> None:
        if isinstance(event, LogLines):
            pre = self.prefix(event.stage)
            self.out.write(pre + ("\n" + pre).join(event.lines) + "\n")
        elif isinstance(event, StageStatus):
            self._status(event)
        elif isinstance(event, HostStatus):
            self.out.write(f"host {event.host}: {event.state}\n")
        elif isinstance(event, RunFinished):
            verdict = self._paint(_STATUS_COLOR.get(event.status, 0), event.status)
            self.out.write(
                f"run {event.run_id} {verdict} in {event.duration:.1f}s (exit {event.exit_code})\n"
            )
            self.out.flush()

    def _status(self, event: StageStatus) -> None:
        if event.status == RUNNING:
            text = f"▶ running (attempt {event.attempt})"
            if event.host != "local":
                text += f" on {event.host}"
            if event.reason:
                text += f": {event.reason}"
        elif event.status == "ready":  # a service (SPEC §10)
            text = f"● {event.reason or 'ready'}"
        elif event.status in FINISHED:
            text = event.status
            if event.duration is not None:
                text += f" in {event.duration:.1f}s"
            if event.reason and event.status != "succeeded":
                text += f": {event.reason}"
        else:
            return
        self.out.write(
            self.prefix(event.stage) + self._paint(_STATUS_COLOR.get(event.status, 0), text) + "\n"
        )
        self.out.flush()


class JsonReporter:
    """`--format json`: the SPEC §7 event stream, one object per line."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, event: Event) -> None:
        try:
            for line in to_json_lines(event):
                self.out.write(line + "\n")
            if not isinstance(event, LogLines):
                self.out.flush()
        except BrokenPipeError:
            silence_stdout()


class JUnitWriter:
    """`--junit FILE`: one testcase per stage, with its log for failures; written at run end."""

    def __init__(self, path: Path, pipeline: str, logs: LogStore) -> None:
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
        suite = ET.Element("testsuite", name=self.pipeline, time=f"{finished.duration:.3f}")
        counts = {"tests": 0, "failures": 0, "skipped": 0, "errors": 0}
        for sid in self._order:
            last = self._last.get(sid)
            if last is None:
                continue
            counts["tests"] += 1
            case = ET.SubElement(
                suite,
                "testcase",
                classname=self.pipeline,
                name=sid,
                time=f"{last.duration or 0:.3f}",
            )
            if last.status in BAD:
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(suite).write(self.path, encoding="utf-8", xml_declaration=True)

    def _log(self, run_id: str, sid: str, attempt: int) -> str:
        if attempt < 1:
            return ""
        reader = self.logs.reader(run_id, sid, attempt)
        end = len(reader)
        text = "\n".join(line for _, line in reader.lines(max(0, end - JUNIT_LOG_LINES), end))
        return "".join(ch for ch in text if ch in "\t\n\r" or ch >= " ")  # XML-safe
