"""Regenerate the TUI screenshots in this folder (SVG, and PNG when rsvg-convert exists).

    .venv/bin/python docs/screenshots/generate.py

The screen is driven by the snapshot tests' recorded run (tests/tui/replay.py) with a fixed
clock, so the pictures change only when the screen does.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from tests.tui.replay import T0, job_scenario, scenario  # noqa: E402
from tui.app import PipedeckApp  # noqa: E402
from tui.widgets.stage_tree import StageTree  # noqa: E402

SHOTS = [  # (file stem, scenario, clock offset, stage to select, search, theme, size, view key)
    ("run-dark", "mid_run", 9.0, "test[python=3.12]", "", "textual-dark", (160, 48), ""),
    ("run-light", "mid_run", 9.0, "test[python=3.12]", "", "textual-light", (160, 48), ""),
    ("run-80x24", "failed", 13.0, "test[python=3.12]", "", "textual-dark", (80, 24), ""),
    ("search-80x24-light", "failed", 13.0, "lint", "error", "textual-light", (80, 24), ""),
    ("manual-80x24", "manual_waiting", 19.6, "deploy", "", "textual-dark", (80, 24), ""),
    ("timeline-dark", "mid_run", 9.0, "lint", "", "textual-dark", (160, 48), "T"),
    ("timeline-80x24-light", "mid_run", 9.0, "lint", "", "textual-light", (80, 24), "T"),
    ("dag-dark", "failed", 13.0, "test[python=3.12]", "", "textual-dark", (160, 48), "D"),
    ("dag-80x24-light", "failed", 13.0, "lint", "", "textual-light", (80, 24), "D"),
    ("merged-dark", "mid_run", 9.0, "lint", "", "textual-dark", (160, 48), "m"),
    ("merged-80x24-light", "mid_run", 9.0, "lint", "", "textual-light", (80, 24), "m"),
    ("steps-80x24", "job", 9.0, "build", "", "textual-dark", (80, 24), ""),  # a workflow's job
]


async def shoot(
    stem: str,
    name: str,
    at: float,
    stage: str,
    search: str,
    theme: str,
    size: tuple[int, int],
    key: str,
) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        run = job_scenario(Path(tmp)) if name == "job" else scenario(Path(tmp), name)
        app = PipedeckApp(run, clock=lambda: T0 + at)  # type: ignore[arg-type]
        app.theme = theme
        async with app.run_test(size=size) as pilot:
            await pilot.pause(0.3)
            screen = app.run_screen
            screen.query_one(StageTree).select_stage(stage)
            await pilot.pause(0.2)
            if search:
                await pilot.press("slash", *search, "enter")
                await pilot.pause(0.5)
                screen.query_one(StageTree).focus()
            screen.sync()
            await pilot.pause(0.2)
            if key:  # a view: T, D or m
                await pilot.press(key)
                await pilot.pause(0.4)
            return Path(app.save_screenshot(f"{stem}.svg", str(HERE)))


def to_png(svg: Path) -> None:
    """rsvg-convert drops leading non-breaking spaces unless told to keep whitespace."""
    fixed = svg.with_suffix(".tmp.svg")
    fixed.write_text(svg.read_text().replace("<svg ", '<svg xml:space="preserve" ', 1))
    subprocess.run(["rsvg-convert", str(fixed), "-o", str(svg.with_suffix(".png"))], check=True)
    fixed.unlink()


def main() -> None:
    for shot in SHOTS:
        svg = asyncio.run(shoot(*shot))
        if shutil.which("rsvg-convert"):
            to_png(svg)
        print(svg.relative_to(HERE.parent.parent))


if __name__ == "__main__":
    main()
