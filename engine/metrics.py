"""Stage metrics: the JSON file named by a stage's `metrics:` key, recorded per run (SPEC §6).

The file (relative to the workspace) holds numbers, possibly nested: `{"loss": 0.2,
"eval": {"acc": 0.9}}` is recorded as `loss` and `eval.acc`. Booleans, strings and lists are
ignored. A missing or unusable file is reported (one line naming the stage, the file and the
problem), not silently skipped. Secret values in metric names are masked before they are stored.
`compare` lines up a stage's last runs with the change between the last two.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import PipedeckError
from engine.history import History
from engine.mask import Masker
from engine.spec import Stage


class MetricsError(PipedeckError):
    """The metrics file is missing or not a JSON object."""


@dataclass(frozen=True)
class MetricRow:
    """One metric across runs: `values` aligned with the compared run ids (None: not recorded)."""

    name: str
    values: tuple[float | None, ...]

    @property
    def delta(self) -> float | None:
        """The last value minus the one before it, when both exist."""
        if len(self.values) < 2 or self.values[-1] is None or self.values[-2] is None:
            return None
        return self.values[-1] - self.values[-2]


@dataclass(frozen=True)
class Comparison:
    """A stage's metrics over its last runs, oldest first."""

    stage: str
    run_ids: tuple[str, ...]
    rows: tuple[MetricRow, ...]


def flatten(data: Any, prefix: str = "") -> dict[str, float]:
    """Numbers in nested mappings, keyed by dotted paths."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(data, int | float) and not isinstance(data, bool) and math.isfinite(data):
        out[prefix[:-1]] = float(data)
    return out


def read(path: Path) -> dict[str, float]:
    """The flattened numbers of a metrics file; raises MetricsError when unusable."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise MetricsError(f"{path}: {err.strerror or err}") from None
    except ValueError as err:
        raise MetricsError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise MetricsError(f"{path}: expected a JSON object of numbers")
    return flatten(data)


def record(
    history: History,
    workspace: Path,
    run_id: str,
    stage: Stage,
    *,
    masker: Masker | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Read the stage's metrics file and store its numbers (names masked) with the run; {} when
    the file is unusable, which is reported through `warn` (default: the history's)."""
    if not stage.metrics:
        return {}
    try:
        values = read(Path(workspace) / stage.metrics)
    except MetricsError as err:
        (warn or history.warn)(f"stage {stage.id}: metrics not recorded: {err}")
        return {}
    if masker:
        values = {masker.mask_text(name): value for name, value in values.items()}
    history.record_metrics(run_id, stage.id, values, time.time())
    return values


def compare(history: History, stage: str, runs: int = 5, file: str | None = None) -> Comparison:
    """The stage's metrics in its last `runs` runs (of the pipeline `file`, see
    `engine.history.pipeline_file`) side by side, with each metric's last delta."""
    recorded = history.metrics(stage, runs, file)
    names = sorted({name for _, values in recorded for name in values})
    rows = tuple(
        MetricRow(name, tuple(values.get(name) for _, values in recorded)) for name in names
    )
    return Comparison(stage, tuple(run_id for run_id, _ in recorded), rows)
