"""Fixed costs: a one-stage pipeline vs doit (whole process), `pipedeck --help`, and `validate`
of a 10,000-stage pipeline.

Prints a markdown section. Goals (issue 10): one stage <= 1.0x doit; `--help` <= 80 ms; `validate`
of 10,000 stages < 1 s.
"""

from __future__ import annotations

import shutil
import sys

from _harness import (
    BenchError,
    Case,
    alternate,
    ensure_doit,
    fmt_s,
    import_top,
    pipedeck,
    profile,
    table,
    verdict,
    workdir,
)

ROUNDS = 10
BUDGET = 40.0  # seconds of timed rounds at most, per comparison (see _harness.alternate)
HELP_GOAL = 0.080
VALIDATE_GOAL = 1.0
STAGES = 10_000
PIPELINE = "version: 1\nname: one\nstages:\n  hi:\n    run: echo hi\n"
DODO = 'def task_hi():\n    return {"actions": ["echo hi"], "verbosity": 2}\n'


def one_stage() -> str:
    """`pipedeck run` of `echo hi` vs `doit` of the same action."""
    out = ["### One stage (`echo hi`), whole process, vs doit", ""]
    try:
        doit = ensure_doit()
    except BenchError as err:
        return "\n".join([*out, f"Not measured: {err}."])
    tmp = workdir("startup")
    try:
        (tmp / "pipedeck.yaml").write_text(PIPELINE)
        (tmp / "dodo.py").write_text(DODO)
        run = ["run", "pipedeck.yaml", "--format", "plain"]
        results = alternate(
            [
                Case("pipedeck run (1 stage)", [pipedeck(), *run], tmp),
                Case("doit (1 task)", [doit], tmp),
            ],
            ROUNDS,
            BUDGET,
        )
        ours, peer = results.values()
        ratio = ours.median / peer.median
        out += [
            table(results),
            "",
            f"Ratio pipedeck / doit: {verdict(ratio, 1.0)} (CPU: "
            f"{ours.cpu_median / peer.cpu_median:.3g}x).",
            "",
            "Both start a Python interpreter, load their task file and run `echo hi` "
            "through a shell (pipedeck: `bash -e -o pipefail -c`, doit: `/bin/sh -c`); "
            "pipedeck also records the run (history database, log file) in `.pipedeck/`.",
        ]
        if ratio > 1.0:
            out += ["", import_top(run, tmp), "", profile(run, tmp)]
    except BenchError as err:
        out.append(f"Not measured: {err}.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return "\n".join(out)


def help_time() -> str:
    """`pipedeck --help` vs the floor: the same interpreter starting and doing nothing."""
    out = ["### `pipedeck --help`", ""]
    tmp = workdir("help")
    try:
        results = alternate(
            [
                Case("pipedeck --help", [pipedeck(), "--help"], tmp),
                Case("python -c pass (same venv)", [sys.executable, "-c", "pass"], tmp),
            ],
            ROUNDS,
            BUDGET,
        )
        ours, floor = results.values()
        out += [
            table(results),
            "",
            f"Median: {verdict(ours.median * 1000, HELP_GOAL * 1000, ' ms')}; "
            f"{fmt_s(ours.median - floor.median)} above the interpreter's own start-up.",
            "",
            import_top(["--help"], tmp),
        ]
    except BenchError as err:
        out.append(f"Not measured: {err}.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return "\n".join(out)


def validate_big() -> str:
    """`pipedeck validate` of 10,000 independent stages, whole process."""
    out = [f"### `validate` of {STAGES:,} stages, whole process", ""]
    tmp = workdir("validate")
    try:
        lines = ["version: 1", "stages:"]
        lines += [f"  pkg{i}: {{run: 'true', inputs: ['pkg{i}/**']}}" for i in range(STAGES)]
        (tmp / "pipedeck.yaml").write_text("\n".join(lines) + "\n")
        results = alternate(
            [
                Case(f"pipedeck validate ({STAGES:,} stages)", [pipedeck(), "validate"], tmp),
                Case("python -c pass (same venv)", [sys.executable, "-c", "pass"], tmp),
            ],
            ROUNDS,
            BUDGET,
        )
        ours = next(iter(results.values()))
        out += [
            table(results),
            "",
            f"Median: {verdict(ours.median, VALIDATE_GOAL, ' s')}.",
        ]
        if ours.median > VALIDATE_GOAL:
            out += ["", profile(["validate"], tmp)]
    except BenchError as err:
        out.append(f"Not measured: {err}.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return "\n".join(out)


def main() -> None:
    """Print the section."""
    print("\n\n".join(["## Start-up", one_stage(), help_time(), validate_big()]))


if __name__ == "__main__":
    main()
