"""Profile one in-process `pipedeck ARGS...` run with cProfile; write the top functions as JSON.

Usage: python bench/_profile.py OUT.json TOP ARGS...   (ARGS as given to `pipedeck`)
Used by `_harness.profile` to explain a missed goal; stdout is the run's own output. Writes the
TOP functions by own time, and pipedeck's own TOP functions by cumulative time.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STDLIB = sysconfig.get_paths()["stdlib"]


def _where(filename: str, line: int, name: str) -> str:
    """A short `file:line(function)`: repo-relative, site-packages-relative or stdlib-relative."""
    if filename.startswith(str(ROOT)) and "site-packages" not in filename:
        filename = str(Path(filename).relative_to(ROOT))
    elif "site-packages/" in filename:
        filename = filename.split("site-packages/", 1)[1]
    elif filename.startswith(STDLIB):
        filename = filename[len(STDLIB) + 1 :]
    return f"{filename}:{line}({name})" if line else name


def main() -> None:
    """Run pipedeck under the profiler and dump its hot functions."""
    out, top, args = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    from tui.cli import main as pipedeck_main

    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    try:
        pipedeck_main(args)
    except SystemExit:
        pass
    finally:
        profiler.disable()
    total = time.perf_counter() - t0
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    by_own = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    ours = [kv for kv in stats.items() if _is_ours(kv[0][0])]
    by_cum = sorted(ours, key=lambda kv: kv[1][3], reverse=True)[:top]
    data = {"total": total, "own": _rows(by_own), "ours": _rows(by_cum)}
    out.write_text(json.dumps(data))


def _is_ours(filename: str) -> bool:
    """True for a file of pipedeck's own packages."""
    return any(filename.startswith(str(ROOT / pkg)) for pkg in ("engine", "tui"))


def _rows(entries: list) -> list[dict]:
    """JSON rows for `_harness.profile`."""
    return [
        {"where": _where(*func), "calls": calls, "tottime": tottime, "cumtime": cumtime}
        for func, (_prim, calls, tottime, cumtime, _callers) in entries
    ]


if __name__ == "__main__":
    main()
