"""Workflow commands in step output (`::group::`, `::error file=..::`, `::add-mask::`...), the
`GITHUB_ENV`/`GITHUB_OUTPUT` file format, and the step markers the engine reads (SPEC §7).

Output lines are rewritten as GitHub's raw logs show them: `##[group]Title`, `##[endgroup]`,
`##[error]file:line:col: message`, `##[warning]...`, `##[notice]...`.
"""

from __future__ import annotations

import json
import re
import time

TYPE_CHECKING = False  # the job runner imports this module: no typing, pathlib, engine.events
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path
    from typing import Any

    from engine.events import StepStatus

STEP_MARKER = "##pipedeck[step] "
JOB_SKIPPED = 78  # the job runner's exit status for a skipped job (`if:` false, cannot run here)
JOB_CANCELLED = 79  # ... and for a job fail-fast cancelled (another instance of its matrix failed)
_COMMAND_RE = re.compile(r"^::([A-Za-z-]+)(?: ([^:]*))?::(.*)$")
_HEREDOC_RE = re.compile(r"^([^=<]+)<<(.+)$")


def step_marker(**fields: Any) -> str:
    """The line announcing a step's status: `##pipedeck[step] {"step": 0, ...}`."""
    return STEP_MARKER + json.dumps(fields, ensure_ascii=False)


def parse_step_marker(line: str) -> dict[str, Any] | None:
    """The fields of a step marker line, or None for any other line."""
    if not line.startswith(STEP_MARKER):
        return None
    try:
        data = json.loads(line[len(STEP_MARKER) :])
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("step"), int) else None


def safe_name(name: str) -> str:
    """A job instance id as a file name."""
    return "".join(c if c.isalnum() or c in "-_.=," else "_" for c in name)[:120]


def skip_reason(state_dir: Path, run_id: str, instance: str) -> str:
    """Why the job runner skipped or cancelled a job instance (recorded with its result)."""
    path = state_dir / "gha" / run_id / "jobs" / f"{safe_name(instance)}.json"
    try:
        return str(json.loads(path.read_text()).get("reason") or "skipped")
    except (OSError, ValueError):
        return "skipped by the job runner"


def summaries(state_dir: Path, run_id: str) -> list[tuple[str, str]]:
    """The step summaries (`GITHUB_STEP_SUMMARY`, Markdown) each job of a run wrote:
    (job instance, as a file name; text)."""
    folder = state_dir / "gha" / run_id / "summary"
    if not folder.is_dir():
        return []
    return [(path.stem, path.read_text(errors="replace")) for path in sorted(folder.glob("*.md"))]


class StepEvents:
    """The `step_status` events of one job attempt's step markers, and the markers ending the
    steps its runner did not end (it was killed): every step that started gets a final status."""

    def __init__(self, run_id: str, stage: str, attempt: int) -> None:
        self.key = (run_id, stage, attempt)
        self.running: dict[int, tuple[str, float]] = {}  # step -> (name, started, monotonic)
        self.failure: str | None = None  # why the job failed: its first failed step (not allowed)

    def events(self, lines: Iterable[str]) -> Iterator[StepStatus]:
        """The events of the step markers among the attempt's log lines."""
        from engine.events import StepStatus

        for line in lines:
            data = parse_step_marker(line) if line.startswith(STEP_MARKER) else None
            if data is None:
                continue
            name, status = str(data.get("name", "")), str(data.get("status", ""))
            if status == "running":
                self.running[data["step"]] = (name, time.monotonic())
            else:
                self.running.pop(data["step"], None)
                if status in ("failed", "timed_out") and not data.get("allowed"):
                    code = data.get("exit_code")
                    self.failure = self.failure or (
                        f"step {data['step'] + 1} {name} {status}"
                        + (f": exit code {code}" if code is not None else "")
                    )
            yield StepStatus(
                *self.key,
                data["step"],
                name,
                status,
                data.get("duration"),
                data.get("exit_code"),
                data.get("reason"),
                True if data.get("allowed") else None,
            )

    def unfinished(self, status: str) -> bytes:
        """Marker lines ending the steps still running, as `status` (the attempt has ended)."""
        now = time.monotonic()
        reason = "the job's runner was killed while the step ran"
        return "".join(
            step_marker(step=step, name=name, status=status, duration=now - started, reason=reason)
            + "\n"
            for step, (name, started) in sorted(self.running.items())
        ).encode()


def step_line(step: int, name: str, status: str, duration: float | None, reason: str | None) -> str:
    """How the plain output shows a finished step: `step 2 Run tests: failed in 3.1s`."""
    took = f" in {duration:.1f}s" if duration is not None else ""
    why = f": {reason}" if reason else ""
    return f"step {step + 1} {name}: {status}{took}{why}"


def readable(lines: Iterable[str]) -> Iterator[str]:
    """A job's stored log lines with each finished step's marker as its step line (the
    markers of starting steps left out)."""
    for line in lines:
        if not line.startswith(STEP_MARKER):
            yield line
        elif (text := marker_step_line(line)) is not None:
            yield text


def marker_step_line(line: str) -> str | None:
    """The step line of a finished step's marker line; None for a starting step's."""
    data = parse_step_marker(line)
    if data is None or data.get("status") == "running":
        return None
    return step_line(
        data["step"],
        str(data.get("name", "")),
        str(data.get("status", "")),
        data.get("duration"),
        data.get("reason"),
    )


def _unescape(text: str, prop: bool = False) -> str:
    text = text.replace("%0D", "\r").replace("%0A", "\n")
    if prop:
        text = text.replace("%3A", ":").replace("%2C", ",")
    return text.replace("%25", "%")


class CommandFilter:
    """Turns a step's output lines into log lines, acting on the workflow commands in them."""

    def __init__(self, masks: list[str]) -> None:
        self.masks = masks  # shared with the runner: ::add-mask:: adds to it
        self.stop_token: str | None = None
        self.outputs: dict[str, str] = {}  # the deprecated ::set-output::
        self.annotations: list[str] = []
        self._sorted: list[str] = []  # the masks, longest first, as of `_count` masks
        self._count = 0

    def mask(self, text: str) -> str:
        if len(self.masks) != self._count:
            self._count = len(self.masks)
            self._sorted = sorted(filter(None, self.masks), key=len, reverse=True)
        for secret in self._sorted:
            text = text.replace(secret, "***")
        return text

    def line(self, text: str) -> str | None:
        """The log line for one output line (None: the line is a command that prints nothing)."""
        if "::" not in text:  # most lines: no command
            return self.mask(text) if self.masks else text
        match = _COMMAND_RE.match(text.strip())
        if self.stop_token is not None:
            if match and match.group(1) == self.stop_token:
                self.stop_token = None
                return None
            return self.mask(text)
        if match is None:
            return self.mask(text)
        command, props_text, message = match.group(1), match.group(2) or "", match.group(3)
        props = {}
        for part in props_text.split(","):
            if "=" in part:
                key, value = part.split("=", 1)
                props[key.strip()] = _unescape(value, prop=True)
        message = _unescape(message)
        if command == "add-mask":
            if message.strip():
                self.masks.append(message.strip())
            return None
        if command == "stop-commands":
            self.stop_token = message
            return None
        if command == "group":
            return self.mask(f"##[group]{message}")
        if command == "endgroup":
            return "##[endgroup]"
        if command in ("error", "warning", "notice"):
            where = ":".join(props[k] for k in ("file", "line", "col") if k in props)
            title = f"{props['title']}: " if "title" in props else ""
            note = self.mask(f"##[{command}]{where + ': ' if where else ''}{title}{message}")
            self.annotations.append(note)
            return note
        if command == "debug":
            return self.mask(f"##[debug]{message}")
        if command == "set-output" and "name" in props:
            self.outputs[props["name"]] = message
            return None
        if command in ("save-state", "echo"):
            return None
        return self.mask(text)


def read_env_file(text: str) -> Iterator[tuple[str, str]]:
    """NAME=VALUE lines and NAME<<DELIMITER ... DELIMITER blocks of GITHUB_ENV/GITHUB_OUTPUT."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        heredoc = _HEREDOC_RE.match(line)
        if heredoc and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = heredoc.group(1), heredoc.group(2)
            body: list[str] = []
            while i < len(lines) and lines[i] != delimiter:
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise ValueError(f"{name}<<{delimiter}: no line '{delimiter}' ends the value")
            i += 1
            yield name, "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            yield name, value
        else:
            raise ValueError(f"expected NAME=VALUE or NAME<<DELIMITER, got {line[:60]!r}")


def split_lines(buffer: bytearray, final: bool = False) -> Iterable[str]:
    """Complete lines taken off the front of `buffer` (and the rest too when `final`)."""
    end = buffer.rfind(b"\n")
    if end < 0 and not final:
        return []
    cut = len(buffer) if final else end + 1
    chunk = bytes(buffer[:cut])
    del buffer[:cut]
    text = chunk.decode("utf-8", "replace")
    return text.splitlines()
