"""Patterns met running real projects' CI (requests, attrs, httpx, flask, pytest, pydantic,
textual) with pipedeck, each reproduced by a small workflow run for real."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from engine.gha.actions import satisfies
from engine.gha.context import runner_arch
from engine.gha.loader import load_workflow
from tests.conftest import pipedeck_bin
from tests.gha.conftest import FakeTool
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
    assert "##[" not in summary  # workflow commands read as the live lines do
    assert "── a failed: step 2 Run tests failed: exit code 2" in summary
    assert "   ▾ Run tests\n" in summary
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


def test_plain_output_prints_each_step_line_where_the_step_ends(tmp_path: Path) -> None:
    """Running black's CI, `step 2 ...: succeeded` came after step 3's `##[group]`: a step's
    end and the next one's start arrive in one read, and the step line must keep its place."""
    workflow(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - {name: first, run: echo one}
              - {name: second, run: "true"}
              - {name: third, run: "true"}
              - {name: fourth, run: echo four}
        """,
    )
    done = subprocess.run(
        [pipedeck_bin(), "run", ".github/workflows/ci.yml", "--format", "plain"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    wanted = ["▾ first", "] one", "step 1 first: succeeded", "▾ second"]
    wanted += ["step 2 second: succeeded", "▾ third", "step 3 third: succeeded"]
    wanted += ["▾ fourth", "] four", "step 4 fourth: succeeded"]
    places = [done.stdout.find(text) for text in wanted]
    assert -1 not in places and places == sorted(places), done.stdout


async def test_a_step_that_would_not_run_is_skipped_for_that_reason(tmp_path: Path) -> None:
    """black's coveralls step (a remote action) has `if: github.repository == 'psf/black'`:
    after a failure or with its `if:` false it is skipped for that, not for the action."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - if: github.repository == 'nobody/nothing'
                uses: someone/remote-action@v1
              - run: exit 1
              - uses: someone/remote-action@v1
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 1
    reasons = [e.reason for e in recorder.events if getattr(e, "status", "") == "skipped"]
    assert reasons[:2] == [
        "if: github.repository == 'nobody/nothing' is false",
        "an earlier step failed",
    ]
    assert not any("remote action" in line for line in recorder.lines("a"))


async def test_interpreters_that_fail_to_run_are_not_listed(
    tmp_path: Path, fake_tool: FakeTool
) -> None:
    """A pyenv shim of a version not selected exits 127 naming `python3.12`: that is not an
    installed 3.12 (it was listed as one)."""
    fake_tool("python3.77", "echo 'pyenv: python3.77: command not found' >&2\nexit 127\n")
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/setup-python@v5
                with: {python-version: "3.77"}
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 1
    (line,) = [x for x in recorder.lines("a") if "no installed Python satisfies" in x]
    listed = line.split("installed: ")[1].split(", ")
    assert "3.77" not in listed
    numbers = [tuple(map(int, v.split("."))) for v in listed]
    assert numbers == sorted(numbers)  # 3.9 before 3.10, as versions sort


async def test_setup_python_pip_version_is_installed_in_the_venv(tmp_path: Path) -> None:
    """black's test job asks for `pip-version: "26.1"` (for `pip install --group`): pip is
    asked to install that version into the job's venv; one it cannot fails the step."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/setup-python@v5
                with: {python-version: "3.x", pip-version: "0.0.0.0.1"}
              - run: echo never
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 1
    lines = recorder.lines("a")
    assert any("pip-version 0.0.0.0.1: pip could not install it" in x for x in lines)
    assert "never" not in lines


async def test_the_state_folder_leaves_git_status_clean(tmp_path: Path) -> None:
    """pip's vendoring job ends with a check that the checkout is unchanged: pipedeck's own
    `.pipedeck/` in the workspace must not show in `git status`."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - run: git status --porcelain --untracked-files=all -- .pipedeck
              - run: test -z "$(git status --porcelain -- .pipedeck)" && echo clean
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 0, recorder.lines("a")
    assert "clean" in recorder.lines("a")


async def test_a_command_not_found_says_what_exit_127_means(tmp_path: Path) -> None:
    """textual's CI starts with `pipx install poetry`: hosted runners have pipx, this machine
    may not; exit code 127 alone does not say that."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - run: no-such-tool-pipedeck install poetry
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 1
    lines = recorder.lines("a")
    assert any("no-such-tool-pipedeck: command not found" in x for x in lines)
    assert any(
        x.startswith("##[error]Process completed with exit code 127: a command was not found")
        for x in lines
    )


async def test_download_artifact_pattern_and_merge_multiple(tmp_path: Path) -> None:
    """fastapi's coverage job downloads `pattern: coverage-*` with `merge-multiple: true`:
    only the matching artifacts, all into one folder."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          test:
            runs-on: ubuntu-latest
            strategy:
              matrix:
                part: [a, b]
            steps:
              - run: mkdir -p out && echo ${{ matrix.part }} > out/.coverage.${{ matrix.part }}
              - uses: actions/upload-artifact@v4
                with: {name: "coverage-${{ matrix.part }}", path: out, include-hidden-files: true}
          other:
            runs-on: ubuntu-latest
            steps:
              - run: mkdir -p junk && echo x > junk/junk.txt
              - uses: actions/upload-artifact@v4
                with: {name: junk, path: junk}
          combine:
            needs: [test, other]
            runs-on: ubuntu-latest
            steps:
              - uses: actions/download-artifact@v4
                with: {pattern: coverage-*, path: merged, merge-multiple: true}
              - uses: actions/download-artifact@v4
                with: {pattern: coverage-*, path: apart}
              - run: ls -A merged apart apart/coverage-a
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 0, recorder.lines("combine")
    assert sorted(os.listdir(tmp_path / "merged")) == [".coverage.a", ".coverage.b"]
    assert sorted(os.listdir(tmp_path / "apart")) == ["coverage-a", "coverage-b"]


async def test_a_missing_artifact_names_the_steps_that_could_not_run(tmp_path: Path) -> None:
    """A build job makes the `Packages` artifact with a remote action that does not run here
    (pytest's and attrs' did, before hynek/build-and-inspect-python-package was done natively):
    the download's failure says so."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          package:
            runs-on: ubuntu-latest
            steps:
              - name: Build and Check Package
                uses: someone/build-python-package@v2
          build:
            needs: package
            runs-on: ubuntu-latest
            steps:
              - uses: actions/download-artifact@v4
                with: {name: Packages, path: dist}
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 1
    assert any(
        "no artifact 'Packages' in this run (uploaded: none); steps that could not run here, "
        "which may have made it: package: Build and Check Package" in line
        for line in recorder.lines("build")
    )


async def test_setup_uv_uses_the_installed_uv(tmp_path: Path, fake_tool: FakeTool) -> None:
    """pydantic's, pytest's and attrs' CI set up uv with astral-sh/setup-uv: the installed uv
    is put on PATH, `python-version` is UV_PYTHON (an installed interpreter: uv would try to
    download one), `activate-environment` makes `.venv`."""
    fake_tool(
        "uv",
        'case "$1" in\n'
        '  --version) echo "uv 0.9.9";;\n'
        '  venv) mkdir -p "$4/bin" && echo "venv $4";;\n'
        '  *) echo "uv ran $*";;\n'
        "esac\n",
    )
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - id: uv
                uses: astral-sh/setup-uv@v6
                with: {python-version: "3.x", activate-environment: "true"}
              - run: |
                  echo "venv=$VIRTUAL_ENV v=${{ steps.uv.outputs.uv-version }}"
                  "$UV_PYTHON" -c "import sys; print('python', sys.version_info[0])"
                  uv run pytest
        """,
    )
    assert not load_workflow(path).warnings  # done natively: not a remote action
    recorder, code, _ = await run(path)
    lines = recorder.lines("a")
    assert code == 0, lines
    assert f"venv={tmp_path / '.venv'} v=0.9.9" in lines
    assert "python 3" in lines
    assert "uv ran run pytest" in lines
    assert (tmp_path / ".venv" / "bin").is_dir()


async def test_a_matrix_from_needs_that_is_not_a_mapping_fails_with_a_line(tmp_path: Path) -> None:
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          plan:
            runs-on: ubuntu-latest
            outputs: {m: "${{ steps.p.outputs.m }}"}
            steps:
              - id: p
                run: echo 'm=[1, 2]' >> "$GITHUB_OUTPUT"
          run:
            needs: plan
            runs-on: ubuntu-latest
            strategy:
              matrix: ${{ fromJSON(needs.plan.outputs.m) }}
            steps: [{run: echo never}]
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 1
    lines = recorder.lines("run")
    assert "##[error]strategy.matrix: expected a mapping, got [ 1, 2 ]" in lines
    assert not any("Traceback" in line for line in lines)


async def test_pipx_installs_into_the_tool_cache_on_path(tmp_path: Path) -> None:
    """textual's CI runs `pipx install poetry` then `poetry`: as on a runner image (PIPX_HOME,
    PIPX_BIN_DIR on PATH), what pipx installs is found, and it is not the user's ~/.local."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          t:
            runs-on: ubuntu-latest
            steps:
              - run: |
                  mkdir -p "$PIPX_BIN_DIR"
                  printf '#!/bin/sh\\necho poetry ran\\n' > "$PIPX_BIN_DIR/poetry"
                  chmod +x "$PIPX_BIN_DIR/poetry"
              - run: poetry && echo "home=$PIPX_HOME"
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 0, recorder.lines("t")
    assert "poetry ran" in recorder.lines("t")
    home = next(x for x in recorder.lines("t") if x.startswith("home="))[len("home=") :]
    assert Path(home).is_relative_to(tmp_path / ".pipedeck" / "gha" / "tool-cache")


async def test_a_runner_of_another_architecture_is_skipped(tmp_path: Path) -> None:
    """pydantic builds on `ubuntu-24.04-arm`: on an x86-64 machine that job would test x86-64
    and say it succeeded; it is skipped saying why, as a macOS runner is."""
    other = "x64" if runner_arch() != "X64" else "ubuntu-24.04-arm"
    path = workflow(
        tmp_path,
        f"""
        on: push
        jobs:
          arm:
            runs-on: {other}
            steps: [{{run: echo never}}]
          here:
            runs-on: [self-hosted, {runner_arch()}]
            steps: [{{run: echo ran here}}]
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 0
    assert recorder.final("arm").status == "skipped"
    wanted = "X64" if other == "x64" else "ARM64"
    assert f"runs-on {other}: an {wanted} runner is not available here (this one is" in (
        recorder.final("arm").reason or ""
    )
    assert "never" not in recorder.lines("arm")
    assert "ran here" in recorder.lines("here")


async def test_setup_python_cache_poetry_makes_poetry_use_that_python(
    tmp_path: Path, fake_tool: FakeTool
) -> None:
    """textual's CI: `pipx install poetry`, then setup-python 3.x with `cache: poetry`, then
    `poetry install`. setup-python runs `poetry env use` with its Python in each project (else
    poetry makes its venv with the Python it runs on, and every matrix instance tests that
    one); without poetry installed the step fails, as on GitHub."""
    poetry = fake_tool("poetry", 'echo "poetry $* in $PWD"\n')
    (tmp_path / "poetry.lock").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "poetry.lock").write_text("")
    path = workflow(
        tmp_path,
        f"""
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - id: py
                uses: actions/setup-python@v5
                with: {{python-version: "3", cache: poetry}}
              - run: echo "python=${{{{ steps.py.outputs.python-path }}}}" && rm {poetry}
              - uses: actions/setup-python@v5
                with: {{python-version: "3", cache: poetry}}
        """,
    )
    recorder, code, _ = await run(path)
    lines = recorder.lines("a")
    python = next(x for x in lines if x.startswith("python="))[len("python=") :]
    assert Path(python).parent.parent.name == "venv", lines  # setup-python's venv
    for project in (tmp_path, tmp_path / "sub"):
        assert f"poetry env use {python} in {project}" in lines
    assert code == 1
    assert [status for _, _, status in steps(recorder, "a")][-1] == "failed"
    assert any("cache: poetry needs poetry, not found" in x for x in lines)


async def test_the_python_set_up_is_also_the_first_one_on_path_that_is_not_a_venv(
    tmp_path: Path,
) -> None:
    """flask's pre-commit job: setup-python, then `uv run`, which makes the project's `.venv`
    from the first Python on PATH that is not a venv's: it took the user's default Python,
    not the one set up (setup-python's own venv came first, then the user's PATH)."""
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
                with: {python-version: "3"}
              - shell: python
                run: |
                  import os, subprocess
                  for folder in os.environ["PATH"].split(os.pathsep):
                      python = os.path.join(folder, "python3")
                      if os.path.exists(python) and not os.path.exists(
                          os.path.join(os.path.dirname(folder), "pyvenv.cfg")
                      ):
                          break
                  code = "import platform; print(platform.python_version())"
                  found = subprocess.run([python, "-c", code], capture_output=True, text=True)
                  print("first system python:", found.stdout.strip())
                  print("set up:", "${{ steps.py.outputs.python-version }}")
        """,
    )
    recorder, code, _ = await run(path)
    lines = recorder.lines("a")
    assert code == 0, lines
    wanted = next(x for x in lines if x.startswith("set up: "))[len("set up: ") :]
    assert f"first system python: {wanted}" in lines


async def test_uv_tool_install_goes_to_the_tool_cache_on_path(
    tmp_path: Path, fake_tool: FakeTool
) -> None:
    """pytest's setup-tox action runs `uv tool install tox` after setup-uv, then `tox`: the
    tool is found (setup-uv puts the tool bin dir on PATH), and it is not put in the user's
    ~/.local/bin over their own tox. attrs' hynek/setup-cached-uv is setup-uv too."""
    fake_tool(
        "uv",
        'case "$1" in\n'
        '  --version) echo "uv 0.9.9";;\n'
        '  tool) mkdir -p "$UV_TOOL_BIN_DIR"\n'
        '        printf "#!/bin/sh\\necho %s ran\\n" "$3" > "$UV_TOOL_BIN_DIR/$3"\n'
        '        chmod +x "$UV_TOOL_BIN_DIR/$3";;\n'
        "esac\n",
    )
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - uses: hynek/setup-cached-uv@v2
              - run: uv tool install tox --with tox-uv
              - run: tox && echo "bin=$UV_TOOL_BIN_DIR"
        """,
    )
    assert not load_workflow(path).warnings  # done natively: not a remote action
    recorder, code, _ = await run(path)
    lines = recorder.lines("a")
    assert code == 0, lines
    assert "tox ran" in lines
    tools = Path(next(x for x in lines if x.startswith("bin="))[len("bin=") :])
    assert tools.is_relative_to(tmp_path / ".pipedeck" / "gha" / "tool-cache")


async def test_build_and_inspect_python_package_builds_uploads_and_gives_the_matrix(
    tmp_path: Path,
) -> None:
    """pytest's and attrs' CI build their package with hynek/build-and-inspect-python-package
    and test what it uploads as `Packages`; attrs' test matrix is its classifiers' Python
    versions. It was skipped as a remote action, so every test job failed to download it.
    (Installs build, twine and check-wheel-contents from the package index.)"""
    (tmp_path / "tinypkg").mkdir()
    (tmp_path / "tinypkg" / "__init__.py").write_text('"""Tiny."""\n')
    (tmp_path / "README.md").write_text("# tinypkg\n\nA tiny package.\n")
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["flit_core>=3.2,<4"]\nbuild-backend = "flit_core.buildapi"\n'
        '[project]\nname = "tinypkg"\nversion = "1.2.3"\ndescription = "Tiny."\n'
        'readme = "README.md"\nclassifiers = [\n'
        '  "Programming Language :: Python :: 3.11",\n'
        '  "Programming Language :: Python :: 3.12",\n]\n'
    )
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          build-package:
            runs-on: ubuntu-latest
            outputs:
              versions: ${{ steps.baipp.outputs.supported_python_classifiers_json_array }}
            steps:
              - uses: hynek/build-and-inspect-python-package@v2
                id: baipp
              - run: echo "${{ steps.baipp.outputs.package_name }} ${{ steps.baipp.outputs.package_version }}"
          tests:
            needs: build-package
            runs-on: ubuntu-latest
            strategy:
              matrix:
                python-version: ${{ fromJson(needs.build-package.outputs.versions) }}
            steps:
              - uses: actions/download-artifact@v4
                with: {name: Packages, path: dist}
              - run: echo "py ${{ matrix.python-version }}" && ls dist
        """,
    )
    assert not load_workflow(path).warnings  # done natively: not a remote action
    recorder, code, _ = await run(path)
    assert code == 0, recorder.lines("build-package")
    assert "tinypkg 1.2.3" in recorder.lines("build-package")
    lines = recorder.lines("tests")
    assert "py 3.11" in lines and "py 3.12" in lines
    assert lines.count("tinypkg-1.2.3.tar.gz") == 2
    assert lines.count("tinypkg-1.2.3-py2.py3-none-any.whl") == 2  # flit_core tags py2.py3


async def test_a_composite_actions_steps_see_what_its_earlier_steps_set(
    tmp_path: Path, fake_tool: FakeTool
) -> None:
    """pytest's local setup-tox action runs setup-uv then `uv tool install tox`: the install
    did not see setup-uv's UV_TOOL_BIN_DIR and went to the user's ~/.local/bin. On GitHub, a
    composite action's steps see the GITHUB_ENV of its earlier steps."""
    fake_tool(
        "uv", 'case "$1" in --version) echo "uv 0.9.9";; *) echo "tools=$UV_TOOL_DIR";; esac\n'
    )
    action = tmp_path / "setup"
    action.mkdir()
    (action / "action.yml").write_text(
        "runs:\n  using: composite\n  steps:\n"
        "    - uses: astral-sh/setup-uv@v6\n"
        "    - run: uv tool install tox\n      shell: bash\n"
        '    - run: echo "FROM_ENV=set" >> "$GITHUB_ENV"\n      shell: bash\n'
        '    - run: echo "later step sees [$FROM_ENV]"\n      shell: bash\n'
    )
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - uses: ./setup
              - run: echo "after the action [$FROM_ENV]"
        """,
    )
    recorder, code, _ = await run(path)
    lines = recorder.lines("a")
    assert code == 0, lines
    tools = Path(next(x for x in lines if x.startswith("tools="))[len("tools=") :])
    assert tools.is_relative_to(tmp_path / ".pipedeck" / "gha" / "tool-cache")
    assert "later step sees [set]" in lines
    assert "after the action [set]" in lines


async def test_alls_green_fails_the_check_when_a_needed_job_did_not_succeed(
    tmp_path: Path,
) -> None:
    """pytest's and fastapi's `check` job is re-actors/alls-green over `toJSON(needs)`: skipped
    as a remote action, it succeeded whatever its needs ended as."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          good:
            runs-on: ubuntu-latest
            steps: [{run: "true"}]
          bad:
            runs-on: ubuntu-latest
            steps: [{run: exit 1}]
          mac:
            runs-on: macos-latest
            steps: [{run: "true"}]
          both:
            strategy:
              matrix:
                os: [ubuntu-latest, macos-latest]
            runs-on: ${{ matrix.os }}
            steps: [{run: "true"}]
          check:
            if: always()
            needs: [good, bad, mac, both]
            runs-on: ubuntu-latest
            steps:
              - uses: re-actors/alls-green@release/v1
                with: {jobs: "${{ toJSON(needs) }}"}
          lenient:
            if: always()
            needs: [good, bad, mac, both]
            runs-on: ubuntu-latest
            steps:
              - id: green
                uses: re-actors/alls-green@release/v1
                with:
                  jobs: ${{ toJSON(needs) }}
                  allowed-failures: bad
                  allowed-skips: '["mac", "both"]'
              - run: echo "success=${{ steps.green.outputs.success }}"
        """,
    )
    assert not load_workflow(path).warnings[2:]  # the macOS jobs', no remote action
    recorder, code, _ = await run(path)
    assert code == 1
    assert recorder.final("check").status == "failed"
    lines = recorder.lines("check")
    assert "📝 bad → ❌ failure [required to succeed]" in lines
    assert "📝 mac → ⬜ skipped [required to succeed]" in lines
    # needs.both.result is success, but half its matrix did not run: not all green
    both = "📝 both → ⬜ skipped (1 of 2 instances could not run here) [required to succeed]"
    assert both in lines
    assert "📝 good → ✓ success [required to succeed]" in lines
    assert recorder.final("lenient").status == "succeeded", recorder.lines("lenient")
    assert "success=true" in recorder.lines("lenient")


async def test_no_secret_is_left_on_disk_after_the_job(tmp_path: Path) -> None:
    """A step script with `${{ secrets.X }}` in it was kept in the run's folder (RUNNER_TEMP)
    for the last 20 runs, the secret in clear; GitHub empties RUNNER_TEMP when a job ends."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - run: echo "token ${{ secrets.TOKEN }}" > /dev/null
              - shell: python
                run: print("length", len("${{ secrets.TOKEN }}"))
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 0, recorder.lines("a")
    assert "length 7" in recorder.lines("a")  # hunter2
    holding = [p for p in tmp_path.rglob("*") if p.is_file() and b"hunter2" in p.read_bytes()]
    assert holding == []
