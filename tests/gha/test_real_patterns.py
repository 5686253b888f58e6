"""Patterns met running real projects' CI (requests, attrs, httpx, flask) with pipedeck,
each reproduced by a small workflow run for real."""

from __future__ import annotations

import subprocess
from pathlib import Path

from engine.gha.actions import satisfies
from tests.conftest import pipedeck_bin
from tests.gha.test_runner import run, steps, workflow


def test_version_specs_with_suffixes_match_only_what_they_name() -> None:
    assert satisfies((3, 15, 0), "3.15-dev")
    assert not satisfies((3, 13, 0), "3.15-dev")  # was read as `3`
    assert not satisfies((3, 14, 0), "3.14t")  # a free-threaded build is not this one
    assert not satisfies((3, 11, 7), "3.11banana")
    assert satisfies((3, 11, 7), "3.x") and satisfies((3, 11, 7), "x")


async def test_unknown_prerelease_and_free_threaded_pythons_fail_the_setup(tmp_path: Path) -> None:
    """requests' matrix asks for 3.14t and 3.15-dev: no installed 3.x may stand in for them."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          t:
            runs-on: ubuntu-latest
            strategy:
              fail-fast: false
              matrix:
                python-version: ["3.99t", "3.99-dev"]
            steps:
              - uses: actions/setup-python@v5
                with: {python-version: "${{ matrix.python-version }}"}
              - run: echo never
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 1
    free = recorder.lines("t[python-version=3.99t]")
    assert any("satisfies '3.99t' (a free-threaded build" in line for line in free)
    assert any(
        "satisfies '3.99-dev'; installed" in x for x in recorder.lines("t[python-version=3.99-dev]")
    )
    assert "never" not in free


async def test_steps_after_a_failure_say_so(tmp_path: Path) -> None:
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - run: exit 1
              - run: echo later
              - if: github.event_name == 'push'
                run: echo also later
              - if: github.event_name == 'nope' || failure()
                run: echo on failure
              - if: github.event_name == 'nope' && always()
                run: echo never
        """,
    )
    recorder, _, _ = await run(path)
    reasons = {
        e.step: e.reason
        for e in recorder.events
        if getattr(e, "status", None) == "skipped" and getattr(e, "stage", None) == "a"
    }
    assert reasons == {
        1: "an earlier step failed",
        2: "an earlier step failed",
        4: "if: github.event_name == 'nope' && always() is false",
    }
    assert (3, "Run echo on failure", "succeeded") in steps(recorder, "a")


async def test_a_matrix_from_an_empty_output_names_strategy_matrix(tmp_path: Path) -> None:
    """attrs builds its matrix from a skipped remote action's output, which is then empty."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          build:
            runs-on: ubuntu-latest
            outputs:
              versions: ${{ steps.none.outputs.versions }}
            steps:
              - run: echo nothing
          tests:
            needs: build
            runs-on: ubuntu-latest
            strategy:
              matrix:
                python-version: ${{ fromJson(needs.build.outputs.versions) }}
            steps:
              - run: echo never
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 1
    assert any(
        line.startswith("##[error]strategy.matrix: fromJSON(): not JSON: ''")
        for line in recorder.lines("tests")
    )


def test_the_failure_summary_shows_step_lines_not_markers(tmp_path: Path) -> None:
    workflow(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - run: echo fine
              - name: Run tests
                run: echo boom; exit 2
              - run: echo later
        """,
    )
    done = subprocess.run(
        [pipedeck_bin(), "run", ".github/workflows/ci.yml", "--format", "plain"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    summary = done.stdout.split("stage(s) failed:")[1]
    assert "##pipedeck[step]" not in summary
    assert "   step 2 Run tests: failed in " in summary
    assert "   step 3 Run echo later: skipped: an earlier step failed" in summary


async def test_setup_python_puts_its_console_scripts_on_path(tmp_path: Path) -> None:
    """httpx's `scripts/check` runs `ruff` that its install step pip-installed into the
    interpreter's bin directory: that directory is on PATH after setup-python."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - id: py
                uses: actions/setup-python@v5
                with: {python-version: "3.x"}
              - run: |
                  bin=$(dirname "${{ steps.py.outputs.python-path }}")
                  case ":$PATH:" in *":$bin:"*) echo scripts on PATH;; esac
                  python -c 'import sys; print(sys.executable)'
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 0
    assert "scripts on PATH" in recorder.lines("a")


async def test_python_version_file_reads_pyproject_and_tool_versions(tmp_path: Path) -> None:
    """flask's typing job: `python-version-file: pyproject.toml` means its requires-python."""
    (tmp_path / "pyproject.toml").write_text('[project]\nrequires-python = ">=3.8,<4"\n')
    (tmp_path / ".tool-versions").write_text("nodejs 20\npython 2.5\n")
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          pyproject:
            runs-on: ubuntu-latest
            steps:
              - id: py
                uses: actions/setup-python@v5
                with: {python-version-file: pyproject.toml}
              - run: echo "got ${{ steps.py.outputs.python-version }}"
          tool-versions:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/setup-python@v5
                with: {python-version-file: .tool-versions}
        """,
    )
    recorder, _, _ = await run(path)
    assert recorder.final("pyproject").status == "succeeded"
    assert any(line.startswith("got 3.") for line in recorder.lines("pyproject"))
    assert any("no installed Python satisfies '2.5'" in x for x in recorder.lines("tool-versions"))
