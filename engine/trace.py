"""Traces of a run: Chrome Trace Event JSON (`--trace FILE`) and OpenTelemetry (OTLP).

Both are run subscribers. `ChromeTrace` writes the file when the run finishes: one process per
run, one thread row per stage, each attempt's queued and running time as complete ("X") events,
a GitHub Actions job's steps nested in its attempt; it opens in Perfetto or chrome://tracing.

`OtelTrace` exports one trace per run through the OpenTelemetry SDK (OTLP/HTTP, configured by
the standard OTEL_EXPORTER_OTLP_* variables), with the CI/CD semantic conventions: a root span
for the pipeline run (`cicd.pipeline.name`, `cicd.pipeline.run.id`, `cicd.pipeline.result`) and
a child span per stage attempt (`cicd.pipeline.task.name`, `cicd.pipeline.task.run.id`,
`cicd.pipeline.task.run.result`), and a grandchild span per GitHub Actions step. Every stage,
local or remote, gets `TRACEPARENT` pointing at its span in its environment (`Run.env_hooks`),
so the spans it exports itself join the trace. The SDK is imported only when a run is traced.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.events import Event, RunFinished, RunStarted, StageStatus, StepStatus
from engine.status import (
    CACHED,
    CANCELLED,
    FAILED,
    FINISHED,
    LOST,
    QUEUED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    TIMED_OUT,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span

OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
# SPEC §2 statuses -> the CI/CD conventions' result values
RESULTS = {
    SUCCEEDED: "success",
    CACHED: "success",
    FAILED: "failure",
    TIMED_OUT: "timeout",
    CANCELLED: "cancellation",
    SKIPPED: "skip",
    LOST: "error",
}
RUN_RESULTS = {"succeeded": "success", "failed": "failure", "cancelled": "cancellation"}
_warned: list[str] = []  # the missing-SDK notice is given once per process


class _StepTimes:
    """When each step of a job's attempt started, as its `running` event arrived: a finished
    step's span runs from there (or its end less its duration) to its finished event."""

    def __init__(self) -> None:
        self._started: dict[tuple[str, int, int], float] = {}

    def span(self, event: StepStatus) -> tuple[float, float] | None:
        """The finished step's (start, end); None for a starting step (its start is kept)."""
        key = (event.stage, event.attempt, event.step)
        if event.status == RUNNING:
            self._started[key] = event.ts
            return None
        started = self._started.pop(key, None)
        if started is None and event.duration is None:
            return None  # never ran (skipped)
        return (started if started is not None else event.ts - (event.duration or 0), event.ts)


def _micros(ts: float) -> int:
    return int(ts * 1_000_000)


class ChromeTrace:
    """Writes a run as Chrome Trace Event JSON to `path` when it finishes (again on reruns)."""

    def __init__(self, path: Path, pipeline: str) -> None:
        self.path = path
        self.pipeline = pipeline
        self.events: list[dict[str, Any]] = []
        self._rows: dict[str, int] = {}  # stage -> its thread id
        self._open: dict[tuple[str, int], dict[str, float]] = {}  # attempt -> queued/started
        self._started: float | None = None
        self._steps = _StepTimes()

    def _row(self, stage: str) -> int:
        if stage not in self._rows:
            self._rows[stage] = tid = len(self._rows) + 1
            self.events.append({"ph": "M", "name": "thread_name", "pid": 1, "tid": tid,
                                "args": {"name": stage}})  # fmt: skip
        return self._rows[stage]

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            if self._started is None:
                self._started = event.ts
                name = f"{self.pipeline} {event.run_id}"
                self.events.append({"ph": "M", "name": "process_name", "pid": 1, "tid": 0,
                                    "args": {"name": name}})  # fmt: skip
        elif isinstance(event, StageStatus):
            self._stage(event)
        elif isinstance(event, StepStatus) and (span := self._steps.span(event)):
            self._span(self._row(event.stage), event.name or f"step {event.step + 1}", "step",
                       *span, {"step": event.step + 1, "status": event.status})  # fmt: skip
        elif isinstance(event, RunFinished):
            start = self._started if self._started is not None else event.ts - event.duration
            self._span(0, f"run {event.run_id}", "run", start, event.ts,
                       {"status": event.status, "exit_code": event.exit_code})  # fmt: skip
            self.write()

    def _stage(self, event: StageStatus) -> None:
        key = (event.stage, event.attempt)
        times = self._open.setdefault(key, {})
        if event.status == QUEUED:
            times["queued"] = event.ts
        elif event.status == RUNNING:
            times["started"] = event.ts
            if "queued" in times:
                self._span(self._row(event.stage), f"{event.stage} queued", "queued",
                           times["queued"], event.ts, {"attempt": event.attempt})  # fmt: skip
        elif event.status in FINISHED:
            self._open.pop(key, None)
            if "started" not in times:
                return  # never ran: skipped, cached, cancelled while pending
            args = {"attempt": event.attempt, "status": event.status, "host": event.host,
                    "exit_code": event.exit_code, "reason": event.reason}  # fmt: skip
            self._span(self._row(event.stage), event.stage, event.status, times["started"],
                       event.ts, {k: v for k, v in args.items() if v is not None})  # fmt: skip

    def _span(
        self, tid: int, name: str, cat: str, start: float, end: float, args: dict[str, Any]
    ) -> None:
        self.events.append({"ph": "X", "name": name, "cat": cat, "pid": 1, "tid": tid,
                            "ts": _micros(start), "dur": max(0, _micros(end) - _micros(start)),
                            "args": args})  # fmt: skip

    def write(self) -> None:
        """Write the trace so far (atomically: a reader never sees half a file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.tmp")
        temp.write_text(json.dumps({"traceEvents": self.events, "displayTimeUnit": "ms"}))
        temp.replace(self.path)


class OtelTrace:
    """Exports a run's spans over OTLP/HTTP (see the module docstring)."""

    def __init__(self, pipeline: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.pipeline = pipeline
        self.provider = TracerProvider(resource=Resource.create({"service.name": "pipedeck"}))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("pipedeck")
        self._run: Span | None = None
        self._stages: dict[tuple[str, int], Span] = {}
        self._steps = _StepTimes()

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted) and self._run is None:
            self._run = self.tracer.start_span(
                f"RUN {self.pipeline}",
                start_time=int(event.ts * 1e9),
                attributes={
                    "cicd.pipeline.name": self.pipeline,
                    "cicd.pipeline.run.id": event.run_id,
                },
            )
        elif isinstance(event, StageStatus) and self._run is not None:
            self._stage(event)
        elif isinstance(event, StepStatus) and (span := self._steps.span(event)):
            self._step(event, *span)
        elif isinstance(event, RunFinished) and self._run is not None:
            self._finish(event)

    def _stage(self, event: StageStatus) -> None:
        from opentelemetry import trace

        key = (event.stage, event.attempt)
        if event.status == RUNNING and key not in self._stages:
            span = self.tracer.start_span(
                event.stage,
                context=trace.set_span_in_context(self._run),  # type: ignore[arg-type]
                start_time=int(event.ts * 1e9),
                attributes={
                    "cicd.pipeline.task.name": event.stage,
                    "cicd.pipeline.task.run.id": f"{event.run_id}/{event.stage}/{event.attempt}",
                    "pipedeck.attempt": event.attempt,
                    "pipedeck.host": event.host,
                },
            )
            self._stages[key] = span
        elif event.status in FINISHED and key in self._stages:
            span = self._stages.pop(key)
            span.set_attribute("cicd.pipeline.task.run.result", RESULTS.get(event.status, "error"))
            if event.status not in (SUCCEEDED, CACHED, SKIPPED):
                span.set_status(trace.Status(trace.StatusCode.ERROR, event.reason or event.status))
            span.end(end_time=int(event.ts * 1e9))

    def _step(self, event: StepStatus, start: float, end: float) -> None:
        """A finished step of a GitHub Actions job: a span under its attempt's."""
        from opentelemetry import trace

        job = self._stages.get((event.stage, event.attempt))
        if job is None:
            return
        span = self.tracer.start_span(
            event.name or f"step {event.step + 1}",
            context=trace.set_span_in_context(job),
            start_time=int(start * 1e9),
            attributes={"pipedeck.step": event.step + 1, "pipedeck.step.status": event.status},
        )
        if event.status == FAILED:
            span.set_status(trace.Status(trace.StatusCode.ERROR, event.reason or event.status))
        span.end(end_time=int(end * 1e9))

    def env(self, stage: str, attempt: int) -> dict[str, str]:
        """The `TRACEPARENT` of an attempt that is starting (its RUNNING event came first)."""
        span = self._stages.get((stage, attempt))
        return {"TRACEPARENT": _traceparent(span)} if span is not None else {}

    def _finish(self, event: RunFinished) -> None:
        from opentelemetry import trace

        run, self._run = self._run, None
        assert run is not None
        for span in self._stages.values():  # interrupted: end what is still open
            span.end(end_time=int(event.ts * 1e9))
        self._stages.clear()
        run.set_attribute("cicd.pipeline.result", RUN_RESULTS.get(event.status, "error"))
        if event.status != "succeeded":
            run.set_status(trace.Status(trace.StatusCode.ERROR, event.status))
        run.end(end_time=int(event.ts * 1e9))
        # export off the event loop; a non-daemon thread finishes before the process exits
        threading.Thread(target=self.provider.force_flush, args=(10_000,), name="otlp").start()


def _traceparent(span: Span) -> str:
    """The W3C `traceparent` of a span (version 00: only the sampled flag)."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags) & 1:02x}"


def subscribe_otel(run: Any, warn: Callable[[str], None] | None = None) -> None:
    """Export `run` over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set. Without the
    OpenTelemetry SDK installed, says so once and goes on."""
    if not os.environ.get(OTLP_ENDPOINT):
        return
    try:
        tracer = OtelTrace(run.pipeline.name)
    except ImportError:
        if not _warned:
            _warned.append(OTLP_ENDPOINT)
            say = warn or (lambda text: print(text, file=sys.stderr))
            say(f"pipedeck: {OTLP_ENDPOINT} is set but the OpenTelemetry SDK is not "
                "installed; install pipedeck[otel] to export traces")  # fmt: skip
        return
    run.subscribe(tracer)
    run.env_hooks.append(tracer.env)
