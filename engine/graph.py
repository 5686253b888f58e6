"""The stage DAG: topological order, cycles, upstream/downstream sets, affected stages, rendering.

Functions taking a `Pipeline` accept stage instance ids (`test[python=3.11]`) and stage names
(`test`, meaning all its instances) alike; an unknown one raises `KeyError`.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Mapping

from engine import globs
from engine.errors import PipedeckError
from engine.spec import Pipeline

FORMATS = ("text", "dot", "mermaid")


class CycleError(PipedeckError, ValueError):
    """The needs graph has a cycle; `cycle` lists its nodes, each needing the next (and the
    last needing the first)."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("dependency cycle: " + " -> ".join([*cycle, cycle[0]]))


def topo_order(needs: Mapping[str, Iterable[str]]) -> list[str]:
    """Order the keys of `needs` so each comes after everything it needs.

    Stable: among the nodes ready at any point, the one earliest in `needs` comes first, so the
    mapping's order is kept wherever the dependencies allow. Raises `CycleError` on a cycle and
    `ValueError` when a node needs a name that is not a key.
    """
    index = {name: i for i, name in enumerate(needs)}
    deps = {name: list(dict.fromkeys(needs[name])) for name in needs}
    waiting = {name: len(d) for name, d in deps.items()}
    dependants: dict[str, list[str]] = {name: [] for name in needs}
    for name, d in deps.items():
        for dep in d:
            if dep not in index:
                raise ValueError(f"{name!r} needs unknown {dep!r}")
            dependants[dep].append(name)
    ready = [index[name] for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    names = list(needs)
    order: list[str] = []
    while ready:
        name = names[heapq.heappop(ready)]
        order.append(name)
        for dependant in dependants[name]:
            waiting[dependant] -= 1
            if waiting[dependant] == 0:
                heapq.heappush(ready, index[dependant])
    if len(order) < len(names):
        raise CycleError(_find_cycle(deps, set(names) - set(order), names))
    return order


def _find_cycle(deps: Mapping[str, list[str]], left: set[str], names: list[str]) -> list[str]:
    """A cycle among the nodes `left` over after Kahn's algorithm (each still needs one of them)."""
    node = next(name for name in names if name in left)
    path: list[str] = []
    seen: dict[str, int] = {}
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(dep for dep in deps[node] if dep in left)
    return path[seen[node] :]


def _ids(pipeline: Pipeline, ids: Iterable[str]) -> set[str]:
    """Instance ids for a mix of instance ids and stage names."""
    out: set[str] = set()
    for item in ids:
        if item in pipeline.stages:
            out.add(item)
        elif item in pipeline.groups:
            out.update(pipeline.groups[item])
        else:
            raise KeyError(f"unknown stage {item!r}")
    return out


def _closure(start: set[str], edges: Mapping[str, Iterable[str]]) -> set[str]:
    """`start` plus everything reachable from it along `edges`."""
    seen = set(start)
    todo = list(start)
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _dependants(pipeline: Pipeline) -> dict[str, list[str]]:
    """Instance id -> the instances that need it."""
    out: dict[str, list[str]] = {sid: [] for sid in pipeline.stages}
    for stage in pipeline.stages.values():
        for dep in stage.needs:
            out[dep].append(stage.id)
    return out


def upstream(pipeline: Pipeline, ids: Iterable[str]) -> set[str]:
    """The given stages plus everything they transitively need."""
    edges = {sid: stage.needs for sid, stage in pipeline.stages.items()}
    return _closure(_ids(pipeline, ids), edges)


def downstream(pipeline: Pipeline, ids: Iterable[str]) -> set[str]:
    """The given stages plus everything that transitively needs them."""
    return _closure(_ids(pipeline, ids), _dependants(pipeline))


def _normalise(path: str) -> str:
    """A workspace-relative path in the form the globs are matched against."""
    path = path.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path.lstrip("/")


def affected(pipeline: Pipeline, changed: Iterable[str]) -> set[str]:
    """Stages a change to `changed` (paths relative to the workspace) makes stale.

    A stage is hit when one of its `inputs` globs matches a changed path (`engine.globs`: the
    same rules as the cache's) or when it has no `inputs` at all (unless it is `when: manual`: it
    runs when approved, not on every change); everything downstream of a hit stage is affected.
    """
    paths = [_normalise(p) for p in changed]
    hit = {
        sid
        for sid, stage in pipeline.stages.items()
        if paths
        and (
            any(map(globs.matcher(stage.inputs), paths)) if stage.inputs else stage.when != "manual"
        )
    }
    return downstream(pipeline, hit) if hit else set()


def render(pipeline: Pipeline, fmt: str = "text") -> str:
    """The DAG as `text` (stages in order with what they need), `dot` or `mermaid`, without a
    final newline."""
    if fmt == "text":
        return _render_text(pipeline)
    if fmt == "dot":
        return _render_dot(pipeline)
    if fmt == "mermaid":
        return _render_mermaid(pipeline)
    raise ValueError(f"unknown graph format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _group_needs(pipeline: Pipeline, name: str) -> list[str]:
    """The stage names that the instances of stage `name` need, in order."""
    needs: dict[str, None] = {}
    for sid in pipeline.groups[name]:
        for dep in pipeline.stages[sid].needs:
            needs[pipeline.stages[dep].name] = None
    return list(needs)


def _ordered_groups(pipeline: Pipeline) -> list[str]:
    """Stage names in the order their first instance appears (topological)."""
    return list(dict.fromkeys(stage.name for stage in pipeline.stages.values()))


def _render_text(pipeline: Pipeline) -> str:
    """One line per stage in topological order with what it needs, matrix instances below it."""
    rows: list[tuple[str, str]] = []
    for name in _ordered_groups(pipeline):
        ids = pipeline.groups[name]
        first = pipeline.stages[ids[0]]
        notes = []
        if needs := _group_needs(pipeline, name):
            notes.append(f"needs: {', '.join(needs)}")
        if first.is_remote:
            notes.append(f"host: {first.host}")
        if first.when != "on_success":
            notes.append(f"when: {first.when}")
        if first.service:
            notes.append(f"service, ready: {first.ready.kind}" if first.ready else "service")
        rows.append((name, "  ".join(notes)))
        if first.matrix:
            rows.extend((f"  {sid}", "") for sid in ids)
    width = max(len(left) for left, _ in rows) + 2
    lines = [f"{left:<{width}}{right}" if right else left for left, right in rows]
    return f"{pipeline.name}\n" + "\n".join(lines)


def _quote(text: str) -> str:
    """A double-quoted string for dot (JSON escaping is valid dot escaping for our names)."""
    return json.dumps(text)


def _render_dot(pipeline: Pipeline) -> str:
    """A Graphviz digraph; matrix stages are clusters, edges point from a need to its user."""
    lines = [f"digraph {_quote(pipeline.name)} {{", "  rankdir=LR;", "  node [shape=box];"]
    for i, name in enumerate(_ordered_groups(pipeline)):
        ids = pipeline.groups[name]
        if pipeline.stages[ids[0]].matrix:
            lines.append(f"  subgraph cluster_{i} {{")
            lines.append(f"    label={_quote(name)};")
            lines.extend(f"    {_quote(sid)};" for sid in ids)
            lines.append("  }")
        else:
            lines.extend(f"  {_quote(sid)};" for sid in ids)
    for stage in pipeline.stages.values():
        lines.extend(f"  {_quote(dep)} -> {_quote(stage.id)};" for dep in stage.needs)
    lines.extend(f'  {_quote(sid)} [style="rounded,dashed"];' for sid in _services(pipeline))
    lines.append("}")
    return "\n".join(lines)


def _mermaid_label(text: str) -> str:
    """A quoted mermaid label with `"` escaped."""
    return '"' + text.replace('"', "#quot;") + '"'


def _render_mermaid(pipeline: Pipeline) -> str:
    """A mermaid flowchart; node ids are generated, labels are the stage ids."""
    node = {sid: f"s{i}" for i, sid in enumerate(pipeline.stages)}
    lines = ["flowchart LR"]
    for i, name in enumerate(_ordered_groups(pipeline)):
        ids = pipeline.groups[name]
        if pipeline.stages[ids[0]].matrix:
            lines.append(f"  subgraph g{i}[{_mermaid_label(name)}]")
            lines.extend(f"    {node[sid]}[{_mermaid_label(sid)}]" for sid in ids)
            lines.append("  end")
        else:
            lines.extend(f"  {node[sid]}[{_mermaid_label(sid)}]" for sid in ids)
    for stage in pipeline.stages.values():
        lines.extend(f"  {node[dep]} --> {node[stage.id]}" for dep in stage.needs)
    if services := _services(pipeline):
        lines.append("  classDef service stroke-dasharray: 5 5")
        lines.append(f"  class {','.join(node[sid] for sid in services)} service")
    return "\n".join(lines)


def _services(pipeline: Pipeline) -> list[str]:
    """The ids of service stages (SPEC §10), marked dashed in dot and mermaid."""
    return [sid for sid, stage in pipeline.stages.items() if stage.service]
