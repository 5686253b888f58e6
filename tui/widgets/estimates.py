"""Time estimates from the run history: each stage's median duration, and the run's length."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path

RECENT = 10  # past durations a median is taken over


def stage_medians(path: Path, state_dir: Path, stages: Iterable[str]) -> dict[str, float]:
    """The median duration of each stage's recent attempts that ran to their own end, in runs
    of the pipeline file `path` (SQLite: call this from a thread). A stage with no such attempt,
    or no history at all, has no entry."""
    from engine.history import History, HistoryError, pipeline_file

    if not (state_dir / "history.db").exists():
        return {}
    try:
        history = History.for_state_dir(state_dir)
    except HistoryError:
        return {}
    try:
        file = pipeline_file(path, state_dir)
        found = {sid: history.durations(sid, RECENT, file) for sid in stages}
    finally:
        history.close()
    return {sid: statistics.median(d) for sid, d in found.items() if d}


def run_estimate(
    needs: Mapping[str, Iterable[str]], medians: Mapping[str, float], unknown: Iterable[str] = ()
) -> float | None:
    """The run's usual length: the longest chain of needs, summing medians (None: unknown, as
    when a stage of `unknown`, one the run will start, has no median yet)."""
    if not medians or any(sid not in medians for sid in unknown):
        return None
    finish: dict[str, float] = {}
    for sid, ups in needs.items():  # topological order
        finish[sid] = medians.get(sid, 0.0) + max((finish.get(u, 0.0) for u in ups), default=0.0)
    return max(finish.values(), default=0.0) or None
