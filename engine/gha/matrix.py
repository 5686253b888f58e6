"""Matrix combinations by GitHub's rules, and their stage instance ids."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from typing import Any

from engine.gha import expr

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def expand_matrix(matrix: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Matrix combinations by GitHub's rules: the product of the axes, minus `exclude`
    (partial matches), then each `include` entry extends every original combination it does
    not contradict on an original axis, or else is added as a combination of its own."""
    for key in ("include", "exclude"):
        if not isinstance(matrix.get(key) or [], list):
            raise ValueError(f"{key}: expected a list of mappings, got {matrix[key]!r}"[:200])
    axes = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
    combos: list[dict[str, Any]] = [
        dict(zip(axes, values, strict=True))
        for values in itertools.product(*(v if isinstance(v, list) else [v] for v in axes.values()))
    ]
    if not axes:
        combos = []
    for rule in matrix.get("exclude") or []:
        if isinstance(rule, Mapping):
            combos = [c for c in combos if not all(c.get(k) == v for k, v in rule.items())]
    originals = [dict(c) for c in combos]
    extra: list[dict[str, Any]] = []
    for entry in matrix.get("include") or []:
        if not isinstance(entry, Mapping):
            continue
        matched = False
        for combo, original in zip(combos, originals, strict=True):
            if all(original[k] == v for k, v in entry.items() if k in original):
                combo.update({k: v for k, v in entry.items() if k not in original})
                matched = True
        if not matched:
            extra.append(dict(entry))
    return combos + extra


def instance_id(job: str, combo: Mapping[str, Any]) -> str:
    """`test[python=3.12,os=ubuntu-latest]` (object values as compact JSON)."""
    if not combo:
        return job
    parts = []
    for key, value in combo.items():
        text = (
            json.dumps(expr._plain(value), separators=(",", ":"))
            if isinstance(value, Mapping | list)
            else expr.to_str(value)
        )
        parts.append(f"{key}={_CONTROL_RE.sub(' ', text)}")
    return f"{job}[{','.join(parts)}]"
