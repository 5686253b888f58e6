"""Scheduling overhead: 1000 (and 10,000) independent `true` stages, two at a time, vs make.

Prints a markdown section. Goal (issue 10): pipedeck --jobs 2 <= 2.0x make -j2, at 1000 stages
(also against go-task when a binary can be had) and at 10,000.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from _harness import (
    BenchError,
    Case,
    alternate,
    find_task,
    fmt_s,
    pipedeck,
    profile,
    table,
    verdict,
    workdir,
)

STAGES = 1000
BIG = 10_000  # the same against make only, fewer rounds
BIG_ROUNDS = 3
PROFILE_STAGES = 300  # enough to show the per-stage costs, in a third of the time
ROUNDS = 5
BUDGET = 150.0  # seconds of timed rounds at most (see _harness.alternate)
GOAL = 2.0


def pipeline(names: list[str]) -> str:
    """A pipeline of independent `true` stages."""
    return "version: 1\nname: fanout\nstages:\n" + "".join(
        f'  {n}:\n    run: "true"\n' for n in names
    )


def makefile(names: list[str]) -> tuple[str, str]:
    """(the phony header, the targets) of a Makefile running `true` per name."""
    targets = "".join(f"{n}:\n\ttrue\n" for n in names)
    return f".PHONY: all {' '.join(names)}\nall: {' '.join(names)}\n", targets


def write_files(tmp: Path) -> list[str]:
    """The same 1000 jobs as a pipeline, two Makefiles and a Taskfile, and the 10,000-job pair;
    returns the job names."""
    names = [f"t{i:04d}" for i in range(STAGES)]
    (tmp / "pipedeck.yaml").write_text(pipeline(names))
    (tmp / "profile.yaml").write_text(pipeline(names[:PROFILE_STAGES]))
    phony, targets = makefile(names)
    (tmp / "Makefile").write_text(phony + targets)
    big = [f"t{i:05d}" for i in range(BIG)]
    (tmp / "big.yaml").write_text(pipeline(big))
    (tmp / "big.mk").write_text("".join(makefile(big)))
    (tmp / "bash.mk").write_text(
        "SHELL := /bin/bash\n.SHELLFLAGS := -e -o pipefail -c\n" + phony + targets
    )
    (tmp / "Taskfile.yml").write_text(
        "version: '3'\ntasks:\n  default:\n    deps: ["
        + ", ".join(names)
        + "]\n"
        + "".join(f"  {n}:\n    cmds: ['true']\n" for n in names)
    )
    return names


def main() -> None:
    """Print the section."""
    out = [f"## Fan-out: {STAGES} independent `true` stages, 2 at a time", ""]
    tmp = workdir("fanout")
    try:
        write_files(tmp)
        run = ["run", "pipedeck.yaml", "--jobs", "2", "--format", "plain"]
        cases = [
            Case("pipedeck run --jobs 2", [pipedeck(), *run], tmp),
            Case("make -j2", ["make", "-j2", "-f", "Makefile"], tmp),
            Case(
                "make -j2, recipes through bash (reference)", ["make", "-j2", "-f", "bash.mk"], tmp
            ),
        ]
        task = find_task()
        if task:
            cases.append(Case("go-task -C 2", [task, "-C", "2"], tmp))
        results = alternate(cases, ROUNDS, BUDGET)
        ours, make, make_bash = (results[c.name] for c in cases[:3])
        ratio = ours.median / make.median
        per_stage = (ours.median - make.median) / STAGES
        out += [
            table(results),
            "",
            f"Ratio pipedeck / make: {verdict(ratio, GOAL)}.",
            "",
            f"Per stage, pipedeck costs {fmt_s(ours.median / STAGES)} of wall time and "
            f"{fmt_s(ours.cpu_median / STAGES)} of CPU (make: {fmt_s(make.median / STAGES)}"
            f" and {fmt_s(make.cpu_median / STAGES)}), i.e. {per_stage * 1000:.2f} ms more.",
            "",
            "What each does per job: make forks and execs `/usr/bin/true` directly (a recipe "
            "without shell syntax skips the shell); so does pipedeck (a one-command script that "
            "bash would exec as is, `engine/executors/direct.py`), in a new session, with "
            "glibc's `posix_spawn` from a worker thread (which also looks the command up), "
            "its pipes and exit (a pidfd) watched through one epoll set; it asks the cache "
            "(which answers on the loop: the stage declares no inputs), "
            "publishes three status events, records two in the history (batched "
            "transactions), lists the attempt in its run's `.silent` log index (no output: no "
            "log files) and tells the watchdog shell its process group. The reference row "
            "runs make's recipes through `bash -e -o pipefail -c`, the shell pipedeck uses "
            "for any other script.",
        ]
        if task:
            gt = results[cases[3].name]
            out += [
                "",
                f"go-task: pipedeck / go-task = {ours.median / gt.median:.2f}x. go-task "
                "runs each `true` in its embedded shell interpreter (mvdan/sh), where `true` "
                "is a builtin: it starts no process at all.",
            ]
        else:
            out += [
                "",
                "go-task: no `task` binary could be had (not on PATH; the PyPI wheel "
                "`go-task-bin` could not be downloaded; npm's `@go-task/cli` downloads from "
                "GitHub at install time, which this machine cannot reach): not compared.",
            ]
        out += [
            "",
            f"make with recipes through bash costs {make_bash.median / make.median:.2f}x "
            "plain make.",
        ]
        out += ["", *big_case(tmp)]
        if ratio > GOAL:
            out += [
                "",
                f"Profiled on {PROFILE_STAGES} stages:",
                "",
                profile(["run", "profile.yaml", *run[2:]], tmp),
            ]
    except BenchError as err:
        out.append(f"Not measured: {err}.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n".join(out))


def big_case(tmp: Path) -> list[str]:
    """The 10,000-stage run against make, each pipedeck try on an empty `.pipedeck/`."""
    state = tmp / ".pipedeck"
    cases = [
        Case(
            f"pipedeck run --jobs 2 ({BIG:,} stages)",
            [pipedeck(), "run", "big.yaml", "--jobs", "2", "--format", "plain"],
            tmp,
            reset=lambda: shutil.rmtree(state, ignore_errors=True),
        ),
        Case(f"make -j2 ({BIG:,} targets)", ["make", "-j2", "-f", "big.mk"], tmp),
    ]
    results = alternate(cases, BIG_ROUNDS, warm_up=False)  # ~15 s a try: no warm-up needed
    ours, make = (results[c.name] for c in cases)
    return [
        f"### {BIG:,} stages",
        "",
        table(results),
        "",
        f"Ratio pipedeck / make: {verdict(ours.median / make.median, GOAL)}; per stage "
        f"{fmt_s(ours.median / BIG)} of wall time (make: {fmt_s(make.median / BIG)}).",
    ]


if __name__ == "__main__":
    main()
