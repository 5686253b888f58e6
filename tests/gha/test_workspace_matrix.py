"""A job whose matrix comes from another job's output is one stage running its instances one
after another in one workspace copy: each instance starts from the copy synced again, as each
instance on GitHub has a fresh runner and checkout (attrs' `tests` job runs `rm -rf src`)."""

from __future__ import annotations

from pathlib import Path

from engine.gha.loader import Options
from tests.gha.test_runner import run, workflow
from tests.gha.test_workspace import commit

JOBS = """
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    outputs: {m: "${{ steps.p.outputs.m }}"}
    steps:
      - id: p
        run: echo 'm={"n":[1,2]}' >> "$GITHUB_OUTPUT"
  b:
    needs: a
    runs-on: ubuntu-latest
    strategy:
      fail-fast: false
      matrix: ${{ fromJSON(needs.a.outputs.m) }}
    steps:
      - run: |
          test -e src/app.py
          echo "instance ${{ matrix.n }} found $(cat src/app.py)"
          test ! -e dist/left && echo "instance ${{ matrix.n }}: no dist left"
          rm -rf src
          mkdir -p dist .venv && touch dist/left .venv/warm-${{ matrix.n }}
          echo "venv: $(ls .venv | tr '\\n' ' ')"
"""


async def test_each_instance_of_a_matrix_from_needs_starts_from_a_synced_copy(
    tmp_path: Path,
) -> None:
    path = workflow(tmp_path, JOBS)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("committed\n")
    (tmp_path / ".gitignore").write_text(".venv/\ndist/\n")
    commit(tmp_path)
    (tmp_path / "src" / "app.py").write_text("uncommitted\n")
    recorder, code, _ = await run(path, Options(workspace="copy"))
    lines = recorder.lines("b")
    assert code == 0, lines
    assert "matrix from needs: 2 instance(s)" in lines
    # the second instance finds the tracked file the first deleted, with the user's change,
    # and none of the first one's build output, but its venv (kept warm, as between jobs)
    for n in (1, 2):
        assert f"instance {n} found uncommitted" in lines, lines
        assert f"instance {n}: no dist left" in lines, lines
    assert "venv: warm-1 warm-2 " in lines, lines
    assert (tmp_path / "src" / "app.py").read_text() == "uncommitted\n"  # the user's tree
    assert not (tmp_path / ".venv").exists() and not (tmp_path / "dist").exists()
