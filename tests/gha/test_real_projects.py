"""Patterns met running the CI of httpx, attrs, black, fastapi and pip with pipedeck (a second
round, after tests/gha/test_real_patterns.py), each reproduced by a small workflow run for real."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from engine.gha.loader import load_workflow
from engine.run import Run
from tests.conftest import Recorder
from tests.gha.conftest import FakeTool
from tests.gha.test_runner import run, workflow
from tests.gha.test_workspace import commit


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


async def test_what_a_job_does_to_git_stays_in_the_copy(tmp_path: Path) -> None:
    """pip's packaging job tags a release (`git tag -m ... 99.9`) and refuses to build with
    files in `dist/`. The copy was a git worktree, which shares its repository's refs and
    config: the tag (and any branch, stash or `git config user.name` of a job) landed in the
    user's repository, and the next run failed on it, and on the last run's `dist/`. The copy
    is a repository of its own now, and starts from the user's refs and a clean tree, as a
    fresh checkout (ignored virtual environments kept warm)."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          release:
            runs-on: ubuntu-latest
            steps:
              - run: |
                  echo "on $(git symbolic-ref --short HEAD) dist=[$(ls dist 2>/dev/null)] tox=[$(ls .tox 2>/dev/null)]"
                  test "$(git config user.name)" != "github-actions[bot]" && echo "not the bot"
                  git tag -m "Release 99.9" 99.9
                  git checkout -q -b made-by-ci
                  git config user.name "github-actions[bot]"
                  git -c user.email=ci@example.com commit -q --allow-empty -m "Bump for release"
                  git stash list
                  mkdir -p dist .tox && touch dist/pip-99.9.tar.gz .tox/py311
        """,
    )
    (tmp_path / ".gitignore").write_text("dist/\n.tox/\n")
    commit(tmp_path)
    branch = subprocess.run(
        ["git", "symbolic-ref", "--short", "HEAD"], cwd=tmp_path, capture_output=True, text=True
    ).stdout.strip()
    for attempt in range(2):
        recorder, code, _ = await run(path)
        lines = recorder.lines("release")
        assert code == 0, lines
        tox = "py311" if attempt else ""
        assert f"on {branch} dist=[] tox=[{tox}]" in lines  # a warm .tox, no old dist/
        assert "not the bot" in lines  # the last run's `git config` went with it
    git = ["git", "-C", str(tmp_path)]
    assert subprocess.run([*git, "tag"], capture_output=True, text=True).stdout == ""
    branches = subprocess.run([*git, "branch"], capture_output=True, text=True).stdout
    assert "made-by-ci" not in branches
    name = subprocess.run([*git, "config", "--local", "user.name"], capture_output=True)
    assert name.returncode == 1  # not set in the user's repository


async def test_a_python_not_installed_here_does_not_fail_fast_the_matrix(tmp_path: Path) -> None:
    """pip's tests-unix (fail-fast: true) asks for 3.14, 3.15, 3.14t and exact versions
    (3.11.0...) that a hosted runner installs: their setup-python failed here at once and
    cancelled every other instance, so no test ran at all. Such an instance still fails, saying
    why, but the others run; a failure of the code still cancels them (test_runner)."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          t:
            runs-on: ubuntu-latest
            strategy:
              max-parallel: 1
              matrix:
                python: ["3.99", "3.x"]
            steps:
              - uses: actions/setup-python@v5
                with: {python-version: "${{ matrix.python }}"}
              - run: echo "tested on ${{ matrix.python }}"
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 1
    assert recorder.final("t[python=3.99]").status == "failed"
    lines = recorder.lines("t[python=3.x]")
    assert recorder.final("t[python=3.x]").status == "succeeded", lines
    assert "tested on 3.x" in lines


async def test_a_python_version_file_names_itself_when_no_python_satisfies_it(
    tmp_path: Path,
) -> None:
    """attrs' lint job reads `.python-version-default` (3.14): the error named '3.14' only."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          lint:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/setup-python@v5
                with: {python-version-file: .python-version-default}
        """,
    )
    (tmp_path / ".python-version-default").write_text("3.99\n")
    recorder, code, _ = await run(path)
    assert code == 1
    assert any(
        "no installed Python satisfies '3.99' (from .python-version-default); installed: " in x
        for x in recorder.lines("lint")
    )


async def test_a_job_in_the_copy_finds_no_pipedeck_state_in_it(tmp_path: Path) -> None:
    """attrs' build job (hynek/build-and-inspect-python-package) builds an sdist with hatchling,
    which honours the root `.gitignore` only: the copy's `.pipedeck/gha` (a link to the
    repository's state: venvs, caches, artifacts) went into the sdist, and the build failed
    after 90 s on a venv's absolute symlink. Jobs in the copy keep their state in the
    repository's `.pipedeck/gha`, and the copy has none; needs, outputs and caches still work."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          build:
            runs-on: ubuntu-latest
            outputs: {dist: "${{ steps.b.outputs.dist }}"}
            steps:
              - id: b
                run: |
                  ls -A
                  test ! -e .pipedeck && echo "no state in the checkout"
                  echo "dist=attrs.tar.gz" >> "$GITHUB_OUTPUT"
                  mkdir -p cached && echo warm > cached/file
              - uses: actions/cache@v4
                with: {path: cached, key: k1}
          test:
            needs: build
            runs-on: ubuntu-latest
            steps:
              - run: echo "got ${{ needs.build.outputs.dist }}"
        """,
    )
    commit(tmp_path)
    recorder, code, _ = await run(path)
    lines = recorder.lines("build")
    assert code == 0, lines
    assert "no state in the checkout" in lines
    assert "got attrs.tar.gz" in recorder.lines("test")
    assert (tmp_path / ".pipedeck" / "gha" / "cache" / "index.json").is_file()
    assert not (tmp_path / ".pipedeck" / "workspace" / ".pipedeck").exists()


async def test_a_venv_made_at_another_path_is_made_anew(tmp_path: Path) -> None:
    """setup-python's venvs are kept in the tool cache from run to run, but a venv cannot
    move: after the repository was moved (or, upgrading pipedeck, made through the link in the
    workspace copy, as attrs' build venv was), `pip` ran a Python that is not there (exit
    code 127). Such a venv is made anew."""
    first = tmp_path / "first"
    first.mkdir()
    workflow(
        first,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/setup-python@v5
                with: {python-version: "3.x"}
              - run: pip --version
        """,
    )
    recorder, code, _ = await run(first / ".github" / "workflows" / "ci.yml")
    assert code == 0, recorder.lines("a")
    moved = tmp_path / "moved"
    first.rename(moved)
    recorder, code, _ = await run(moved / ".github" / "workflows" / "ci.yml")
    lines = recorder.lines("a")
    assert code == 0, lines
    assert any(x.startswith("actions/setup-python: making the venv ") for x in lines)
    assert any(x.startswith("pip ") and str(moved) in x for x in lines)


async def test_github_event_path_is_the_event_file(tmp_path: Path) -> None:
    """fastapi's jobs start by dumping `toJson(github)`: its `event_path` was empty, though
    GITHUB_EVENT_PATH names the event's file."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - run: |
                  test "${{ github.event_path }}" = "$GITHUB_EVENT_PATH" && echo same
                  cat "${{ github.event_path }}"; echo
        """,
    )
    recorder, code, _ = await run(path)
    lines = recorder.lines("a")
    assert code == 0, lines
    assert "same" in lines
    # no git checkout here: the payload made from git has no commit, only the repository
    assert any(line.startswith('{"ref": ') and '"full_name": "local/' in line for line in lines)


async def test_the_copy_of_a_shallow_clone_reads_its_history(tmp_path: Path) -> None:
    """A shallow clone (`git clone --depth 1`, as CI checkouts are) has commits whose parents
    are not there: its copy must know where its history stops, or `git log` fails."""
    origin = tmp_path / "origin"
    origin.mkdir()
    workflow(origin, "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
             "      - run: git log --oneline > /dev/null && echo history ok\n")  # fmt: skip
    commit(origin)
    (origin / "second").write_text("2\n")
    commit(origin)
    shallow = tmp_path / "shallow"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{origin}", str(shallow)], check=True
    )
    recorder, code, _ = await run(shallow / ".github" / "workflows" / "ci.yml")
    assert code == 0, recorder.lines("a")
    assert "history ok" in recorder.lines("a")


async def test_jobs_running_at_once_each_have_a_copy(tmp_path: Path) -> None:
    """pip's packaging job commits and tags (`nox -s prepare-release`) while its vendoring job
    ends with `git diff --exit-code`: on GitHub each has a checkout of its own; here the jobs of
    a run shared one copy, each seeing what the other did. Now each job has its own."""
    repo = tmp_path / "repo"
    repo.mkdir()
    fifo = tmp_path / "a-wrote"
    os.mkfifo(fifo)
    path = workflow(
        repo,
        f"""
        on: push
        jobs:
          packaging:
            runs-on: ubuntu-latest
            timeout-minutes: 1
            steps:
              - run: echo "99.9" > version.txt && echo written > {fifo}
          vendoring:
            runs-on: ubuntu-latest
            timeout-minutes: 1
            steps:
              - run: |
                  read done < {fifo}
                  git status --porcelain
                  git diff --exit-code && test ! -e version.txt && echo "vendoring: clean"
        """,
    )
    commit(repo)
    the_run = Run(load_workflow(path).pipeline, jobs=2)  # both at once: each waits on the other
    recorder = Recorder()
    the_run.subscribe(recorder)
    try:
        code = await the_run.execute()
    finally:
        await the_run.close()
    assert code == 0, recorder.lines("vendoring")
    assert "vendoring: clean" in recorder.lines("vendoring")
