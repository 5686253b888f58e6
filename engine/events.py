"""Events the engine publishes to subscribers, and their JSON form (SPEC §7).

Log output travels as `LogLines`, one event per chunk of lines read, never one per line; the
JSON form expands it to one `log` object per line. A chunk's lines are a `Lines`: the chunk's
text, split into line strings only when a subscriber looks at single lines.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar, overload

from engine.status import (  # noqa: F401  (re-exported: the statuses' historical home)
    BAD,
    CACHED,
    CANCELLED,
    FAILED,
    FINISHED,
    LOST,
    PENDING,
    QUEUED,
    READY,
    RUNNING,
    SKIPPED,
    STATUSES,
    SUCCEEDED,
    SUPERSEDED,
    TIMED_OUT,
    WAITING,
    Status,
)


class Lines(Sequence[str]):
    """Lines (without newlines) kept as their newline-joined text until one is asked for: a
    reporter that prints a chunk whole (`joined`) or counts it never makes a string per line.
    Equal to any sequence of the same strings (a tuple, a list)."""

    __slots__ = ("_split", "_text")

    def __init__(self, text: str) -> None:
        """`text`: the lines joined by "\\n" (no newline after the last one)."""
        self._text: str | None = text
        self._split: list[str] | None = None

    @classmethod
    def of(cls, lines: Iterable[str]) -> Lines:
        """Lines from their strings (each kept as given, even one holding a newline)."""
        made = cls.__new__(cls)
        made._text, made._split = None, list(lines)
        return made

    def _lines(self) -> list[str]:
        if self._split is None:
            assert self._text is not None
            self._split = self._text.split("\n")
        return self._split

    def joined(self, sep: str) -> str:
        """`sep.join(self)`, in one pass over the text."""
        if self._split is None:
            assert self._text is not None
            return self._text.replace("\n", sep) if sep != "\n" else self._text
        return sep.join(self._split)

    def __bool__(self) -> bool:
        return self._split is None or bool(self._split)  # a text holds at least one line

    def __len__(self) -> int:
        if self._split is None:
            assert self._text is not None
            return self._text.count("\n") + 1
        return len(self._split)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        return self._lines()[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines())

    def __contains__(self, value: object) -> bool:
        return value in self._lines()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return self._lines() == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._lines()))

    def __repr__(self) -> str:
        return f"Lines({self._lines()!r})"


def now() -> float:
    """Seconds since the epoch, as events carry them."""
    return time.time()


E = TypeVar("E", bound=tuple[Any, ...])


def _stamped(cls: type[E]) -> type[E]:
    """An event class whose `ts` is the time it is made at, unless one is given. Events are
    named tuples: a tenth of a frozen dataclass's cost to define (start-up), as cheap to make."""
    make = cls.__new__
    at = cls._fields.index("ts")  # type: ignore[attr-defined]

    def stamp(klass: type[E], *args: Any, **kwargs: Any) -> E:
        if len(args) <= at and "ts" not in kwargs:
            kwargs["ts"] = now()
        return make(klass, *args, **kwargs)

    cls.__new__ = stamp  # type: ignore[assignment,method-assign]
    return cls


@_stamped
class RunStarted(NamedTuple):
    """A run began; `stages` are the instance ids it covers, in order."""

    run_id: str
    pipeline: str
    stages: tuple[str, ...]
    ts: float = 0.0  # when it was made (`_stamped`)
    type: str = "run_started"


@_stamped
class StageStatus(NamedTuple):
    """A stage instance's attempt moved to `status` (SPEC §2)."""

    run_id: str
    stage: str
    status: Status
    attempt: int
    host: str
    exit_code: int | None = None
    duration: float | None = None
    reason: str | None = None
    job_id: str | None = None  # extension: the Slurm job of this attempt
    node: str | None = None  # extension: the node a Slurm job runs on
    ts: float = 0.0  # when it was made (`_stamped`)
    type: str = "stage_status"


@_stamped
class LogLines(NamedTuple):
    """Complete lines (masked, decoded with replacement, without newlines) from one stream."""

    run_id: str
    stage: str
    attempt: int
    stream: str  # "stdout" or "stderr"
    lines: Sequence[str]  # a `Lines` from the engine; a tuple where tests make them
    ts: float = 0.0  # when it was made (`_stamped`)
    type: str = "log"


@_stamped
class RunFinished(NamedTuple):
    """A run ended with `status` and the exit code pipedeck exits with."""

    run_id: str
    status: Status  # succeeded, failed, cancelled (superseded: a watch run a change replaced)
    exit_code: int
    duration: float
    ts: float = 0.0  # when it was made (`_stamped`)
    type: str = "run_finished"


class HostState(NamedTuple):
    """An SSH host's connection state and, when `lost` or `failed`, why (`Run.host_states`)."""

    state: str
    reason: str | None = None

    def __str__(self) -> str:
        """`state`, or `state: reason`."""
        return f"{self.state}: {self.reason}" if self.reason else self.state


@_stamped
class HostStatus(NamedTuple):
    """An SSH host's connection state changed (an extension of SPEC §7): `idle`, `connecting`,
    `connected`, `syncing`, `lost`, `failed`; `reason` says why for the last two. After a
    workspace sync that changed something, `synced` says what it did: stage, files, bytes,
    deleted, method, wire_bytes."""

    run_id: str
    host: str
    state: str
    reason: str | None = None
    synced: dict[str, object] | None = None
    ts: float = 0.0  # when it was made (`_stamped`)
    type: str = "host_status"


@_stamped
class StepStatus(NamedTuple):
    """A step of a GitHub Actions job changed status (SPEC §7, §11); `step` is 0-based."""

    run_id: str
    stage: str
    attempt: int
    step: int
    name: str
    status: str
    duration: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    allowed: bool | None = None  # a failure `continue-on-error` allows (an extension, §7)
    ts: float = 0.0  # when it was made (`_stamped`)
    type: str = "step_status"


Event = RunStarted | StageStatus | LogLines | RunFinished | HostStatus | StepStatus
Subscriber = Callable[[Event], None]


def to_json_lines(event: Event) -> Iterator[str]:
    """The event as SPEC §7 JSON objects, one string per line (a LogLines gives one per line)."""
    if isinstance(event, LogLines):
        head = {
            "type": "log",
            "ts": event.ts,
            "run_id": event.run_id,
            "stage": event.stage,
            "attempt": event.attempt,
            "stream": event.stream,
        }
        for text in event.lines:
            yield json.dumps({**head, "text": text}, ensure_ascii=False)
        return
    data = {k: v for k, v in event._asdict().items() if v is not None or k == "exit_code"}
    if isinstance(event, StageStatus) and event.exit_code is None:
        data.pop("exit_code")
    if isinstance(event, RunStarted):
        data["stages"] = list(event.stages)
    yield json.dumps(data, ensure_ascii=False)
