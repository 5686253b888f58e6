"""Fixtures of the workflow tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

FakeTool = Callable[[str, str], Path]


@pytest.fixture
def fake_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTool:
    """`fake_tool(name, script)`: an executable `name` running the shell `script`, first on
    PATH (for this test and the job runners it starts); returns its path."""
    folder = tmp_path / "fake-bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    def make(name: str, script: str) -> Path:
        tool = folder / name
        tool.write_text("#!/bin/sh\n" + script)
        tool.chmod(0o755)
        return tool

    return make
