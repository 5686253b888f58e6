"""Output throughput: one stage printing 5,000,000 lines, headless to /dev/null, vs seq | sed.

Prints a markdown section. Goal (issue 10): <= 1.2x `seq 1 5000000 | sed 's/^/[x] /'`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from _harness import BenchError, Case, alternate, fmt_s, pipedeck, profile, table, verdict, workdir

LINES = 5_000_000
PROFILE_LINES = 500_000  # the profiler multiplies per-line costs; a tenth shows the same shape
ROUNDS = 5
BUDGET = 120.0  # seconds of timed rounds at most (see _harness.alternate)
GOAL = 1.2


def pipeline(lines: int) -> str:
    """A one-stage pipeline printing `lines` lines."""
    return f"version: 1\nname: flood\nstages:\n  x:\n    run: seq 1 {lines}\n"


def stored_bytes(state: Path) -> int:
    """Bytes under `.pipedeck/logs` (log plus index), to show the whole output was kept."""
    return sum(p.stat().st_size for p in (state / "logs").rglob("*") if p.is_file())


def main() -> None:
    """Print the section."""
    out = [f"## Throughput: one stage printing {LINES:,} lines, headless to /dev/null", ""]
    tmp = workdir("flood")
    state = tmp / ".pipedeck"
    try:
        (tmp / "pipedeck.yaml").write_text(pipeline(LINES))
        run = ["run", "pipedeck.yaml", "--format", "plain"]
        cases = [
            Case(
                "pipedeck run --format plain",
                [pipedeck(), *run],
                tmp,
                reset=lambda: shutil.rmtree(state, ignore_errors=True),
            ),
            Case("seq | sed 's/^/[x] /'", ["bash", "-c", f"seq 1 {LINES} | sed 's/^/[x] /'"], tmp),
        ]
        results = alternate(cases, ROUNDS, BUDGET)
        ours, peer = results.values()
        ratio = ours.median / peer.median
        out += [
            table(results),
            "",
            f"Ratio pipedeck / (seq | sed): {verdict(ratio, GOAL)}.",
            "",
            f"pipedeck moves {LINES / ours.median / 1e6:.2f} M lines/s "
            f"({fmt_s(ours.median / LINES * 1e6)} per million lines) and stores the whole "
            f"output as it goes ({stored_bytes(state) / 1e6:.0f} MB of log and line index "
            "after one run), then prints each line with its `[x] ` prefix; sed only prefixes "
            "and prints. Each run starts on an empty `.pipedeck/` (removed before each try, "
            "outside the timing).",
        ]
        if ratio > GOAL:
            small = tmp / "small"
            small.mkdir()
            (small / "pipedeck.yaml").write_text(pipeline(PROFILE_LINES))
            out += ["", f"Profiled on {PROFILE_LINES:,} lines:", "", profile(run, small)]
    except BenchError as err:
        out.append(f"Not measured: {err}.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n".join(out))


if __name__ == "__main__":
    main()
