"""GitHub Actions workflows: `validate` of a 1000-line workflow, and a 20-step job's overhead.

Prints a markdown section. Goals (issue 12): validate < 300 ms (whole process); a 20-step job
<= 1.5x the same 20 commands as one bash script in a one-stage pipeline.
"""

from __future__ import annotations

import shutil
import subprocess

from _harness import BenchError, Case, alternate, fmt_s, pipedeck, table, verdict, workdir

ROUNDS = 10
BUDGET = 40.0
VALIDATE_GOAL = 0.300
STEP_GOAL = 1.5
STEPS = 20


def big_workflow(lines: int = 1000) -> str:
    """A workflow of about `lines` lines: jobs with a matrix, needs, expressions and actions."""
    out = ["name: big", "on: [push, pull_request]", "env:", "  TOP: '1'", "jobs:"]
    job = 0
    while len(out) < lines:
        needs = f"    needs: [job{job - 1}]" if job else "    runs-on: ubuntu-latest"
        out += [
            f"  job{job}:",
            needs,
            "    runs-on: ${{ matrix.os }}",
            "    strategy:",
            "      matrix:",
            "        os: [ubuntu-latest]",
            "        python: ['3.11', '3.12']",
            "    steps:",
            "      - uses: actions/checkout@v4",
            "      - uses: actions/setup-python@v5",
            "        with: {python-version: '${{ matrix.python }}'}",
            "      - name: Test ${{ matrix.python }}",
            "        if: github.event_name == 'push' && !cancelled()",
            "        run: |",
            "          echo ${{ format('{0}-{1}', matrix.os, matrix.python) }}",
            "          pytest -q",
        ]
        if job == 0:
            out.remove("    runs-on: ubuntu-latest")
        job += 1
    return "\n".join(out) + "\n"


def validate() -> str:
    out = ["### `validate` of a 1000-line workflow, whole process", ""]
    tmp = workdir("gha-validate")
    try:
        folder = tmp / ".github" / "workflows"
        folder.mkdir(parents=True)
        text = big_workflow()
        (folder / "big.yml").write_text(text)
        subprocess.run(["git", "init", "-q", str(tmp)], check=True)
        results = alternate(
            [
                Case(
                    "pipedeck validate big.yml",
                    [pipedeck(), "validate", str(folder / "big.yml")],
                    tmp,
                )
            ],
            ROUNDS,
            BUDGET,
        )
        (ours,) = results.values()
        out += [
            table(results),
            "",
            f"{text.count(chr(10))} lines, {text.count('  job')} jobs. Wall median "
            f"{fmt_s(ours.median)} against the goal of {fmt_s(VALIDATE_GOAL)}: "
            f"{verdict(ours.median / VALIDATE_GOAL, 1.0)} of the goal; CPU median "
            f"{fmt_s(ours.cpu_median)}: {verdict(ours.cpu_median / VALIDATE_GOAL, 1.0)}.",
        ]
    except BenchError as err:
        out.append(f"Not measured: {err}.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return "\n".join(out)


def steps() -> str:
    out = [f"### A {STEPS}-step job vs the same commands as one bash script", ""]
    tmp = workdir("gha-steps")
    try:
        commands = [f"echo step {i} && test -d ." for i in range(STEPS)]
        folder = tmp / ".github" / "workflows"
        folder.mkdir(parents=True)
        workflow = ["on: push", "jobs:", "  job:", "    runs-on: ubuntu-latest", "    steps:"]
        workflow += [f"      - run: {command}" for command in commands]
        (folder / "ci.yml").write_text("\n".join(workflow) + "\n")
        script = "\n".join(["set -e", *commands]) + "\n"
        (tmp / "pipedeck.yaml").write_text(
            "version: 1\nstages:\n  job:\n    run: |\n"
            + "".join(f"      {line}\n" for line in script.splitlines())
        )
        shells = "".join(f"      bash -e -c '{command}'\n" for command in commands)
        (tmp / "shells.yaml").write_text(f"version: 1\nstages:\n  job:\n    run: |\n{shells}")
        subprocess.run(["git", "init", "-q", str(tmp)], check=True)
        results = alternate(
            [
                Case(
                    f"pipedeck run ci.yml ({STEPS} steps)",
                    [pipedeck(), "run", str(folder / "ci.yml")],
                    tmp,
                ),
                Case(
                    "pipedeck run pipedeck.yaml (one script)",
                    [pipedeck(), "run", "pipedeck.yaml"],
                    tmp,
                ),
                Case(
                    f"pipedeck run shells.yaml (one stage, {STEPS} x bash -e -c)",
                    [pipedeck(), "run", "shells.yaml"],
                    tmp,
                ),
            ],
            ROUNDS,
            BUDGET,
        )
        ours, peer, shells_only = results.values()
        ratio = ours.median / peer.median
        cpu_ratio = ours.cpu_median / peer.cpu_median
        per_step = (ours.median - peer.median) / STEPS
        floor = shells_only.cpu_median / peer.cpu_median
        out += [
            table(results),
            "",
            f"Ratio (wall): {verdict(ratio, STEP_GOAL)}; CPU: {cpu_ratio:.2f}x; about "
            f"{fmt_s(per_step)} of wall time per step. A shell per step alone (the third row, "
            f"no Python in between) costs {floor:.2f}x the one script in CPU: that much of the "
            "ratio is GitHub's semantics (every step is a new shell). Each step is what "
            "GitHub's runner does too: the script written to a file, run by `bash -e {0}` in "
            "its own process group, its output read through the workflow-command filter, and "
            "the GITHUB_ENV / OUTPUT / PATH / STEP_SUMMARY files created and read back; the "
            "job runner is one more Python process per job.",
        ]
    except BenchError as err:
        out.append(f"Not measured: {err}.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return "\n".join(out)


if __name__ == "__main__":
    print("## GitHub Actions workflows\n")
    print(validate())
    print()
    print(steps())
