"""Traces: `pipedeck run --trace FILE` (Chrome Trace Event JSON) and OTLP/HTTP export received
by a real HTTP server on loopback, decoded with the official protobuf definitions."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import pipedeck_bin
from tests.otlp import attrs, collecting, spans, traceparent

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


@pytest.fixture
def collector() -> Iterator[str]:
    with collecting() as endpoint:
        yield endpoint


def test_otlp_export_follows_the_cicd_conventions_and_stages_get_traceparent(
    tmp_path: Path, collector: str
) -> None:
    (tmp_path / "pipedeck.yaml").write_text(PIPELINE)
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": collector}
    env.pop("TRACEPARENT", None)
    done = subprocess.run([pipedeck_bin(), "run"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1, done.stderr
    by_name = {span.name: span for span in spans()}  # the exporter flushed before pipedeck exited
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
    assert f"parent={traceparent(build)}" in logs.stdout


WORKFLOW = """\
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - name: greet
        run: echo "parent=$TRACEPARENT"
      - name: break
        run: exit 3
"""


def run_workflow(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
    (tmp_path / "ci.yml").write_text(WORKFLOW)
    done = subprocess.run([pipedeck_bin(), "run", "ci.yml", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr


def test_trace_file_nests_a_jobs_steps_in_its_span(tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    run_workflow(tmp_path, "--trace", str(trace))
    events = json.loads(trace.read_text())["traceEvents"]
    spans = {e["name"]: e for e in events if e["ph"] == "X"}
    job, greet, broken = spans["build"], spans["greet"], spans["break"]
    assert greet["cat"] == broken["cat"] == "step" and greet["tid"] == broken["tid"] == job["tid"]
    assert broken["args"] == {"step": 2, "status": "failed"}
    assert job["ts"] <= greet["ts"] and greet["ts"] + greet["dur"] <= broken["ts"] + 1
    assert broken["ts"] + broken["dur"] <= job["ts"] + job["dur"]


def test_otlp_export_has_a_span_per_step_under_its_job(tmp_path: Path, collector: str) -> None:
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": collector}
    env.pop("TRACEPARENT", None)
    run_workflow(tmp_path, env=env)
    by_name = {span.name: span for span in spans()}
    job, greet, broken = by_name["build"], by_name["greet"], by_name["break"]
    for step, number in ((greet, 1), (broken, 2)):
        assert step.trace_id == job.trace_id and step.parent_span_id == job.span_id
        assert attrs(step)["pipedeck.step"] == number
        assert job.start_time_unix_nano <= step.start_time_unix_nano
        assert step.end_time_unix_nano <= job.end_time_unix_nano
    assert attrs(broken)["pipedeck.step.status"] == "failed" and broken.status.code == 2  # ERROR
    assert greet.end_time_unix_nano <= broken.start_time_unix_nano
    logs = subprocess.run([pipedeck_bin(), "logs", "-f", "ci.yml", "build"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert f"parent={traceparent(job)}" in logs.stdout  # the job's steps join the trace
