"""A local attempt's CPU time is exact at its end, short-lived children included."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine import resources
from engine.spec import Stage
from tests.measured import run_measured
from tests.ssh.conftest import make_pipeline

# 40 children of ~20-50 ms each: nearly all start and end between two samples (1 s apart).
# `times` prints the shell's own CPU time, then its waited children's: the truth to compare to.
SHORT_CHILDREN = """
for n in $(seq 40); do sh -c 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done'; done
times > times.txt
"""


def _seconds(text: str) -> float:
    """`times` output (`0m0.123s 0m0.004s` per line): the sum of every figure."""
    total = 0.0
    for figure in text.split():
        minutes, seconds = figure.rstrip("s").split("m")
        total += int(minutes) * 60 + float(seconds)
    return total


async def test_cpu_time_counts_children_that_ran_between_two_samples(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    stage = Stage(id="burst", name="burst", run=SHORT_CHILDREN)
    code, attempts = await run_measured(make_pipeline(workspace, {}, [stage]))
    assert code == 0
    truth = _seconds((workspace / "times.txt").read_text())
    assert truth > 0.3, "the children must burn enough CPU to tell"
    (row,) = attempts
    assert row.cpu_seconds is not None
    assert abs(row.cpu_seconds - truth) < 0.05 + truth * 0.02, (row.cpu_seconds, truth)


async def test_an_attempt_shorter_than_the_first_sample_starts_no_sampling_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources, "FIRST_SAMPLE", 30.0)  # far past the attempt's end
    workspace = tmp_path / "ws"
    workspace.mkdir()
    before = set(threading.enumerate())  # an earlier test's sampler may still be winding down
    stage = Stage(id="t", name="t", run="true")
    code, attempts = await run_measured(make_pipeline(workspace, {}, [stage]))
    assert code == 0 and attempts[0].cpu_seconds is not None  # measured by its rusage
    started = [t.name for t in threading.enumerate() if t not in before]
    assert "pipedeck-resources" not in started
