"""Run every bench module and write docs/benchmarks.md (what `make bench` calls).

A bench module is any `bench/*.py` except this file and helpers whose name starts with `_`.
Each is a script that prints one markdown section on stdout; it runs in a subprocess with a
timeout, one after another (never two at once: they would disturb each other), and a module
that fails or times out is recorded as such in the report instead of stopping the others.

Usage: python bench/run.py [MODULE...] [--output FILE] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from _harness import find_task  # noqa: E402

# The engine's own comparisons first, then the others alphabetically.
FIRST = ("startup_bench", "fanout_bench", "throughput_bench")
DEFAULT_TIMEOUT = 240.0
# Everything from this line on in the existing report is hand-written and carried over.
NOTES_MARKER = "<!-- bench/run.py keeps what follows: hand-written notes -->"


def modules(names: list[str]) -> list[Path]:
    """The bench modules to run: those named, or all of them, in report order."""
    found = {
        p.stem: p for p in BENCH.glob("*.py") if p.stem != "run" and not p.stem.startswith("_")
    }
    if names:
        unknown = [n for n in names if n.removesuffix(".py") not in found]
        if unknown:
            raise SystemExit(
                f"bench/run.py: no bench module {', '.join(unknown)} "
                f"(have: {', '.join(sorted(found))})"
            )
        return [found[n.removesuffix(".py")] for n in names]
    order = [n for n in FIRST if n in found] + sorted(n for n in found if n not in FIRST)
    return [found[n] for n in order]


def run_module(path: Path, timeout: float) -> str:
    """Run one module; its markdown section, or a section recording how it failed.

    The module runs in its own session so that a timeout kills it with everything it started.
    """
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(path)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return _failure(path, f"timed out after {timeout:.0f} s", stdout, stderr)
    took = time.perf_counter() - t0
    if proc.returncode != 0 or not stdout.strip():
        return _failure(path, f"exited {proc.returncode} after {took:.0f} s", stdout, stderr)
    return f"{stdout.rstrip()}\n\n_`bench/{path.name}` took {took:.0f} s._\n"


def _failure(path: Path, what: str, stdout: str, stderr: str) -> str:
    parts = [f"## {path.stem} — FAILED\n", f"`bench/{path.name}` {what}."]
    if stdout.strip():
        parts.append(f"\nWhat it printed before failing:\n\n```\n{stdout.strip()}\n```")
    if stderr.strip():
        tail = "\n".join(stderr.strip().splitlines()[-20:])
        parts.append(f"\nLast lines of its stderr:\n\n```\n{tail}\n```")
    return "\n".join(parts) + "\n"


def kept_notes(report: Path) -> str:
    """The hand-written notes at the end of the previous report (from NOTES_MARKER on), if any."""
    if not report.is_file():
        return ""
    text = report.read_text()
    at = text.find(NOTES_MARKER)
    return "" if at < 0 else "\n" + text[at:]


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not available"
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0] if proc.returncode == 0 and lines else "not available"


def _meminfo() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def header(started: dt.datetime, load_before: tuple[float, ...], took: float) -> str:
    """Date, machine, tool versions and the load the numbers were taken under."""
    venv = Path(sys.executable).parent
    task = find_task(download=False)
    tools = {
        "pipedeck": _first_line([str(venv / "pipedeck"), "--version"]),
        "python": sys.version.split()[0],
        "make": _first_line(["make", "--version"]),
        "doit": _first_line([str(venv / "doit"), "--version"]),
        "go-task": _first_line([task, "--version"]) if task else "not available",
        "bash": _first_line(["bash", "--version"]),
        "sed": _first_line(["sed", "--version"]),
        "seq": _first_line(["seq", "--version"]),
    }
    load_after = os.getloadavg()
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`bench/run.py`); every pair is measured alternately in the "
        "same run (A, B, A, B ...), and ratios are pipedeck / peer on median wall time. "
        "See `bench/README.md` for what each module measures and how.",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC; the whole bench took {took:.0f} s",
        f"- machine: {os.cpu_count()} CPUs ({_cpu_model()}), {_meminfo()} memory, "
        f"{platform.system()} {platform.release()}",
        f"- load average (1 min) before: {load_before[0]:.2f}, after: {load_after[0]:.2f}",
        "- tools: " + "; ".join(f"{name} `{version}`" for name, version in tools.items()),
        "",
        "Numbers taken while other work ran on the machine (a load average near or above the "
        "number of CPUs) are noisy: wall times stretch, ratios less so because the pairs are "
        "interleaved, and CPU times are the steadier figure.",
    ]
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run the modules, write the report."""
    parser = argparse.ArgumentParser(description="Run the bench modules, write the report.")
    parser.add_argument("modules", nargs="*", help="module names (default: all)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds per module (default {DEFAULT_TIMEOUT:.0f})",
    )
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    sections = []
    for path in modules(args.modules):
        print(f"bench: {path.name} ...", file=sys.stderr, flush=True)
        sections.append(run_module(path, args.timeout))
    report = header(started, load_before, time.perf_counter() - t0)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report + "\n\n" + "\n".join(sections) + kept_notes(args.output))
    print(f"bench: wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
