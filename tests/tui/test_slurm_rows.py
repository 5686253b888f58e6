"""A Slurm stage's job id and node (SPEC §12) in its tree row and in the log pane's title."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.events import QUEUED, RUNNING, SUCCEEDED, Event, RunStarted, StageStatus
from engine.loader import load
from engine.logs import LogStore
from tests.tui.conftest import label, log_of, status, until
from tests.tui.replay import RUN_ID, T0, ReplayRun
from tests.tui.replay import status as recorded
from tui.app import PipedeckApp

PIPELINE = """\
version: 1
name: ml
hosts:
  cluster:
    executor: slurm
stages:
  prepare:
    run: echo prepare
  train:
    needs: [prepare]
    host: cluster
    run: python train.py
"""


def replay(root: Path, *events: Event) -> PipedeckApp:
    """An app over a recorded run of `PIPELINE`: `prepare` succeeded, then `events`."""
    path = root / "pipedeck.yaml"
    path.write_text(PIPELINE)
    pipeline = load(path)
    run = ReplayRun(
        pipeline,
        LogStore(pipeline.state_dir / "logs"),
        [
            RunStarted(RUN_ID, "ml", tuple(pipeline.stages), ts=T0),
            recorded("prepare", RUNNING, 0.1),
            recorded("prepare", SUCCEEDED, 1.0, exit_code=0, duration=0.9),
            *events,
        ],
    )
    return PipedeckApp(run, clock=lambda: T0 + 9.0)  # type: ignore[arg-type]


def train(state: str, at: float, **extra: object) -> StageStatus:
    """A recorded `stage_status` of the Slurm stage `train` at T0 + `at`."""
    return StageStatus(RUN_ID, "train", state, 1, "cluster", ts=T0 + at, **extra)  # type: ignore[arg-type]


def title(app: PipedeckApp) -> str:
    return str(log_of(app).border_title)


JOB = {"job_id": "1234", "node": "node1"}
CASES = [  # the Slurm stage's events, the terminal's width, how its row ends, the log title
    pytest.param(
        [train(QUEUED, 1.1, reason="Resources", job_id="1234"), train(RUNNING, 2.0, **JOB)],
        120,
        "7.0s #1234 @node1",
        "train · running · cluster #1234 @node1",
        id="running",
    ),
    pytest.param(
        [train(RUNNING, 2.0, **JOB)],
        80,
        "7.0s #1234",  # an 80-column tree drops the node; the title still has it
        "train · running · cluster #1234 @node1",
        id="running-80-columns",
    ),
    pytest.param(
        [train(QUEUED, 1.1, reason="Priority", job_id="77")],
        120,
        " #77",
        "train · queued · cluster #77",
        id="queued-no-node-yet",
    ),
    pytest.param(
        [train(RUNNING, 2.0, **JOB), train(SUCCEEDED, 5.0, exit_code=0, duration=3.0, **JOB)],
        120,
        "3.0s #1234 @node1",
        "train · succeeded · cluster #1234 @node1",
        id="finished-keeps-them",
    ),
    pytest.param(
        [train(RUNNING, 2.0)], 120, "7.0s @cluster", "train · running", id="no-job-only-the-host"
    ),
]


@pytest.mark.parametrize(("events", "width", "row", "log_title"), CASES)
async def test_the_row_and_log_title_show_the_job_and_node(
    tmp_path: Path, events: list[StageStatus], width: int, row: str, log_title: str
):
    app = replay(tmp_path, *events)
    async with app.run_test(size=(width, 30)) as pilot:
        await until(pilot, lambda: status(app, "train") == events[-1].status, "the replay")
        await pilot.press("j")  # the cursor onto `train`
        await until(pilot, lambda: title(app) == log_title, f"the log title {log_title!r}")
        assert label(app, "train").endswith(row), label(app, "train")


async def test_a_narrow_tree_drops_the_job_before_the_duration(tmp_path: Path):
    app = replay(tmp_path, train(RUNNING, 2.0, job_id="123456789", node="gpu-node-017"))
    async with app.run_test(size=(40, 24)) as pilot:
        await until(pilot, lambda: status(app, "train") == RUNNING, "the replay")
        await until(pilot, lambda: "7.0s" in label(app, "train"), "the row")
        assert label(app, "train").endswith("7.0s")
