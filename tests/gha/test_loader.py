"""Workflow files -> pipelines: matrices by GitHub's rules, FILE:LINE:COL problems, warnings."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from engine.gha.loader import Options, load_workflow
from engine.gha.matrix import expand_matrix
from engine.gha.options import is_workflow
from engine.loader import ConfigError
from tests.conftest import pipedeck_bin


def write(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ci.yml"
    path.write_text(textwrap.dedent(text))
    return path


def test_fruit_animal_example_from_githubs_docs() -> None:
    matrix = {
        "fruit": ["apple", "pear"],
        "animal": ["cat", "dog"],
        "include": [
            {"color": "green"},
            {"color": "pink", "animal": "cat"},
            {"fruit": "apple", "shape": "circle"},
            {"fruit": "banana"},
            {"fruit": "banana", "animal": "cat"},
        ],
    }
    assert expand_matrix(matrix) == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]


def test_exclude_partial_match_then_include_only_matrix() -> None:
    matrix = {
        "os": ["macos-latest", "windows-latest"],
        "version": [12, 14, 16],
        "environment": ["staging", "production"],
        "exclude": [{"os": "macos-latest", "version": 12, "environment": "production"},
                    {"os": "windows-latest", "version": 16}],
    }  # fmt: skip
    assert len(expand_matrix(matrix)) == 12 - 1 - 2
    only = {"include": [{"site": "production", "datacenter": "site-a"}, {"site": "staging"}]}
    assert expand_matrix(only) == only["include"]


def test_jobs_become_stages_with_matrix_instances_and_on_is_the_trigger(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        on: [push, pull_request]
        jobs:
          lint:
            runs-on: ubuntu-latest
            steps: [{run: ruff check .}]
          test:
            needs: lint
            runs-on: ${{ matrix.os }}
            strategy:
              matrix:
                python: ["3.11", "3.12"]
                os: [ubuntu-latest]
            steps: [{run: pytest}]
        """,
    )
    assert is_workflow(path)
    pipeline = load_workflow(path).pipeline
    assert list(pipeline.stages) == [
        "lint",
        "test[python=3.11,os=ubuntu-latest]",
        "test[python=3.12,os=ubuntu-latest]",
    ]
    assert pipeline.stages["test[python=3.12,os=ubuntu-latest]"].needs == ("lint",)
    assert pipeline.workspace == tmp_path  # the repository root, not .github/workflows
    assert pipeline.stages["lint"].steps


def test_problems_are_reported_at_file_line_col(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        on: push
        jobs:
          build:
            runs-on: ubuntu-latest
            neds: [lint]
            steps:
              - run: echo ${{ github.ref == }}
              - run: echo ${{ gthub.sha }}
          deploy:
            needs: [buld]
            runs-on: ubuntu-latest
            steps: [{run: x, uses: y}]
        """,
    )
    with pytest.raises(ConfigError) as err:
        load_workflow(path)
    text = str(err.value)
    assert f"{path}:6:5: unknown key 'neds' in job 'build'; did you mean 'needs'?" in text
    assert f"{path}:8:37: jobs.build.steps[0].run: bad expression: expected a value" in text
    assert f"{path}:9:23: jobs.build.steps[1].run: unknown context 'gthub'" in text
    assert f"{path}:11:13: jobs.deploy.needs: unknown job 'buld'; did you mean 'build'?" in text
    assert f"{path}:13:13: jobs.deploy.steps[0]: a step needs exactly one of" in text


def test_a_cycle_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        on: push
        jobs:
          a: {needs: b, runs-on: ubuntu-latest, steps: [{run: x}]}
          b: {needs: a, runs-on: ubuntu-latest, steps: [{run: x}]}
        """,
    )
    with pytest.raises(ConfigError, match="cycle"):
        load_workflow(path)


UNSUPPORTED = """
    on: push
    concurrency: ci
    jobs:
      mac:
        runs-on: macos-latest
        steps: [{run: echo}]
      db:
        runs-on: ubuntu-latest
        services:
          redis: {image: redis}
        steps:
          - uses: docker://alpine:3
          - uses: someone/else@v1
"""


def test_what_cannot_run_is_a_warning_and_strict_makes_it_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, UNSUPPORTED)
    warnings = [str(w) for w in load_workflow(path).warnings]
    assert any(
        w.startswith(f"{path}:6:14: warning: jobs.mac.runs-on: runs-on macos-latest")
        for w in warnings
    )
    assert any(w.startswith(f"{path}:11:7: warning: jobs.db.services") for w in warnings)
    assert any(
        w.startswith(f"{path}:13:15: warning: jobs.db.steps[0].uses: Docker") for w in warnings
    )
    assert any(
        w.startswith(f"{path}:14:15: warning: jobs.db.steps[1].uses: remote action")
        for w in warnings
    )
    assert any(w.startswith(f"{path}:3:14: note: concurrency") for w in warnings)
    with pytest.raises(ConfigError) as err:
        load_workflow(path, Options(strict=True))
    assert len(err.value.problems) == 4  # the notes stay notes


def test_runner_option_maps_a_label_to_a_host_of_the_root_pipedeck_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, UNSUPPORTED)
    (tmp_path / "pipedeck.yaml").write_text(
        "version: 1\nhosts:\n  mac-mini: {address: 10.0.0.9, user: ci}\n"
        "stages:\n  x: {run: 'true'}\n"
    )
    pipeline = load_workflow(path, Options(runners={"macos-latest": "mac-mini"})).pipeline
    assert pipeline.stages["mac"].host == "mac-mini"
    assert pipeline.hosts["mac-mini"].address == "10.0.0.9"
    with pytest.raises(ConfigError, match="--runner: unknown host 'nowhere-host'"):
        load_workflow(path, Options(runners={"macos-latest": "nowhere-host"}))


def test_cli_validate_and_strict_exit_codes(tmp_path: Path) -> None:
    path = write(tmp_path, UNSUPPORTED)
    done = subprocess.run([pipedeck_bin(), "validate", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "warning: jobs.mac.runs-on" in done.stderr
    strict = [pipedeck_bin(), "validate", str(path), "--strict"]
    done = subprocess.run(strict, capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_no_pipedeck_yaml_and_one_workflow_is_offered(tmp_path: Path) -> None:
    write(tmp_path, "on: push\njobs:\n  a: {runs-on: ubuntu-latest, steps: [{run: echo}]}\n")
    done = subprocess.run([pipedeck_bin(), "graph"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "using .github/workflows/ci.yml" in done.stderr
    assert "a" in done.stdout
    done = subprocess.run(
        [pipedeck_bin(), "validate"], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.stdout == ".github/workflows/ci.yml: ok, 1 stage(s)\n"  # the file it checked


def test_no_pipedeck_yaml_and_several_workflows_are_listed(tmp_path: Path) -> None:
    text = "on: push\njobs:\n  a: {runs-on: ubuntu-latest, steps: [{run: echo}]}\n"
    write(tmp_path, text)
    (tmp_path / ".github" / "workflows" / "docs.yaml").write_text(text)
    done = subprocess.run(
        [pipedeck_bin(), "validate"], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 2
    assert done.stderr == (
        "pipedeck: no pipedeck.yaml here, and 2 workflows in .github/workflows: ci.yml, docs.yaml;"
        " pass one: pipedeck validate .github/workflows/ci.yml\n"
    )


@pytest.mark.parametrize("command", ["show", "history", "logs"])
def test_history_commands_with_several_workflows_say_so_without_a_traceback(
    tmp_path: Path, command: str
) -> None:
    """`pipedeck show` in textual's checkout (five workflows, no pipedeck.yaml) printed a
    traceback."""
    text = "on: push\njobs:\n  a: {runs-on: ubuntu-latest, steps: [{run: echo}]}\n"
    write(tmp_path, text)
    (tmp_path / ".github" / "workflows" / "docs.yaml").write_text(text)
    ran = [pipedeck_bin(), "run", ".github/workflows/ci.yml"]
    assert subprocess.run(ran, capture_output=True, cwd=tmp_path).returncode == 0
    argv = [pipedeck_bin(), command, *(["a"] if command == "logs" else [])]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"pass one: pipedeck {command} -f .github/workflows/ci.yml" in done.stderr
    assert done.stderr.startswith(
        "pipedeck: no pipedeck.yaml here, and 2 workflows in .github/workflows: ci.yml, docs.yaml;"
    )


def test_watch_paths_narrow_what_a_workflow_watches(tmp_path: Path) -> None:
    import argparse

    from engine.gha.options import add_arguments, load

    path = write(tmp_path, "on: push\njobs:\n  a: {runs-on: ubuntu-latest, steps: [{run: echo}]}\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert load(str(path), parser.parse_args([])).pipeline.watch.paths == (".",)
    args = parser.parse_args(["--watch-paths", "src", "--watch-paths", "tests"])
    assert load(str(path), args).pipeline.watch.paths == ("src", "tests")


def test_wrong_kinds_of_values_are_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    env: [x]\n"
        "    timeout-minutes: soon\n    steps:\n      - run: echo\n        with: 3\n",
    )
    with pytest.raises(ConfigError) as err:
        load_workflow(path)
    text = str(err.value)
    assert f"{path}:5:10: jobs.a.env: expected a mapping, got a list" in text
    assert f"{path}:6:22: jobs.a.timeout-minutes: expected a number, got the string 'soon'" in text
    assert f"{path}:9:15: jobs.a.steps[0].with: expected a mapping, got the integer 3" in text


def test_a_version_written_as_a_number_losing_its_zero_is_noted(tmp_path: Path) -> None:
    """`python-version: [3.9, 3.10]` gives 3.1 (on GitHub too): validate says so at the value,
    and the instance is `3.1`, as GitHub makes it."""
    path = write(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            strategy:
              matrix:
                python-version: [3.9, 3.10, "3.10", 3.0]
            steps:
              - run: echo ${{ matrix.python-version }}
        """,
    )
    workflow = load_workflow(path)
    notes = [str(w) for w in workflow.warnings if "YAML reads it" in str(w)]
    assert notes == [
        f"{path}:8:31: note: 3.10 is the number 3.1 (YAML reads it so, as GitHub does): "
        "write '3.10' if the text is meant, a Python version say"
    ]
    assert "a[python-version=3.1]" in workflow.pipeline.stages
    load_workflow(path, Options(strict=True))  # a note: --strict does not refuse it


def test_a_matrix_include_that_is_not_a_list_is_reported(tmp_path: Path) -> None:
    """Found by the loader fuzz: `include: true` raised a TypeError."""
    path = write(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            strategy:
              matrix:
                include: true
            steps: [{run: x}]
        """,
    )
    with pytest.raises(ConfigError) as err:
        load_workflow(path)
    assert (
        f"{path}:8:9: jobs.a.strategy.matrix.include: expected a list of mappings, got True"
        in str(err.value)
    )
