"""Shared helpers for the bench modules: timing child processes, alternating pairs, verdicts.

Not a bench module itself (`run.py` skips files starting with `_`). Every bench module is a
script that prints one markdown section; these helpers keep their measurements comparable:
each case is a whole child process, timed by wall clock and by the CPU time it and its
descendants used, and the cases of a comparison are run alternately (A, B, A, B ...) so that
a burst of load from elsewhere hits all of them alike.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
TOOL_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pipedeck-bench"
PROFILE_SCRIPT = Path(__file__).with_name("_profile.py")
MIN_ROUNDS = 3
PIP_TIMEOUT = 120.0
# Measure as a user runs: with bytecode caches and buffered stdout, whatever this shell says.
for _var in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"):
    os.environ.pop(_var, None)


class BenchError(Exception):
    """A case could not be measured (a tool is missing, or a command failed)."""


@dataclass(frozen=True)
class Case:
    """One command to time: argv, working directory, and an optional reset run before each try."""

    name: str
    argv: Sequence[str]
    cwd: Path
    reset: Callable[[], None] | None = None


@dataclass
class Samples:
    """Wall and CPU (user + sys, the process and all its reaped descendants) seconds per try."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median wall time."""
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        """Median CPU time."""
        return statistics.median(self.cpu)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_once(case: Case) -> tuple[float, float]:
    """Run `case` once with stdout to /dev/null; return (wall, cpu) seconds. Raises BenchError."""
    if case.reset is not None:
        case.reset()
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(
        case.argv,
        cwd=case.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise BenchError(
            f"{case.name}: `{' '.join(case.argv)}` exited {proc.returncode}: " + " / ".join(tail)
        )
    return wall, cpu


def alternate(
    cases: Sequence[Case], rounds: int, budget: float | None = None, warm_up: bool = True
) -> dict[str, Samples]:
    """Time every case once per round, in turn, after one untimed warm-up try of each (unless
    `warm_up` is False: cases long enough for a warm-up not to matter).

    With a `budget` (seconds), fewer rounds are run when the warm-up shows that `rounds` would
    take longer, but never fewer than MIN_ROUNDS: `make bench` must stay within minutes even
    when something is slow.
    """
    per_round = sum(time_once(case)[0] for case in cases) if warm_up else 0.0
    if budget is not None and per_round > 0:
        rounds = max(MIN_ROUNDS, min(rounds, int(budget / per_round)))
    results = {case.name: Samples() for case in cases}
    for _ in range(rounds):
        for case in cases:
            wall, cpu = time_once(case)
            results[case.name].wall.append(wall)
            results[case.name].cpu.append(cpu)
    return results


def fmt_s(seconds: float) -> str:
    """`1.23 ms` below 10 ms, `123 ms` below a second, `1.23 s` from there."""
    if seconds < 0.01:
        return f"{seconds * 1000:.2f} ms"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def table(results: Mapping[str, Samples]) -> str:
    """A markdown table: one row per case with median, min-max wall time and median CPU time."""
    rows = [
        "| case | wall median | wall min - max | CPU median | tries |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in results.items():
        cell = name.replace("|", r"\|")
        rows.append(
            f"| {cell} | {fmt_s(s.median)} | {fmt_s(min(s.wall))} - {fmt_s(max(s.wall))}"
            f" | {fmt_s(s.cpu_median)} | {len(s.wall)} |"
        )
    return "\n".join(rows)


def verdict(ratio: float, goal: float, unit: str = "x") -> str:
    """`1.73x (goal <= 2.0x): **met**`, or how far the goal is missed."""
    head = f"{ratio:.3g}{unit} (goal <= {goal:g}{unit}): "
    if ratio <= goal:
        return head + "**met**"
    return head + f"**missed** by {ratio - goal:.3g}{unit} ({(ratio / goal - 1) * 100:.0f}% over)"


def pipedeck() -> str:
    """The pipedeck script of the running venv."""
    script = VENV_BIN / "pipedeck"
    found = str(script) if script.exists() else shutil.which("pipedeck")
    if not found:
        raise BenchError("no pipedeck script: install the package (`make bench` does)")
    return found


def workdir(prefix: str) -> Path:
    """A fresh temporary directory for one bench's files; the caller removes it."""
    return Path(tempfile.mkdtemp(prefix=f"pipedeck-bench-{prefix}-"))


def _pip(*args: str) -> str | None:
    """Run the venv's pip quietly; None when it worked, else why not (a short message)."""
    try:
        proc = subprocess.run(
            [str(VENV_BIN / "pip"), *args, "-q", "--retries", "1", "--timeout", "20"],
            capture_output=True,
            text=True,
            check=False,
            timeout=PIP_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return f"pip {args[0]} took over {PIP_TIMEOUT:.0f} s"
    return None if proc.returncode == 0 else proc.stderr.strip()[-300:] or "pip failed"


def ensure_doit() -> str:
    """The venv's doit, pip-installed into the venv on first use (a bench-only tool)."""
    script = VENV_BIN / "doit"
    if not script.exists():
        failure = _pip("install", "doit")
        if failure or not script.exists():
            raise BenchError(f"could not pip install doit: {failure}")
    return str(script)


def find_task(download: bool = True) -> str | None:
    """A go-task `task` binary: on PATH, or cached from PyPI's go-task-bin wheel (downloaded once).

    npm's @go-task/cli fetches the binary from GitHub at install time, which is unreachable here,
    so the PyPI wheel (which carries the binary) is the one registry route.
    """
    cached = TOOL_CACHE / "task"
    for candidate in (shutil.which("task"), str(cached) if cached.exists() else None):
        if candidate and _is_go_task(candidate):
            return candidate
    if not download:
        return None
    TOOL_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        failure = _pip("download", "--no-deps", "--only-binary", ":all:", "-d", tmp, "go-task-bin")
        wheels = list(Path(tmp).glob("go_task_bin-*.whl"))
        if failure or not wheels:
            return None
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next((n for n in wheel.namelist() if n.endswith("/scripts/task")), None)
            if member is None:
                return None
            cached.write_bytes(wheel.read(member))
    cached.chmod(0o755)
    return str(cached) if _is_go_task(str(cached)) else None


def _is_go_task(path: str) -> bool:
    """True when `path` is go-task (Taskwarrior is also called `task`): it has --concurrency."""
    try:
        out = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--concurrency" in out.stdout + out.stderr


def profile(argv: Sequence[str], cwd: Path, top: int = 12) -> str:
    """cProfile one in-process `pipedeck ARGV` run; a markdown table of the top functions.

    Two tables: every function by own time (tottime), and pipedeck's own functions by
    cumulative time, naming file, line and function for the owner. cProfile sees the main
    thread only and inflates the cost of small functions: read it for where time goes, not
    for absolute numbers.
    """
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        proc = subprocess.run(
            [sys.executable, str(PROFILE_SCRIPT), out.name, str(top), *argv],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        if proc.returncode != 0:
            return f"(profiling failed: {proc.stderr.decode(errors='replace').strip()[-300:]})"
        data = json.loads(Path(out.name).read_text())
    return "\n".join(
        [
            f"cProfile of one in-process run ({data['total']:.2f} s under the profiler); "
            f"top {top} functions by own time:",
            "",
            *_profile_rows(data["own"]),
            "",
            f"pipedeck's own top {top} functions by cumulative time (time in them and what they "
            "call):",
            "",
            *_profile_rows(data["ours"]),
        ]
    )


def _profile_rows(entries: list[dict[str, Any]]) -> list[str]:
    rows = ["| function | calls | own time | cumulative |", "|---|---:|---:|---:|"]
    rows += [
        f"| `{e['where']}` | {e['calls']} | {e['tottime']:.3f} s | {e['cumtime']:.3f} s |"
        for e in entries
    ]
    return rows


def import_top(args: Sequence[str], cwd: Path, top: int = 8) -> str:
    """`python -X importtime pipedeck ARGS`: the heaviest imports made at depth 0 and 1.

    Depth 0 is what the script imports itself, depth 1 what those import: enough to name which
    of our modules pulls in which heavy library.
    """
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", pipedeck(), *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    entries = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cum_us, name = line.removeprefix("import time:").split("|", 2)
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        if depth <= 1:
            entries.append((int(cum_us), int(self_us), depth, name.strip()))
    entries.sort(reverse=True)
    rows = [
        f"Heaviest imports of `pipedeck {' '.join(args)}` (`python -X importtime`, depth <= 1):",
        "",
        "| module | depth | cumulative | self |",
        "|---|---:|---:|---:|",
    ]
    rows += [
        f"| `{name}` | {depth} | {cum / 1000:.1f} ms | {own / 1000:.1f} ms |"
        for cum, own, depth, name in entries[:top]
    ]
    return "\n".join(rows)
