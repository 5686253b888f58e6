"""`pipedeck history`, `show`, `artifacts` and `metrics`: what the state directory remembers.

`COMMANDS` gives each command's help line and what adds its arguments; each sets `handler` to a
function that takes the parsed namespace (its `pipeline` is the pipeline file, whose `.pipedeck/`
is read) and returns an exit code. Reading never creates `.pipedeck/`; `history` and `show` first
mark runs left `running` by a dead pipedeck as `interrupted`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported by the handlers: `pipedeck run` need not load them
    from _typeshed import DataclassInstance

    from engine.history import AttemptRow, History, RunRow, StepRow

DEFAULT_FILE = "pipedeck.yaml"
EXIT_USAGE = 2


def _history_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", "-n", type=_positive, default=20, help="at most N runs")
    _common_args(p, cmd_history)


def _show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", help="a run id or its unique prefix (default: latest)")
    _common_args(p, cmd_show)


def _artifacts_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", metavar="RUN_ID", help="only this run's")
    _common_args(p, cmd_artifacts)


def _metrics_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", "-s", metavar="S", help="only this stage (or its instances)")
    p.add_argument("--runs", type=_positive, default=5, help="how many runs (default 5)")
    _common_args(p, cmd_metrics)


def _common_args(p: argparse.ArgumentParser, handler: Callable[[argparse.Namespace], int]) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--file", "-f", dest="pipeline", default=DEFAULT_FILE,
                   help=f"the pipeline file (default: {DEFAULT_FILE})")  # fmt: skip
    p.set_defaults(handler=handler)


def _positive(text: str) -> int:
    from tui.cli import positive  # one check of counts for every command (bounded: no overflow)

    return positive(text)


def state_dir(args: argparse.Namespace) -> Path:
    """The `.pipedeck/` directory beside the pipeline file (or inside a given directory)."""
    path = Path(getattr(args, "pipeline", None) or DEFAULT_FILE)
    if path.is_dir():
        return path / ".pipedeck"
    from engine.gha.options import is_workflow, workflow_root

    if is_workflow(str(path)):  # a workflow's runs are kept in its repository's root
        return workflow_root(path.resolve().parent) / ".pipedeck"
    return path.resolve().parent / ".pipedeck"


def pipeline_key(args: argparse.Namespace) -> str:
    """The pipeline file's key in the history (`engine.history.pipeline_file`): queries are of
    that pipeline's runs, not of every pipeline sharing the `.pipedeck/`."""
    from engine.gha.options import single_workflow
    from engine.history import pipeline_file

    path = Path(getattr(args, "pipeline", None) or DEFAULT_FILE)
    path = path / DEFAULT_FILE if path.is_dir() else path
    if str(path) == DEFAULT_FILE and not path.exists():  # what `pipedeck run` would take
        path = single_workflow(Path("."), f"{args.command} -f") or path
    return pipeline_file(path, state_dir(args))


def run_ids(args: argparse.Namespace) -> list[str]:
    """The ids of the pipeline's recorded runs, newest first (`pipedeck logs`)."""
    history = _open(args)
    if history is None:
        return []
    try:
        return [run.run_id for run in history.runs(None, pipeline_key(args))]
    finally:
        history.close()


def _open(args: argparse.Namespace) -> History | None:
    """The project's history, None when nothing was recorded; exits 1 when it is unusable."""
    from engine.history import History, HistoryError

    db = state_dir(args) / "history.db"
    if not db.is_file():
        return None
    try:
        return History(db)
    except HistoryError as err:
        print(f"pipedeck: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def _fail(message: str) -> int:
    print(f"pipedeck: {message}", file=sys.stderr)
    return EXIT_USAGE


def format_time(ts: float | None) -> str:
    """A local date and time, or "-"."""
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def format_duration(seconds: float | None) -> str:
    """`0.4s`, `12.0s`, `3m07s`, `1h02m`, or "-"."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, *rows]
    return "\n".join(
        indent + "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _print_json(value: object) -> None:
    import json  # here, with dataclasses below: `pipedeck --help` builds this module's parsers

    print(json.dumps(value, indent=2))


def _fields(row: DataclassInstance) -> dict[str, Any]:
    """A row of the history (a dataclass) as a JSON object."""
    from dataclasses import asdict

    return asdict(row)


def _run_json(run: RunRow) -> dict[str, Any]:
    return {**_fields(run), "started_at": format_time(run.started)}


def cmd_history(args: argparse.Namespace) -> int:
    """`pipedeck history [--limit N] [--json]`: recent runs, newest first."""
    history = _open(args)
    runs = []
    if history is not None:
        history.mark_interrupted()
        runs = history.runs(args.limit, pipeline_key(args))
    if args.json:
        _print_json([_run_json(r) for r in runs])
    elif not runs:
        print(f"no runs recorded for {pipeline_key(args)} in {state_dir(args)}")
    else:
        rows = [[r.run_id, r.status, format_time(r.started), format_duration(r.duration),
                 r.trigger or "-", r.pipeline or "-"] for r in runs]  # fmt: skip
        print(_table(["RUN", "STATUS", "STARTED", "DURATION", "TRIGGER", "PIPELINE"], rows))
    return 0


def _find_run(history: History, wanted: str | None, file: str) -> RunRow | str:
    """The run `wanted` names (an id, a unique prefix or the random suffix the TUI's history
    shows, of any pipeline; None: the latest run of the pipeline `file`), or an error."""
    if wanted is None:
        latest = history.runs(1, file)
        return latest[0] if latest else f"no runs recorded yet for {file}"
    exact = history.run(wanted)
    if exact:
        return exact
    matches = [
        r
        for r in history.runs(None)
        if r.run_id.startswith(wanted) or r.run_id.endswith(f"-{wanted}")
    ]
    if len(matches) == 1:
        return matches[0]
    if matches:
        return f"run {wanted!r} is ambiguous: {', '.join(r.run_id for r in matches[:5])}"
    return f"no run {wanted!r} (see `pipedeck history`)"


def step_rows(attempts: Sequence[AttemptRow], steps: Sequence[StepRow]) -> list[list[StepRow]]:
    """The recorded steps of each attempt of `attempts` (a GitHub Actions job's; [] for others),
    in step order."""
    by_attempt: dict[tuple[str, int], list[StepRow]] = {}
    for step in steps:
        by_attempt.setdefault((step.stage, step.attempt), []).append(step)
    return [by_attempt.get((a.stage, a.attempt), []) for a in attempts]


def _step_why(step: StepRow) -> str:
    """Why a step ended as it did: its reason, else its exit code when it failed."""
    if step.reason:
        return step.reason
    return f"exit code {step.exit_code}" if step.exit_code not in (None, 0) else "-"


def cmd_show(args: argparse.Namespace) -> int:
    """`pipedeck show [RUN]`: a run's stages with status, duration and why each ran; under a
    GitHub Actions job, its steps with theirs."""
    history = _open(args)
    if history is None:
        return _fail(f"no runs recorded in {state_dir(args)}")
    history.mark_interrupted()
    run = _find_run(history, args.run, pipeline_key(args))
    if isinstance(run, str):
        return _fail(run)
    attempts = history.attempts(run.run_id)
    steps = step_rows(attempts, history.steps(run.run_id))
    syncs = history.syncs(run.run_id)
    if args.json:
        body = {**_run_json(run), "attempts": [
            {**_fields(a), "duration": a.duration, "steps": [_fields(s) for s in own]}
            for a, own in zip(attempts, steps, strict=True)]}  # fmt: skip
        body["syncs"] = [_fields(s) for s in syncs]
        _print_json(body)
        return 0
    print(f"run {run.run_id}  {run.status}  started {format_time(run.started)}  "
          f"duration {format_duration(run.duration)}  trigger {run.trigger or '-'}")  # fmt: skip
    header = ["STAGE", "STATUS", "ATTEMPT", "DURATION", "HOST", "WHY"]
    rows = [
        [a.stage, a.status, str(a.attempt),
         format_duration(a.duration) if a.ran else "-", a.host or "-",
         "; ".join(filter(None, [a.why, a.reason])) or "-"]
        for a in attempts
    ]  # fmt: skip
    if any(a.peak_rss is not None or a.cpu_seconds is not None for a in attempts):
        header[4:4] = ["PEAK MEM", "CPU"]
        for row, a in zip(rows, attempts, strict=True):
            row[4:4] = [_size(a.peak_rss) if a.peak_rss is not None else "-",
                        format_duration(a.cpu_seconds)]  # fmt: skip
    if any(a.job_id is not None for a in attempts):  # Slurm attempts: their job and node
        at = header.index("HOST") + 1
        header[at:at] = ["JOB", "NODE"]
        for row, a in zip(rows, attempts, strict=True):
            row[at:at] = [a.job_id or "-", a.node or "-"]
    width = len(header)
    status_at, duration_at = header.index("STATUS"), header.index("DURATION")
    for at in range(len(rows) - 1, -1, -1):  # each job's steps under it, in the same columns
        under = []
        for step in steps[at]:
            row = [""] * width
            row[0] = f"  {step.step + 1} {step.name}"
            row[status_at] = step.shown_status
            row[duration_at] = format_duration(step.duration)
            row[-1] = _step_why(step)
            under.append(row)
        rows[at + 1 : at + 1] = under
    if rows:
        print(_table(header, rows, "  "))
    if syncs:  # what each workspace sync to an SSH host sent
        print("syncs:")
        print(_table(["HOST", "STAGE", "FILES", "SIZE", "DELETED", "METHOD"],
                     [[s.host, s.stage or "-", str(s.files), _size(s.bytes), str(s.deleted),
                       s.method] for s in syncs], "  "))  # fmt: skip
    from engine.gha.commands import summaries

    for job, text in summaries(state_dir(args), run.run_id):  # GitHub Actions step summaries
        print(f"\n── summary of {job} ──\n{text.rstrip()}")
    return 0


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def cmd_artifacts(args: argparse.Namespace) -> int:
    """`pipedeck artifacts [--run RUN]`: kept outputs, with size and sha256."""
    from engine.artifacts import list_artifacts

    found = list_artifacts(state_dir(args), args.run)
    if args.json:
        _print_json([{**a._asdict(), "stored": str(a.stored)} for a in found])
    elif not found:
        where = f"run {args.run}" if args.run else str(state_dir(args))
        print(f"no artifacts kept for {where}")
    else:
        table = [[a.run_id, a.stage, a.path, _size(a.size), a.sha256[:12],
                  "" if a.intact else "changed since kept"] for a in found]  # fmt: skip
        print(_table(["RUN", "STAGE", "PATH", "SIZE", "SHA256", ""], table))
    return 0


def _number(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.6g}" if sign else f"{value:.6g}"


def cmd_metrics(args: argparse.Namespace) -> int:
    """`pipedeck metrics [--stage S] [--json]`: each stage's last runs side by side, with deltas."""
    from engine import metrics

    history = _open(args)
    file = pipeline_key(args)
    stages = history.metric_stages(file) if history else []
    if args.stage:
        stages = [s for s in stages if s == args.stage or s.startswith(args.stage + "[")]
        if not stages:
            return _fail(f"no metrics recorded for stage {args.stage!r}")
    tables = (
        [metrics.compare(history, stage, args.runs, file) for stage in stages] if history else []
    )
    if args.json:
        body = [
            {"stage": t.stage, "runs": list(t.run_ids),
             "metrics": {r.name: {"values": list(r.values), "delta": r.delta} for r in t.rows}}
            for t in tables
        ]  # fmt: skip
        _print_json(body)
        return 0
    if not tables:
        print(f"no metrics recorded in {state_dir(args)}")
    for i, table in enumerate(tables):
        rows = [[r.name, *(_number(v) for v in r.values), _number(r.delta, sign=True)]
                for r in table.rows]  # fmt: skip
        print(("\n" if i else "") + table.stage)
        print(_table(["METRIC", *table.run_ids, "DELTA"], rows, "  "))
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "history": ("list recent runs", _history_args),
    "show": ("show one run: its stages, durations and why each ran", _show_args),
    "artifacts": ("list kept stage outputs", _artifacts_args),
    "metrics": ("compare stage metrics across recent runs", _metrics_args),
}
"""The commands of this module (tui.cli lists them): each one's help line and arguments."""
