"""A Slurm stage's job id and node (SPEC §12) in its tree row and in the log pane's title."""

from __future__ import annotations

from pathlib import Path

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


async def test_a_running_job_shows_its_id_and_node(tmp_path: Path):
    app = replay(
        tmp_path,
        train(QUEUED, 1.1, reason="Resources", job_id="1234"),
        train(RUNNING, 2.0, job_id="1234", node="node1"),
    )
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: status(app, "train") == RUNNING, "the replay")
        await pilot.press("j")  # the cursor onto `train`
        await until(pilot, lambda: "node1" in title(app), "the log title")
        assert title(app) == "train · running · cluster #1234 @node1"
        row = label(app, "train")
        assert row.endswith("7.0s #1234 @node1"), row


async def test_an_80_column_tree_keeps_the_job_id_and_drops_the_node(tmp_path: Path):
    app = replay(tmp_path, train(RUNNING, 2.0, job_id="1234", node="node1"))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: status(app, "train") == RUNNING, "the replay")
        await pilot.press("j")
        await until(pilot, lambda: "node1" in title(app), "the log title")
        assert label(app, "train").endswith("7.0s #1234")
        assert title(app) == "train · running · cluster #1234 @node1"


async def test_a_queued_job_has_no_node_yet(tmp_path: Path):
    app = replay(tmp_path, train(QUEUED, 1.1, reason="Priority", job_id="77"))
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: status(app, "train") == QUEUED, "the replay")
        await pilot.press("j")
        await until(pilot, lambda: "#77" in title(app), "the log title")
        assert label(app, "train").endswith(" #77")
        assert title(app) == "train · queued · cluster #77"


async def test_a_finished_job_keeps_its_id_and_node(tmp_path: Path):
    app = replay(
        tmp_path,
        train(RUNNING, 2.0, job_id="1234", node="node1"),
        train(SUCCEEDED, 5.0, exit_code=0, duration=3.0, job_id="1234", node="node1"),
    )
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: status(app, "train") == SUCCEEDED, "the replay")
        await pilot.press("j")
        await until(pilot, lambda: "#1234" in title(app), "the log title")
        assert label(app, "train").endswith("3.0s #1234 @node1")
        assert title(app) == "train · succeeded · cluster #1234 @node1"


async def test_a_narrow_tree_drops_the_job_before_the_duration(tmp_path: Path):
    app = replay(tmp_path, train(RUNNING, 2.0, job_id="123456789", node="gpu-node-017"))
    async with app.run_test(size=(40, 24)) as pilot:
        await until(pilot, lambda: status(app, "train") == RUNNING, "the replay")
        await until(pilot, lambda: "7.0s" in label(app, "train"), "the row")
        assert label(app, "train").endswith("7.0s")


async def test_a_stage_without_a_job_shows_only_its_host(tmp_path: Path):
    app = replay(tmp_path, train(RUNNING, 2.0))
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: status(app, "train") == RUNNING, "the replay")
        await pilot.press("j")
        await until(pilot, lambda: "train" in title(app), "the log title")
        assert label(app, "train").endswith("7.0s @cluster")
        assert title(app) == "train · running"
