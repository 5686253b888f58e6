"""Several pipeline files in one directory share `.pipedeck/`: every history query is of one
pipeline file (`engine.history.pipeline_file`), and estimates count only whole attempts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from engine.events import RunFinished, RunStarted, StageStatus
from engine.history import History, pipeline_file
from tests.conftest import pipedeck_bin
from tui.widgets.estimates import stage_medians


def pipedeck(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [pipedeck_bin(), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


SHOP = """\
version: 1
name: shop-ci
stages:
  lint: {run: echo shop lint}
  build: {needs: [lint], run: echo shop build}
"""
# the same name on purpose: names may collide, files cannot
OTHER = """\
version: 1
name: shop-ci
stages:
  build: {run: echo other build; exit 3}
"""


def test_history_logs_and_show_are_of_the_named_pipeline_file(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text(SHOP)
    (tmp_path / "other.yaml").write_text(OTHER)
    assert pipedeck("run", "shop.yaml", cwd=tmp_path).returncode == 0
    assert pipedeck("run", "other.yaml", cwd=tmp_path).returncode == 1

    listed = json.loads(pipedeck("history", "-f", "shop.yaml", "--json", cwd=tmp_path).stdout)
    assert [(r["status"], r["file"]) for r in listed] == [("succeeded", "shop.yaml")]
    other = json.loads(pipedeck("history", "-f", "other.yaml", "--json", cwd=tmp_path).stdout)
    assert [(r["status"], r["file"]) for r in other] == [("failed", "other.yaml")]

    logs = pipedeck("logs", "-f", "shop.yaml", "build", cwd=tmp_path)
    assert logs.stdout == "shop build\n"  # not other.yaml's later build
    missing = pipedeck("logs", "-f", "other.yaml", "lint", cwd=tmp_path)
    assert missing.returncode == 2 and "other.yaml" in missing.stderr and not missing.stdout

    shown = pipedeck("show", "-f", "shop.yaml", "--json", cwd=tmp_path)
    assert json.loads(shown.stdout)["run_id"] == listed[0]["run_id"]
    by_id = pipedeck("show", "-f", "shop.yaml", other[0]["run_id"], cwd=tmp_path)
    assert by_id.returncode == 0 and "failed" in by_id.stdout  # asked by id: any pipeline's


def record(history: History, run_id: str, file: str, attempts: list[tuple[str, float]]) -> None:
    """A run of stage `build` whose attempts ended as given after so many seconds."""
    rec = history.recorder(run_id, file=file)
    rec(RunStarted(run_id, "p", ("build",), ts=0.0))
    for n, (status, seconds) in enumerate(attempts, 1):
        rec(StageStatus(run_id, "build", "running", n, "local", ts=1000.0 * n))
        rec(StageStatus(run_id, "build", status, n, "local", duration=seconds,
                        ts=1000.0 * n + seconds))  # fmt: skip
    rec(RunFinished(run_id, attempts[-1][0], 0, 1.0, ts=5000.0))


def test_estimates_are_medians_of_whole_attempts_of_this_pipeline(tmp_path: Path) -> None:
    path, state = tmp_path / "ci.yaml", tmp_path / ".pipedeck"
    path.write_text(SHOP)
    state.mkdir()
    history = History(state / "history.db")
    file = pipeline_file(path, state)
    record(history, "r1", file, [("succeeded", 300.0)])
    record(history, "r2", file, [("failed", 280.0)])
    cut = [("cancelled", 2.0), ("timed_out", 5.0), ("lost", 3.0)]
    record(history, "r3", file, cut)
    record(history, "r4", "other.yaml", [("succeeded", 1.0), ("succeeded", 1.5)])
    history.close()
    assert file == "ci.yaml"
    medians = stage_medians(path, state, ["build", "lint"])
    assert medians == {"build": 290.0}  # not the cut attempts, not other.yaml's
    history = History(state / "history.db")
    assert history.durations("build", file="other.yaml") == [1.0, 1.5]
    history.close()


def test_without_pipedeck_yaml_history_is_of_the_one_workflow(tmp_path: Path) -> None:
    """`pipedeck run` takes the only workflow when there is no pipedeck.yaml: so do `history`
    and `logs`."""
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "ci.yml").write_text(
        "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo hi\n"
    )
    assert pipedeck("run", cwd=tmp_path).returncode == 0
    listed = json.loads(pipedeck("history", "--json", cwd=tmp_path).stdout)
    assert [r["file"] for r in listed] == [".github/workflows/ci.yml"]
    assert "hi" in pipedeck("logs", "build", cwd=tmp_path).stdout
