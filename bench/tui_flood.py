"""The TUI under a flood: one stage printing 2,000,000 lines while the app runs headless.

Four cases, each a whole child process, run alternately for a few rounds:

- `pipedeck run`: the same flood headless (`--format plain` to /dev/null), whole-process wall.
- headless in-process: the same `Run` with the plain reporter to /dev/null and no app, timed
  like the app cases (`run_started` to `run_finished`, startup excluded): the 1.00x base.
- pipedeck TUI: `PipedeckApp` driven by Pilot at 160x48, following the flooding stage's log,
  while a key (`down`/`up`) is pressed every 250 ms.
- pipedeck TUI with the merged log (`m`) open, following every stage's lines interleaved.
- Textual `Log`: the reference, a `Log` widget fed every `LogLines` chunk of the same run.

Measured in the TUI cases: event-loop lag (a 10 ms sleep loop measuring its own lateness),
time from a key press until the app has processed it and is idle again, peak RSS and its growth
over the idle app, and the run's wall time (`run_started` to `run_finished`).

Usage: python bench/tui_flood.py [--lines N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import Case, pipedeck, time_once, workdir

PIPELINE = """\
version: 1
name: flood
stages:
  flood:
    run: seq 1 {lines} | sed 's/^/flood line /'
  quiet:
    run: "true"
"""
KEY_EVERY = 0.25
BUDGET = 120.0  # seconds
LAG_TICK = 0.01


def rss_mb() -> float:
    """Current resident set size of this process, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def key_latency(app: object, key: str) -> float:
    """Seconds from a key press until the tree's cursor has moved and the screen repainted."""
    from textual import events
    from textual.widgets import Tree

    tree = app.screen.query_one(Tree)  # type: ignore[attr-defined]
    before = tree.cursor_line
    t = time.perf_counter()
    app.post_message(events.Key(key, None))  # type: ignore[attr-defined]
    while tree.cursor_line == before:
        if time.perf_counter() - t > 10:
            raise SystemExit(f"tui_flood: the key {key!r} did not move the cursor")
        await asyncio.sleep(0.001)
    painted = asyncio.Event()
    tree.call_after_refresh(painted.set)
    await painted.wait()
    return time.perf_counter() - t


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def measure(kind: str, folder: Path) -> dict[str, float]:
    """Run the flood under the app `kind` (`tui` or `log`); return the measurements."""
    from textual.app import App, ComposeResult
    from textual.widgets import Log

    from engine.events import LogLines, RunFinished, RunStarted
    from engine.loader import load
    from tui.app import PipedeckApp, tui_session

    run = tui_session(load(folder / "pipedeck.yaml")).new_run()
    marks: dict[str, float] = {}

    def on_event(event: object) -> None:
        if isinstance(event, RunStarted):
            marks["start"] = time.perf_counter()
        elif isinstance(event, RunFinished):
            marks["end"] = time.perf_counter()

    run.subscribe(on_event)
    if kind == "headless":
        from tui.console import PlainReporter

        with open(os.devnull, "w") as sink:
            run.subscribe(PlainReporter(sink))
            await run.execute()
        await run.close()
        return {"wall": marks["end"] - marks["start"]}
    app: App[int]
    if kind in ("tui", "merged"):
        app = PipedeckApp(run, start=False)
    else:

        class LogApp(App[int]):
            def compose(self) -> ComposeResult:
                yield Log()

        app = LogApp()
        run.subscribe(
            lambda e: app.query_one(Log).write_lines(e.lines) if isinstance(e, LogLines) else None
        )

    lags: list[float] = []
    keys: list[float] = []
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.5)
        idle_rss = rss_mb()
        stop = asyncio.Event()

        async def sample_lag() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                await asyncio.sleep(LAG_TICK)
                lags.append(time.perf_counter() - t - LAG_TICK)

        sampler = asyncio.create_task(sample_lag())
        if kind == "merged":
            await pilot.press("m")
        if kind in ("tui", "merged"):
            app.run_screen._execute()  # type: ignore[attr-defined]
        else:
            app.run_worker(run.execute(), exit_on_error=False)
        flip = False
        while "end" not in marks:
            await asyncio.sleep(KEY_EVERY)
            if kind == "tui":
                keys.append(await key_latency(app, "up" if flip else "down"))
                flip = not flip
        stop.set()
        await sampler
        await run.close()
    return {
        "wall": marks["end"] - marks["start"],
        "lag_p50": percentile(lags, 0.5),
        "lag_p99": percentile(lags, 0.99),
        "key_p50": percentile(keys, 0.5) if keys else float("nan"),
        "key_max": max(keys, default=float("nan")),
        "rss_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_growth": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - idle_rss,
    }


def child(kind: str, folder: Path) -> dict[str, float]:
    """One measurement in a fresh process (so that RSS is this case's alone)."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(folder)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if out.returncode != 0:
        raise SystemExit(f"tui_flood: the {kind} case failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "DIR"))
    args = parser.parse_args()
    if args.child:
        kind, folder = args.child
        print(json.dumps(asyncio.run(measure(kind, Path(folder)))))
        return

    folder = workdir("tui-flood")
    (folder / "pipedeck.yaml").write_text(PIPELINE.format(lines=args.lines))
    headless = Case("pipedeck run", [pipedeck(), "run", "--format", "plain"], folder)
    runs: dict[str, list[dict[str, float]]] = {"headless": [], "tui": [], "merged": [], "log": []}
    walls: list[float] = []
    began = time.perf_counter()
    for _ in range(args.rounds):  # bench/run.py allows 240 s: start no round after BUDGET
        if walls and time.perf_counter() - began > BUDGET:
            break
        walls.append(time_once(headless)[0])
        for kind in runs:
            runs[kind].append(child(kind, folder))
    shutil.rmtree(folder, ignore_errors=True)

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[kind])

    base = med("headless", "wall")

    print(f"## TUI under a log flood ({args.lines:,} lines)\n")
    print(
        "One stage prints the lines while the app runs headless at 160x48, following its log; "
        f"a key is pressed every {KEY_EVERY * 1000:.0f} ms. `finish` is `run_started` to "
        "`run_finished` (startup excluded) except for the whole `pipedeck run` process. "
        f"Medians of {len(walls)} rounds, cases alternated.\n"
    )
    print(
        "| case | finish | vs headless | loop lag p50 | loop lag p99 | key to repaint p50 | "
        "key to repaint max | peak RSS | RSS growth |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| `pipedeck run` (whole process) | {statistics.median(walls):.2f} s | "
        f"{statistics.median(walls) / base:.2f}x | | | | | | |"
    )
    print(f"| headless, in-process (base) | {base:.2f} s | 1.00x | | | | | | |")
    for kind, name in (
        ("tui", "pipedeck TUI"),
        ("merged", "pipedeck TUI, merged log open"),
        ("log", "Textual `Log` (reference)"),
    ):
        wall = med(kind, "wall")
        keys = (
            f"{med(kind, 'key_p50') * 1000:.0f} ms | {med(kind, 'key_max') * 1000:.0f} ms"
            if kind == "tui"
            else "— | —"
        )
        print(
            f"| {name} | {wall:.2f} s | {wall / base:.2f}x | "
            f"{med(kind, 'lag_p50') * 1000:.1f} ms | {med(kind, 'lag_p99') * 1000:.1f} ms | "
            f"{keys} | {med(kind, 'rss_peak'):.0f} MiB | {med(kind, 'rss_growth'):+.0f} MiB |"
        )
    tui_ratio = med("tui", "wall") / base
    merged_ratio = med("merged", "wall") / base
    print(
        f"\nGoals: finish within 1.5x of headless ({tui_ratio:.2f}x, merged log open "
        f"{merged_ratio:.2f}x: {'met' if max(tui_ratio, merged_ratio) <= 1.5 else 'NOT met'}); "
        "a key press handled within 100 ms "
        f"(max {med('tui', 'key_max') * 1000:.0f} ms: "
        f"{'met' if med('tui', 'key_max') <= 0.1 else 'NOT met'}); memory flat "
        f"(growth {med('tui', 'rss_growth'):+.0f} MiB, merged log open "
        f"{med('merged', 'rss_growth'):+.0f} MiB, while the `Log` reference grows "
        f"{med('log', 'rss_growth'):+.0f} MiB)."
    )


if __name__ == "__main__":
    main()
