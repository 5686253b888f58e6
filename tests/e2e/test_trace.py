"""Traces: `pipedeck run --trace FILE` (Chrome Trace Event JSON) and OTLP/HTTP export received
by a real HTTP server on loopback, decoded with the official protobuf definitions."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import pipedeck_bin

PIPELINE = """\
version: 1
name: traced
stages:
  build:
    run: echo "parent=$TRACEPARENT"
  test:
    needs: [build]
    run: exit 3
  docs:
    needs: [build]
    run: echo docs
"""


def test_trace_file_is_chrome_trace_events(tmp_path: Path) -> None:
    (tmp_path / "pipedeck.yaml").write_text(PIPELINE)
    trace = tmp_path / "out" / "trace.json"
    done = subprocess.run([pipedeck_bin(), "run", "--trace", str(trace)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1, done.stderr
    events = json.loads(trace.read_text())["traceEvents"]
    spans = {e["name"]: e for e in events if e["ph"] == "X"}
    assert {"build", "test", "docs"} <= set(spans)
    run = next(e for n, e in spans.items() if n.startswith("run "))
    assert run["args"]["status"] == "failed" and run["tid"] == 0
    assert spans["test"]["cat"] == "failed" and spans["test"]["args"]["exit_code"] == 3
    assert spans["build"]["ts"] + spans["build"]["dur"] <= spans["test"]["ts"]  # in order
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {"build", "test", "docs"}
    assert len({spans[s]["tid"] for s in ("build", "test", "docs")}) == 3  # one row per stage


def test_a_directory_as_trace_file_is_refused_before_the_run(tmp_path: Path) -> None:
    (tmp_path / "pipedeck.yaml").write_text(PIPELINE)
    done = subprocess.run([pipedeck_bin(), "run", "--trace", str(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "--trace" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / ".pipedeck" / "logs").exists()


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace endpoint: decodes each export and keeps it."""

    received: ClassVar[list[ExportTraceServiceRequest]] = []
    arrived = threading.Condition()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with Collector.arrived:
            Collector.received.append(request)
            Collector.arrived.notify_all()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    Collector.received = []
    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_otlp_export_follows_the_cicd_conventions_and_stages_get_traceparent(
    tmp_path: Path, collector: str
) -> None:
    (tmp_path / "pipedeck.yaml").write_text(PIPELINE)
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": collector}
    env.pop("TRACEPARENT", None)
    done = subprocess.run([pipedeck_bin(), "run"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1, done.stderr
    with Collector.arrived:  # the exporter flushed before pipedeck exited
        spans = [
            span
            for request in Collector.received
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    def attrs(span) -> dict[str, object]:  # type: ignore[no-untyped-def]
        return {a.key: a.value.string_value or a.value.int_value for a in span.attributes}

    by_name = {span.name: span for span in spans}
    run = by_name["RUN traced"]
    assert attrs(run)["cicd.pipeline.name"] == "traced"
    assert attrs(run)["cicd.pipeline.result"] == "failure"
    run_id = attrs(run)["cicd.pipeline.run.id"]
    for stage, result in (("build", "success"), ("test", "failure"), ("docs", "success")):
        span = by_name[stage]
        assert span.trace_id == run.trace_id and span.parent_span_id == run.span_id
        assert attrs(span)["cicd.pipeline.task.name"] == stage
        assert attrs(span)["cicd.pipeline.task.run.id"] == f"{run_id}/{stage}/1"
        assert attrs(span)["cicd.pipeline.task.run.result"] == result
        assert run.start_time_unix_nano <= span.start_time_unix_nano
        assert span.end_time_unix_nano <= run.end_time_unix_nano
    # the stage saw TRACEPARENT naming its own span in the run's trace
    logs = subprocess.run([pipedeck_bin(), "logs", "build"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    build = by_name["build"]
    assert f"parent=00-{build.trace_id.hex()}-{build.span_id.hex()}-01" in logs.stdout
