"""Workflows run for real through the engine: steps, files, contexts, actions, step events."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.events import LogLines, StageStatus, StepStatus
from engine.gha.loader import Options, load_workflow
from engine.run import Run
from tests.conftest import Recorder, marked_pids
from tests.gha.conftest import FakeTool


def workflow(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ci.yml"
    path.write_text(textwrap.dedent(text))
    return path


async def run(path: Path, options: Options | None = None) -> tuple[Recorder, int, Run]:
    recorder = Recorder()
    the_run = Run(load_workflow(path, options, environ={"TOKEN": "hunter2"}).pipeline)
    the_run.subscribe(recorder)
    try:
        code = await the_run.execute()
    finally:
        await the_run.close()
    return recorder, code, the_run


def steps(recorder: Recorder, stage: str) -> list[tuple[int, str, str]]:
    return [
        (e.step, e.name, e.status)
        for e in recorder.events
        if isinstance(e, StepStatus) and e.stage == stage
    ]


async def test_steps_files_outputs_masks_and_step_events(tmp_path: Path) -> None:
    path = workflow(
        tmp_path,
        """
        on: push
        env: {TOP: top}
        jobs:
          build:
            runs-on: ubuntu-latest
            env: {JOB: job}
            outputs:
              color: ${{ steps.pick.outputs.color }}
            steps:
              - id: pick
                name: pick a color
                run: |
                  echo "color=blue" >> "$GITHUB_OUTPUT"
                  { echo "MULTI<<EOF"; echo one; echo two; echo EOF; } >> "$GITHUB_ENV"
                  mkdir -p "$RUNNER_TEMP/bin" && printf '#!/bin/sh\\necho tool ran\\n' > "$RUNNER_TEMP/bin/mytool"
                  chmod +x "$RUNNER_TEMP/bin/mytool" && echo "$RUNNER_TEMP/bin" >> "$GITHUB_PATH"
                  echo "::add-mask::s3cret"
                  echo "the s3cret and ${{ secrets.TOKEN }} are hidden"
                  echo "::error file=a.py,line=3::bad thing"
                  echo "## Summary" >> "$GITHUB_STEP_SUMMARY"
              - run: |
                  echo "multi=[$MULTI] top=$TOP job=$JOB ci=$CI os=$RUNNER_OS ws=$GITHUB_WORKSPACE"
                  mytool
              - run: exit 3
                continue-on-error: true
              - if: failure()
                run: echo never
              - if: steps.pick.outputs.color == 'BLUE'
                shell: python
                run: print("python says", "${{ steps.pick.outcome }}")
          after:
            needs: build
            runs-on: ubuntu-latest
            steps:
              - run: echo "got ${{ needs.build.outputs.color }} ${{ needs.build.result }}"
        """,
    )
    recorder, code, the_run = await run(path)
    assert code == 0
    lines = recorder.lines("build")
    assert "the *** and *** are hidden" in lines
    assert "##[error]a.py:3: bad thing" in lines
    assert (
        f"multi=[one\ntwo] top=top job=job ci=true os=Linux ws={tmp_path}".split("\n")[0] in lines
    )
    assert "tool ran" in lines
    assert "python says success" in lines
    assert "got blue success" in recorder.lines("after")
    assert [s for s in steps(recorder, "build") if s[2] != "running"] == [
        (0, "pick a color", "succeeded"),
        (
            1,
            'Run echo "multi=[$MULTI] top=$TOP job=$JOB ci=$CI os=$RUNNER_OS ws=$GITHUB_WORKSPACE',
            "succeeded",
        ),
        (2, "Run exit 3", "failed"),
        (3, "Run echo never", "skipped"),
        (4, 'Run print("python says", "${{ steps.pick.outcome }}")', "succeeded"),
    ]
    summary = tmp_path / ".pipedeck" / "gha" / the_run.run_id / "summary" / "build.md"
    assert summary.read_text().strip() == "## Summary"


async def test_failure_skips_later_steps_and_fails_the_job(tmp_path: Path) -> None:
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - run: exit 4
                continue-on-error: true
              - run: exit 3
              - run: echo skipped
              - if: always()
                run: echo cleanup
          b:
            needs: a
            if: failure()
            runs-on: ubuntu-latest
            steps:
              - run: echo "a was ${{ needs.a.result }}"
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 1
    assert recorder.final("a").status == "failed"
    # the job's reason names its failed step, not the job runner's exit code (1) nor the
    # earlier step whose failure continue-on-error allowed
    assert recorder.final("a").reason == "step 2 Run exit 3 failed: exit code 3"
    assert [s[2] for s in steps(recorder, "a") if s[2] != "running"] == [
        "failed",
        "failed",
        "skipped",
        "succeeded",
    ]
    assert "a was failure" in recorder.lines("b")


async def test_step_timeout_kills_the_step(tmp_path: Path) -> None:
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          slow:
            runs-on: ubuntu-latest
            steps:
              - run: sleep 30
                timeout-minutes: 0.01
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 1
    assert ("Run sleep 30", "timed_out") in [(s[1], s[2]) for s in steps(recorder, "slow")]


async def test_matrix_from_needs_outputs_is_expanded_at_run_time(tmp_path: Path) -> None:
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          plan:
            runs-on: ubuntu-latest
            outputs: {list: "${{ steps.p.outputs.list }}"}
            steps:
              - id: p
                run: echo 'list=["x","y"]' >> "$GITHUB_OUTPUT"
          work:
            needs: plan
            runs-on: ubuntu-latest
            strategy:
              matrix:
                item: ${{ fromJSON(needs.plan.outputs.list) }}
            steps:
              - run: echo "item ${{ matrix.item }} of ${{ strategy.job-total }}"
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 0
    assert "item x of 2" in recorder.lines("work") and "item y of 2" in recorder.lines("work")
    assert [s[0] for s in steps(recorder, "work") if s[2] == "succeeded"] == [0, 1]


async def test_native_actions_cache_artifacts_and_composite(tmp_path: Path) -> None:
    action = tmp_path / "act"
    action.mkdir()
    (action / "action.yml").write_text(
        textwrap.dedent(
            """
            name: greet
            inputs: {who: {default: world}}
            outputs: {said: {value: "${{ steps.s.outputs.said }}"}}
            runs:
              using: composite
              steps:
                - id: s
                  shell: bash
                  run: echo "hello ${{ inputs.who }}" && echo "said=yes" >> "$GITHUB_OUTPUT"
            """
        )
    )
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          make:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/checkout@v4
              - id: cache
                uses: actions/cache@v4
                with: {path: deps, key: "deps-${{ hashFiles('act/action.yml') }}", restore-keys: "deps-"}
              - run: echo "hit=${{ steps.cache.outputs.cache-hit }}" && mkdir -p deps out && echo data > deps/d && echo built > out/file.txt
              - uses: actions/upload-artifact@v4
                with: {name: dist, path: out/}
              - id: greet
                uses: ./act
                with: {who: pipedeck}
              - run: echo "composite said ${{ steps.greet.outputs.said }}"
          use:
            needs: make
            runs-on: ubuntu-latest
            steps:
              - uses: actions/download-artifact@v4
                with: {name: dist, path: got}
              - run: cat got/file.txt
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 0, recorder.lines("make")
    assert "hit=false" in recorder.lines("make")
    assert "hello pipedeck" in recorder.lines("make")
    assert "composite said yes" in recorder.lines("make")
    assert "built" in recorder.lines("use")
    shutil.rmtree(tmp_path / "deps")
    recorder, code, _ = await run(path)
    assert "hit=true" in recorder.lines("make")
    assert (tmp_path / "deps" / "d").read_text() == "data\n"


async def test_upload_artifact_leaves_hidden_files_out_unless_asked(tmp_path: Path) -> None:
    """As upload-artifact v4.4+: files and folders starting with `.` are not uploaded unless
    `include-hidden-files: true`; a path with only hidden files is a warning that says so."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          make:
            runs-on: ubuntu-latest
            steps:
              - run: mkdir -p out/.cache && echo a > out/a && echo s > out/.env && echo c > out/.cache/c && echo cov > .coverage
              - uses: actions/upload-artifact@v4
                with: {name: dist, path: out/}
              - uses: actions/upload-artifact@v4
                with: {name: cov, path: .coverage}
              - uses: actions/upload-artifact@v4
                with: {name: cov-kept, path: .coverage, include-hidden-files: true}
          use:
            needs: make
            runs-on: ubuntu-latest
            steps:
              - uses: actions/download-artifact@v4
                with: {path: got}
              - run: find got -type f | sort
        """,
    )
    recorder, code, _ = await run(path)
    assert code == 0, recorder.lines("make")
    assert [line for line in recorder.lines("use") if line.startswith("got/")] == [
        "got/cov-kept/.coverage",
        "got/dist/a",
    ]
    warning = [line for line in recorder.lines("make") if "no files for '.coverage'" in line]
    assert warning and "1 hidden file(s) left out" in warning[0], recorder.lines("make")


async def test_old_runs_state_is_pruned_to_keep_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`.pipedeck/gha/RUN_ID` (job results, uploaded artifacts) is kept for the last
    PIPEDECK_KEEP_RUNS runs, the new one counted; the actions/cache folder is not a run."""
    path = workflow(
        tmp_path, "on: push\njobs:\n  a: {runs-on: ubuntu-latest, steps: [{run: 'true'}]}\n"
    )
    state = tmp_path / ".pipedeck" / "gha"
    old = ["20260101-000000-aaaaaa", "20260102-000000-bbbbbb", "20260103-000000-cccccc"]
    for name in [*old, "cache"]:
        (state / name / "artifacts").mkdir(parents=True)
    monkeypatch.setenv("PIPEDECK_KEEP_RUNS", "2")
    _, code, the_run = await run(path)
    assert code == 0
    assert sorted(p.name for p in state.iterdir()) == sorted([old[-1], the_run.run_id, "cache"])


async def test_setup_python_finds_an_installed_interpreter_or_names_them(tmp_path: Path) -> None:
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          ok:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/setup-python@v5
                with: {python-version: "3.x"}
              - run: python -c "import sys; print('py', sys.version_info[0])"
              - run: |
                  python -c "import sys; print('venv', sys.prefix != sys.base_prefix, sys.prefix)"
                  pip --version
                  pip install --user nothing-at-all 2>&1 || echo "user install refused"
          missing:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/setup-python@v5
                with: {python-version: "2.6"}
        """,
    )
    recorder, _, _ = await run(path)
    lines = recorder.lines("ok")
    assert "py 3" in lines
    venvs = tmp_path / ".pipedeck" / "gha" / "tool-cache" / "python" / "ok"
    (venv,) = venvs.glob("3.*/venv")
    assert f"venv True {venv}" in lines  # pip installs go to a venv, not the user's Python
    assert any(line.startswith("pip ") and str(venv) in line for line in lines)
    assert any("User site-packages are not visible in this virtualenv" in x for x in lines)
    assert "user install refused" in lines
    assert any("making the venv" in line for line in lines)
    assert recorder.final("missing").status == "failed"
    assert any(
        "no installed Python satisfies '2.6'; installed: 3." in line
        for line in recorder.lines("missing")
    )
    again, _, _ = await run(path)  # the venv is made once, and reused
    assert f"venv True {venv}" in again.lines("ok")
    assert not any("making the venv" in line for line in again.lines("ok"))


async def test_setup_python_without_venv_support_uses_the_interpreter_itself(
    tmp_path: Path, fake_tool: FakeTool
) -> None:
    """An interpreter that cannot make a venv (Debian's python3 without python3-venv) is used
    as it is, with a warning saying why."""
    fake = fake_tool(
        "python3.99",
        'case "$1 $2" in\n'
        '  "--version "*) echo "Python 3.99.0";;\n'
        '  "-m venv") echo "Error: ensurepip is not available" >&2; exit 1;;\n'
        f'  *) exec "{sys.executable}" "$@";;\n'
        "esac\n",
    )
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          j:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/setup-python@v5
                with: {python-version: "3.99"}
              - run: python3 --version
        """,
    )
    recorder, code, _ = await run(path)
    lines = recorder.lines("j")
    assert code == 0
    assert any(
        "no venv (Error: ensurepip is not available): steps use" in x and str(fake) in x
        for x in lines
    )
    assert "Python 3.99.0" in lines


async def test_skipped_jobs_and_github_context_from_git(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path)], check=True)
    subprocess.run(
        ["git", "-C", str(tmp_path), "remote", "add", "origin", "git@github.com:acme/shop.git"],
        check=True,
    )
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          info:
            runs-on: ubuntu-latest
            steps:
              - run: echo "${{ github.repository }} ${{ github.ref }} ${{ github.event_name }}"
          mac:
            runs-on: macos-latest
            steps: [{run: echo never}]
          pr-only:
            if: github.event_name == 'pull_request'
            runs-on: ubuntu-latest
            steps: [{run: echo never}]
        """,
    )
    recorder, code, _ = await run(path, Options(event="workflow_dispatch"))
    assert code == 0
    assert "acme/shop refs/heads/main workflow_dispatch" in recorder.lines("info")
    assert recorder.final("mac").status == "skipped"
    assert "a macOS runner is not available here" in (recorder.final("mac").reason or "")
    assert recorder.final("pr-only").status == "skipped"
    assert recorder.final("pr-only").reason == "if: github.event_name == 'pull_request' is false"
    assert "never" not in recorder.lines("mac") + recorder.lines("pr-only")


@pytest.mark.parametrize("fail_fast", [True, False])
async def test_fail_fast_cancels_queued_matrix_instances(tmp_path: Path, fail_fast: bool) -> None:
    path = workflow(
        tmp_path,
        f"""
        on: push
        jobs:
          t:
            runs-on: ubuntu-latest
            strategy:
              fail-fast: {str(fail_fast).lower()}
              max-parallel: 1
              matrix: {{n: [1, 2]}}
            steps: [{{run: 'test ${{{{ matrix.n }}}} = 2'}}]
        """,
    )
    the_run = Run(load_workflow(path).pipeline, jobs=1)
    recorder = Recorder()
    the_run.subscribe(recorder)
    await the_run.execute()
    await the_run.close()
    assert recorder.final("t[n=1]").status == "failed"
    assert recorder.final("t[n=2]").status == ("cancelled" if fail_fast else "succeeded")
    if fail_fast:  # as on GitHub, a queued instance never starts
        assert "running" not in recorder.statuses("t[n=2]")
        assert "fail-fast" in (recorder.final("t[n=2]").reason or "")


async def test_max_parallel_keeps_the_other_instances_queued(tmp_path: Path) -> None:
    """With free slots (--jobs 3), max-parallel 1 still runs one instance at a time, and the
    others are `queued` (not `running`) until it ends."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          t:
            runs-on: ubuntu-latest
            strategy:
              max-parallel: 1
              matrix: {n: [1, 2, 3]}
            steps: [{run: 'sleep 0.2'}]
        """,
    )
    the_run = Run(load_workflow(path).pipeline, jobs=3)
    recorder = Recorder()
    the_run.subscribe(recorder)
    try:
        assert await asyncio.wait_for(the_run.execute(), 60) == 0
    finally:
        await the_run.close()
    running = 0
    for event in recorder.events:
        if isinstance(event, StageStatus) and event.stage.startswith("t["):
            running += {"running": 1, "succeeded": -1}.get(event.status, 0)
            assert running <= 1, recorder.events
    assert all(recorder.statuses(f"t[n={n}]")[:2] == ["queued", "running"] for n in (1, 2, 3))


async def test_fail_fast_cancels_running_matrix_instances(tmp_path: Path) -> None:
    """n=2 is running (its pid on disk) when n=1 fails: its step's processes end, the rest of
    its steps are skipped but for `always()`, and it ends cancelled, long before its sleep."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          t:
            runs-on: ubuntu-latest
            strategy:
              matrix: {n: [1, 2]}
            steps:
              - if: matrix.n == 1
                run: |
                  for i in $(seq 300); do [ -s pid ] && exit 1; sleep 0.1; done
              - if: matrix.n == 2
                run: sleep 120 & echo $! > pid.tmp && mv pid.tmp pid && wait
              - run: echo after
              - if: always()
                run: echo cleanup ${{ job.status }}
        """,
    )
    the_run = Run(load_workflow(path).pipeline, jobs=2)
    recorder = Recorder()
    the_run.subscribe(recorder)
    try:
        await asyncio.wait_for(the_run.execute(), 60)
    finally:
        await the_run.close()
    assert recorder.final("t[n=1]").status == "failed"
    cancelled = recorder.final("t[n=2]")
    assert cancelled.status == "cancelled"
    assert cancelled.reason == "cancelled: another instance of this matrix failed (fail-fast)"
    assert [s[2] for s in steps(recorder, "t[n=2]") if s[2] != "running"] == [
        "skipped",
        "cancelled",
        "skipped",
        "succeeded",
    ]
    assert "cleanup cancelled" in recorder.lines("t[n=2]")
    sleeper = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(sleeper, 0)


async def test_local_reusable_workflow_runs_its_jobs_with_inputs_and_outputs(
    tmp_path: Path,
) -> None:
    workflow(tmp_path, "")  # makes the folder
    (tmp_path / ".github" / "workflows" / "reuse.yml").write_text(
        textwrap.dedent(
            """
            on:
              workflow_call:
                inputs:
                  who: {type: string, default: nobody}
                  times: {type: number, default: 2}
                outputs:
                  greeting: {value: "${{ jobs.greet.outputs.text }}"}
            jobs:
              greet:
                runs-on: ubuntu-latest
                outputs: {text: "${{ steps.s.outputs.text }}"}
                steps:
                  - id: s
                    run: echo "text=hello ${{ inputs.who }} x${{ inputs.times }}" >> "$GITHUB_OUTPUT"
              shout:
                needs: greet
                runs-on: ubuntu-latest
                steps:
                  - run: echo "after greet leak=[$LEAK] own=[$OWN] in $(basename $PWD)"
            env: {OWN: called}
            """
        )
    )
    (tmp_path / "sub").mkdir()
    path = workflow(
        tmp_path,
        """
        on: push
        env: {LEAK: caller}
        defaults: {run: {working-directory: sub}}
        jobs:
          first:
            runs-on: ubuntu-latest
            outputs: {name: "${{ steps.n.outputs.name }}"}
            steps:
              - id: n
                run: echo "name=pipedeck" >> "$GITHUB_OUTPUT" && echo "first leak=[$LEAK] $PWD"
          call:
            needs: first
            uses: ./.github/workflows/reuse.yml
            with:
              who: ${{ needs.first.outputs.name }}
            secrets: inherit
          last:
            needs: call
            runs-on: ubuntu-latest
            steps:
              - run: echo "said ${{ needs.call.outputs.greeting }} (${{ needs.call.result }})"
        """,
    )
    recorder, code, the_run = await run(path)
    assert code == 0
    assert list(the_run.pipeline.stages) == ["first", "call/greet", "call/shout", "call", "last"]
    assert "said hello pipedeck x2 (success)" in recorder.lines("last")
    assert f"first leak=[caller] {tmp_path / 'sub'}" in recorder.lines("first")
    # GitHub gives a called workflow's jobs its own env and defaults, not the caller's
    assert f"after greet leak=[] own=[called] in {tmp_path.name}" in recorder.lines("call/shout")


async def test_event_file_inputs_and_matrix_expressions_in_job_keys(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text('{"pull_request": {"number": 42}}')
    path = workflow(
        tmp_path,
        """
        on:
          workflow_dispatch:
            inputs:
              debug: {type: boolean, default: false}
              level: {type: number, default: 1}
        jobs:
          t:
            runs-on: ubuntu-latest
            continue-on-error: ${{ matrix.experimental }}
            timeout-minutes: ${{ matrix.minutes }}
            strategy:
              matrix:
                include:
                  - {experimental: true, minutes: 2}
                  - {experimental: false, minutes: 3}
            steps:
              - run: |
                  echo "pr=${{ github.event.pull_request.number }} debug=${{ inputs.debug }} level=${{ inputs.level }}"
                  test "${{ inputs.debug && 'on' || 'off' }}" = on
                  test "$(python3 -c 'import json,os; print(json.load(open(os.environ["GITHUB_EVENT_PATH"]))["pull_request"]["number"])')" = 42
        """,
    )
    options = Options(event="pull_request", event_file=str(event), inputs={"debug": "true"})
    recorder, code, the_run = await run(path, options)
    assert code == 0
    stages = the_run.pipeline.stages
    assert stages["t[experimental=true,minutes=2]"].allow_failure is True
    assert stages["t[experimental=false,minutes=3]"].allow_failure is False
    assert stages["t[experimental=false,minutes=3]"].timeout == 180
    assert "pr=42 debug=true level=1" in recorder.lines("t[experimental=true,minutes=2]")


async def test_dispatch_inputs_are_in_the_event_payload_as_strings(tmp_path: Path) -> None:
    path = workflow(
        tmp_path,
        """
        on:
          workflow_dispatch:
            inputs:
              debug: {type: boolean, default: false}
              level: {type: number, default: 1}
        jobs:
          t:
            runs-on: ubuntu-latest
            steps:
              - run: |
                  echo "debug=${{ github.event.inputs.debug }} level=${{ github.event.inputs.level }}"
                  python3 -c 'import json,os; print(json.load(open(os.environ["GITHUB_EVENT_PATH"]))["inputs"])'
        """,
    )
    options = Options(event="workflow_dispatch", inputs={"debug": "true"})
    recorder, code, _ = await run(path, options)
    assert code == 0
    assert "debug=true level=1" in recorder.lines("t")
    assert "{'debug': 'true', 'level': '1'}" in recorder.lines("t")


async def test_local_node_action_runs_with_node(tmp_path: Path) -> None:
    if shutil.which("node") is None:  # like the SSH tests: CI must have it, a dev machine may not
        if os.environ.get("CI") == "true":
            pytest.fail("node is not installed (needed for node actions)")
        pytest.skip("node is not installed on this dev machine")
    action = tmp_path / "nodeact"
    action.mkdir()
    (action / "action.yml").write_text(
        "name: n\ninputs: {who: {default: x}}\noutputs: {said: {description: d}}\n"
        "runs: {using: node20, main: index.js}\n"
    )
    (action / "index.js").write_text(
        "const fs = require('fs');\n"
        "console.log('node says hi ' + process.env.INPUT_WHO);\n"
        "fs.appendFileSync(process.env.GITHUB_OUTPUT, 'said=yes\\n');\n"
    )
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          n:
            runs-on: ubuntu-latest
            steps:
              - id: a
                uses: ./nodeact
                with: {who: pipedeck}
              - run: echo "said ${{ steps.a.outputs.said }}"
              - run: echo "${{ fromJSON('{nope') }}"
        """,
    )
    recorder, code, _ = await run(path)
    assert "node says hi pipedeck" in recorder.lines("n")
    assert "said yes" in recorder.lines("n")
    assert code == 1  # the bad fromJSON fails its step with a message, not a traceback
    assert any("fromJSON(): not JSON" in line for line in recorder.lines("n"))
    assert not any("Traceback" in line for line in recorder.lines("n"))


async def test_cancel_leaves_no_step_process(tmp_path: Path) -> None:
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          long:
            runs-on: ubuntu-latest
            steps:
              - run: echo started; sleep 300 & sleep 300
        """,
    )
    the_run = Run(load_workflow(path).pipeline)
    recorder = Recorder()
    the_run.subscribe(recorder)
    started = asyncio.Event()
    the_run.subscribe(
        lambda e: started.set() if isinstance(e, LogLines) and "started" in e.lines else None
    )
    task = asyncio.create_task(the_run.execute())
    await asyncio.wait_for(started.wait(), 30)
    the_run.cancel_all()
    await asyncio.wait_for(task, 60)
    await the_run.close()
    assert recorder.final("long").status == "cancelled"
    assert marked_pids(the_run.run_id) == []


async def test_each_step_runs_its_own_script_in_its_shell(tmp_path: Path) -> None:
    """The script file is reused from step to step: a short script after a long one must not
    run the long one's tail; a python step after bash ones; a shell not installed is named."""
    path = workflow(
        tmp_path,
        """
        on: push
        jobs:
          s:
            runs-on: ubuntu-latest
            steps:
              - run: |
                  echo long one
                  echo "long tail ran $((1 + 1))"
              - run: echo short
              - shell: python
                run: print("py", 6 * 7)
              - run: echo "after python"
              - shell: no-such-shell-here {0}
                run: echo never
        """,
    )
    recorder, code, _ = await run(path)
    lines = recorder.lines("s")
    assert code == 1
    assert lines.count("long tail ran 2") == 1
    assert "short" in lines and "py 42" in lines and "after python" in lines
    assert any("cannot run 'no-such-shell-here': not found in PATH" in line for line in lines)
    assert [s[2] for s in steps(recorder, "s") if s[2] != "running"] == [
        "succeeded",
        "succeeded",
        "succeeded",
        "succeeded",
        "failed",
    ]
