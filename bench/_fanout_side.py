"""Side by side: the 1000-stage fan-out of two code trees against `make -j2`, alternating.

Usage: python bench/_fanout_side.py ROUNDS OLD_TREE [NEW_TREE] [--stages N]

OLD_TREE and NEW_TREE are checkouts holding `engine/` and `tui/` (say `git archive COMMIT engine
tui | tar -x -C /tmp/old`); NEW_TREE defaults to this repository. Both run as whole processes
from this venv, the tree picked by PYTHONPATH, each in a folder of its own whose `.pipedeck/`
is kept between tries (as `fanout_bench.py` keeps it: the pipeline's load cache is warm).
Prints each case's median wall and CPU time (the process and its descendants), its ratios to
make, and the load average before and after: on a shared machine CPU time is the steadier
figure. Not a bench module (`run.py` skips files starting with `_`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from _harness import ROOT, Case, alternate
from fanout_bench import makefile, pipeline

CODE = "import sys; from tui.cli import main; sys.exit(main())"


def main() -> None:
    """Time the three cases and print the comparison."""
    parser = argparse.ArgumentParser()
    parser.add_argument("rounds", type=int)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path, nargs="?", default=ROOT)
    parser.add_argument("--stages", type=int, default=1000)
    args = parser.parse_args()
    names = [f"t{i:05d}" for i in range(args.stages)]
    tmp = Path(tempfile.mkdtemp(prefix="pipedeck-side-"))
    cases = []
    for label, tree in (("old", args.old), ("new", args.new)):
        folder = tmp / label
        folder.mkdir()
        (folder / "pipedeck.yaml").write_text(pipeline(names))
        argv = ["env", f"PYTHONPATH={tree.resolve()}", sys.executable, "-c", CODE]
        run = ["run", "pipedeck.yaml", "--jobs", "2", "--format", "plain"]
        cases.append(Case(f"{label} ({tree})", [*argv, *run], folder))
    (tmp / "Makefile").write_text("".join(makefile(names)))
    cases.append(Case("make -j2", ["make", "-j2", "-f", "Makefile"], tmp))
    before = os.getloadavg()[0]
    results = alternate(cases, args.rounds)
    after = os.getloadavg()[0]
    make = results["make -j2"]
    print(f"{args.stages} stages, {args.rounds} rounds, load average {before:.1f} -> {after:.1f}")
    for name, s in results.items():
        print(
            f"{name}: wall {s.median:.2f} s, CPU {s.cpu_median:.2f} s; "
            f"/ make: wall {s.median / make.median:.2f}x, CPU {s.cpu_median / make.cpu_median:.2f}x"
        )


if __name__ == "__main__":
    main()
