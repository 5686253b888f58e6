"""`pipedeck ui` on an invalid file: the loader's errors, exit 2, and no screen at all."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import pipedeck_bin


def test_invalid_pipeline_prints_errors_and_exits_2_before_any_screen(tmp_path: Path) -> None:
    path = tmp_path / "pipedeck.yaml"
    path.write_text("version: 1\nstages:\n  a:\n    run: echo a\n    needs: [nope]\n")
    out = subprocess.run(
        [pipedeck_bin(), "ui", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 2
    assert f"{path}:5:" in out.stderr and "nope" in out.stderr
    assert "\x1b[" not in out.stdout + out.stderr  # no screen was drawn
    assert "Traceback" not in out.stderr
