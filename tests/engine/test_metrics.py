"""Stage metrics: flattened numbers recorded per run and compared across runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from engine import metrics
from engine.history import History
from engine.mask import Masker
from engine.spec import Stage
from tests.conftest import pipedeck_bin

TRAIN = Stage(id="train", name="train", run="python train.py", metrics="out/metrics.json")


def test_nested_numbers_are_flattened_with_dots_and_the_rest_ignored(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(
        {"loss": 0.25, "eval": {"acc": 0.9, "f1": {"macro": 1}}, "ok": True, "name": "x",
         "list": [1, 2]}
    ))  # fmt: skip
    assert metrics.read(path) == {"loss": 0.25, "eval.acc": 0.9, "eval.f1.macro": 1.0}


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "No such file"), ("{oops", "not valid JSON"), ("[1, 2]", "expected a JSON object")],
)
def test_unusable_files_give_a_clear_error(tmp_path: Path, content: str | None, message: str):
    path = tmp_path / "m.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(metrics.MetricsError, match=message):
        metrics.read(path)


def test_runs_are_compared_side_by_side_with_deltas(tmp_path: Path) -> None:
    history = History(tmp_path / "history.db")
    (tmp_path / "out").mkdir()
    runs = [{"loss": 0.5, "acc": 0.7}, {"loss": 0.4, "acc": 0.8}, {"loss": 0.3, "extra": 1}]
    for i, values in enumerate(runs):
        (tmp_path / "out/metrics.json").write_text(json.dumps(values))
        assert metrics.record(history, tmp_path, f"r{i}", TRAIN) == values
    table = metrics.compare(history, "train", runs=2)
    assert table.run_ids == ("r1", "r2")
    rows = {row.name: row for row in table.rows}
    assert rows["loss"].values == (0.4, 0.3)
    assert rows["loss"].delta == pytest.approx(-0.1)
    assert rows["acc"].values == (0.8, None) and rows["acc"].delta is None
    assert rows["extra"].values == (None, 1.0)
    assert metrics.compare(history, "train").run_ids == ("r0", "r1", "r2")
    assert metrics.compare(history, "other").rows == ()


def test_a_missing_metrics_file_records_nothing(tmp_path: Path) -> None:
    history = History(tmp_path / "history.db")
    assert metrics.record(history, tmp_path, "r1", TRAIN) == {}
    assert history.metric_stages() == []


@pytest.mark.parametrize(("content", "problem"), [(None, "No such file"), ("{oops", "not valid")])
def test_a_missing_or_invalid_metrics_file_is_reported(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "pipedeck.yaml"
    path.write_text("version: 1\nstages:\n  train:\n    run: 'true'\n    metrics: m.json\n")
    if content is not None:
        (tmp_path / "m.json").write_text(content)
    done = subprocess.run([pipedeck_bin(), "run", str(path)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0
    (line,) = [x for x in done.stderr.splitlines() if "metrics" in x]
    assert "stage train" in line and str(tmp_path / "m.json") in line and problem in line


def test_secret_values_in_metric_names_are_masked(tmp_path: Path) -> None:
    history = History(tmp_path / "history.db")
    (tmp_path / "out").mkdir()
    (tmp_path / "out/metrics.json").write_text(json.dumps({"acc-hunter2": 1, "x": {"hunter2": 2}}))
    masker = Masker(["hunter2"])
    assert metrics.record(history, tmp_path, "r1", TRAIN, masker=masker) == {
        "acc-***": 1.0, "x.***": 2.0}  # fmt: skip
    assert [r.name for r in metrics.compare(history, "train").rows] == ["acc-***", "x.***"]
