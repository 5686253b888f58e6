"""Fixed costs: a one-stage pipeline vs doit (whole process), and `pipedeck --help`.

Prints a markdown section. Goals (issue 2, part 6): one stage <= 1.0x doit; `--help` < 150 ms.
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
HELP_GOAL = 0.150
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
            f"Ratio pipedeck / doit: {verdict(ratio, 1.0)}.",
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


def main() -> None:
    """Print the section."""
    print("\n\n".join(["## Start-up", one_stage(), help_time()]))


if __name__ == "__main__":
    main()
