"""Events: stamped with the time they are made, their JSON form (SPEC §7)."""

from __future__ import annotations

import json
import time

from engine.events import LogLines, RunStarted, StageStatus, StepStatus, to_json_lines


def test_an_event_is_stamped_when_made_unless_a_time_is_given() -> None:
    before = time.time()
    made = StageStatus("run", "build", "running", 1, "local")
    assert before <= made.ts <= time.time()
    assert StageStatus("run", "build", "running", 1, "local", ts=12.5).ts == 12.5
    assert RunStarted("run", "p", ("a",), 3.0).ts == 3.0  # given by position
    assert StepStatus("run", "job", 1, 0, "step", "running").ts >= before
    assert made._replace(status="succeeded").ts == made.ts


def test_json_lines_keep_the_field_order_and_drop_unset_fields() -> None:
    event = StageStatus("run", "build", "failed", 2, "local", exit_code=None, reason="r", ts=1.0)
    (line,) = to_json_lines(event)
    assert list(json.loads(line)) == [
        "run_id", "stage", "status", "attempt", "host", "reason", "ts", "type"
    ]  # fmt: skip
    log = LogLines("run", "build", 1, "stdout", ("a", "b"), ts=2.0)
    assert [json.loads(x)["text"] for x in to_json_lines(log)] == ["a", "b"]
