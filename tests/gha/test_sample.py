"""The GitHub Actions sample runs end to end here, headless, through the real CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.conftest import SAMPLES, pipedeck_bin


def test_sample_workflow_runs_end_to_end(tmp_path: Path) -> None:
    shutil.copytree(SAMPLES / "shop", tmp_path / "shop")
    shutil.copytree(SAMPLES / "github", tmp_path / "github")
    workflow = tmp_path / "github" / ".github" / "workflows" / "ci.yml"
    done = subprocess.run(
        [pipedeck_bin(), "run", str(workflow), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    finals = {e["stage"]: e["status"] for e in events if e["type"] == "stage_status"}
    assert finals == {
        "lint": "succeeded",
        "test[os=ubuntu-latest,suite=unit]": "succeeded",
        "test[os=ubuntu-latest,suite=doctest]": "succeeded",
        "build": "succeeded",
        "check": "succeeded",
    }
    steps = [e for e in events if e["type"] == "step_status" and e["stage"] == "lint"]
    assert [(s["step"], s["name"], s["status"]) for s in steps if s["status"] != "running"] == [
        (0, "Run actions/checkout@v4", "succeeded"),
        (1, "Run actions/setup-python@v5", "succeeded"),
        (2, "Compile", "succeeded"),
        (3, "Lint", "succeeded"),
    ]
    assert all(isinstance(s["duration"], float) for s in steps if s["status"] == "succeeded")
    assert list((tmp_path / "github" / "downloaded").glob("shop-*.whl"))


def test_show_prints_the_step_summary(tmp_path: Path) -> None:
    shutil.copytree(SAMPLES / "shop", tmp_path / "shop")
    shutil.copytree(SAMPLES / "github", tmp_path / "github")
    repo = tmp_path / "github"
    done = subprocess.run(
        [pipedeck_bin(), "run", ".github/workflows/ci.yml"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    shown = subprocess.run([pipedeck_bin(), "show"], cwd=repo, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "── summary of build ──\n### Built shop-0.1.0-py3-none-any.whl" in shown.stdout
    elsewhere = [pipedeck_bin(), "show", "-f", "github/.github/workflows/ci.yml"]  # its repo's runs
    shown_f = subprocess.run(elsewhere, cwd=tmp_path, capture_output=True, text=True)
    assert shown_f.returncode == 0, shown_f.stderr
    assert shown_f.stdout == shown.stdout
