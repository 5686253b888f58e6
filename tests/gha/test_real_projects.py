"""Patterns met running the CI of httpx, attrs, black, fastapi and pip with pipedeck (a second
round, after tests/gha/test_real_patterns.py), each reproduced by a small workflow run for real."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.gha.conftest import FakeTool
from tests.gha.test_runner import run, workflow


async def test_git_config_global_stays_in_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip's packaging job runs `git config --global user.name "pip"`: on GitHub that changes a
    throwaway runner's home; here it changed the user's own ~/.gitconfig (their commits' author
    from then on). The job's global config is its own, the user's included (read only)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = Me Myself\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    path = workflow(
        tmp_path / "repo",
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - run: echo "before=$(git config user.name)"
              - run: |
                  git config --global user.name "pip"
                  git config --global user.email "pypa-dev@googlegroups.com"
              - run: echo "after=$(git config user.name)"
          b:
            needs: a
            runs-on: ubuntu-latest
            steps:
              - run: echo "next job=$(git config user.name)"
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 0, recorder.lines("a")
    assert "before=Me Myself" in recorder.lines("a")
    assert "after=pip" in recorder.lines("a")
    assert "next job=Me Myself" in recorder.lines("b")  # a fresh runner for each job
    assert (home / ".gitconfig").read_text() == "[user]\n\tname = Me Myself\n"


async def test_setup_cached_uv_speaks_as_itself(tmp_path: Path, fake_tool: FakeTool) -> None:
    """attrs sets uv up with hynek/setup-cached-uv: its lines named astral-sh/setup-uv, an
    action the workflow does not use (and, with no uv here, told to `pip install --user`,
    which a Debian or Ubuntu Python refuses)."""
    fake_tool("uv", 'case "$1" in --version) echo "uv 0.9.9";; *) echo "uv ran $*";; esac\n')
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - uses: hynek/setup-cached-uv@v2
                with: {version: "0.10.0"}
              - run: uv sync
        """,
    )
    recorder, code, _ = await run(path)
    lines = recorder.lines("a")
    assert code == 0, lines
    assert "##[warning]hynek/setup-cached-uv: version 0.10.0 wanted, uv 0.9.9 used" in lines
    assert any(x.startswith("hynek/setup-cached-uv: using uv 0.9.9 at ") for x in lines)
    assert not any("astral-sh" in x for x in lines)
