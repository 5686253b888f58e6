"""How long the timeline (`T`) of a 1000-stage run takes to draw a 160x48 screen.

A run of 1000 stages in a chain of fan-outs (so the critical path is long), each attempt queued
then run, is recorded into `Spans`; the bench times `refresh_spans` (rows, critical path) plus
rendering every line on screen, as every live redraw does, over several rounds.

Usage: python bench/tui_timeline.py [--stages N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual.app import App, ComposeResult

from engine.events import SUCCEEDED
from tui.widgets.timeline import Span, Spans, Timeline


def spans_of(count: int) -> tuple[Spans, dict[str, tuple[str, ...]]]:
    spans, needs = Spans(), {}
    for i in range(count):
        name = f"stage-{i:04d}"
        needs[name] = (f"stage-{i - 10:04d}",) if i >= 10 else ()
        t = (i // 10) * 3.0
        spans.add(Span(name, 1, SUCCEEDED, queued=t, started=t + 0.5, ended=t + 2.5 + i % 3))
    return spans, needs


class Bench(App[None]):
    def __init__(self, spans: Spans, needs: dict[str, tuple[str, ...]]) -> None:
        super().__init__()
        self.spans, self.needs = spans, needs

    def compose(self) -> ComposeResult:
        yield Timeline(self.spans, self.needs, 0.0)


async def measure(count: int, rounds: int) -> list[float]:
    spans, needs = spans_of(count)
    app = Bench(spans, needs)
    times = []
    async with app.run_test(size=(160, 48)):
        timeline = app.query_one(Timeline)
        for _ in range(rounds):
            spans.version += 1  # a change: rows and the critical path again
            start = time.perf_counter()
            timeline.refresh_spans(10_000.0)
            for y in range(timeline.size.height):
                timeline.render_line(y)
            times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    times = asyncio.run(measure(args.stages, args.rounds))
    median = statistics.median(times)
    print(f"timeline of {args.stages} stages at 160x48: a draw takes {median:.1f} ms "
          f"(median of {args.rounds}, max {max(times):.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
