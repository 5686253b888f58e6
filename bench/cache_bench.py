"""No-op rerun of a 200-stage pipeline whose stages read a 10,000-file tree: pipedeck vs go-task.

Every stage declares the whole tree as its inputs and one file as its output; after a first run,
a rerun with nothing changed must run no stage. pipedeck decides that from fingerprints and its
stat cache; go-task from `sources` with `method: checksum`. Both are timed end to end (process
start to exit). go-task comes from `task` on PATH, else from the `go-task-bin` wheel on PyPI
(fetched with pip into a temporary directory); without it, only pipedeck is measured.

    python bench/cache_bench.py [--stages 200] [--files 10000] [--repeat 5] [--task-repeat 2]
                                [--pipedeck CMD]

Prints a markdown table for docs/benchmarks.md. Goal: pipedeck's no-op rerun under 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

GOAL = 1.0


def make_tree(root: Path, files: int) -> None:
    """`files` small files in directories of 100 under root/tree."""
    for i in range(files):
        path = root / "tree" / f"d{i // 100:03d}" / f"f{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {i}\n" * 4)


def needs(i: int) -> list[str]:
    """Ten chains: stage i needs stage i - 10."""
    return [f"s{i - 10:03d}"] if i >= 10 else []


def write_pipedeck(root: Path, stages: int) -> Path:
    lines = ["version: 1", "name: cache-bench", "stages:"]
    for i in range(stages):
        lines += [
            f"  s{i:03d}:",
            f"    run: mkdir -p out && echo {i} > out/s{i:03d}.txt",
            '    inputs: ["tree/**"]',
            f'    outputs: ["out/s{i:03d}.txt"]',
        ]
        if needs(i):
            lines.append(f"    needs: {json.dumps(needs(i))}")
    path = root / "pipedeck.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_taskfile(root: Path, stages: int) -> None:
    lines = ["version: '3'", "tasks:", "  default:", "    deps:"]
    lines += [f"      - s{i:03d}" for i in range(max(0, stages - 10), stages)]
    for i in range(stages):
        lines += [
            f"  s{i:03d}:",
            "    method: checksum",
            "    sources: ['tree/**/*']",
            f"    generates: ['out/s{i:03d}.txt']",
            f"    cmds: ['mkdir -p out && echo {i} > out/s{i:03d}.txt']",
        ]
        if needs(i):
            lines.append(f"    deps: {json.dumps(needs(i))}")
    (root / "Taskfile.yml").write_text("\n".join(lines) + "\n")


def find_task(scratch: Path) -> Path | None:
    """A go-task binary: on PATH, or from the go-task-bin wheel fetched with pip."""
    found = shutil.which("task")
    if found:
        return Path(found)
    download = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "go-task-bin", "-d",
         str(scratch)],
        capture_output=True, text=True,
    )  # fmt: skip
    wheels = list(scratch.glob("go_task_bin-*.whl"))
    if download.returncode or not wheels:
        return None
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = [n for n in wheel.namelist() if n.endswith("/scripts/task")]
        if not names:
            return None
        binary = Path(wheel.extract(names[0], scratch))
    binary.chmod(0o755)
    return binary


def timed(
    cmd: list[str], cwd: Path, check: bool = True
) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if check and done.returncode:
        raise SystemExit(f"{shlex.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed, done


def cached_count(done: subprocess.CompletedProcess[str]) -> int:
    """Stages pipedeck reported `cached` in its --format json stream."""
    events = (json.loads(line) for line in done.stdout.splitlines() if line.startswith("{"))
    return sum(1 for e in events if e.get("type") == "stage_status" and e["status"] == "cached")


def up_to_date_count(done: subprocess.CompletedProcess[str]) -> int:
    """Tasks go-task reported up to date."""
    return (done.stdout + done.stderr).count("is up to date")


def measure(
    cmd: list[str], cwd: Path, repeat: int, count: Callable[[subprocess.CompletedProcess[str]], int]
) -> dict[str, float]:
    """The first run's time, then `repeat` reruns' median and minimum, and stages skipped."""
    first, done = timed(cmd, cwd, check=False)
    for _ in range(3):  # a stage that failed in the first run runs again until all succeed
        if not done.returncode:
            break
        print(f"note: {shlex.join(cmd)} exited {done.returncode}; running it again",
              file=sys.stderr)  # fmt: skip
        _, done = timed(cmd, cwd, check=False)
    times, skipped = [], []
    for _ in range(repeat):
        elapsed, done = timed(cmd, cwd)
        times.append(elapsed)
        skipped.append(count(done))
    return {"first": first, "median": statistics.median(times), "min": min(times),
            "skipped": min(skipped)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=200)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5, help="pipedeck reruns timed")
    parser.add_argument(
        "--task-repeat",
        type=int,
        default=2,
        help="go-task reruns timed (each rehashes the tree per task: slow)",
    )
    parser.add_argument(
        "--pipedeck",
        default=str(Path(sys.executable).with_name("pipedeck")),
        help="the pipedeck command (default: the one beside this Python)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pipedeck-cache-bench-") as tmp:
        scratch = Path(tmp)
        work = scratch / "work"
        make_tree(work, args.files)
        write_pipedeck(work, args.stages)
        write_taskfile(work, args.stages)
        time.sleep(1.1)  # files modified in the last second are rehashed (racy-stat guard)
        pd_cmd = [*shlex.split(args.pipedeck), "run", "pipedeck.yaml", "--format", "json"]
        results = {"pipedeck": measure(pd_cmd, work, args.repeat, cached_count)}
        task = find_task(scratch / "task")
        if task is not None:
            version = subprocess.run([str(task), "--version"], capture_output=True, text=True)
            name = f"go-task {version.stdout.strip().split()[-1]} (checksum)"
            shutil.rmtree(work / "out", ignore_errors=True)
            results[name] = measure([str(task), "--concurrency", str(os.cpu_count() or 1)],
                                    work, args.task_repeat, up_to_date_count)  # fmt: skip

    print(f"No-op rerun, {args.stages} stages each reading a {args.files:,}-file tree "
          f"({os.cpu_count()} CPUs; reruns: pipedeck {args.repeat}, go-task {args.task_repeat}; "
          f"goal < {GOAL:g} s):\n")  # fmt: skip
    print("| tool | first run | no-op rerun (median) | no-op rerun (min) | stages skipped |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['first']:.2f} s | {r['median']:.3f} s | {r['min']:.3f} s | "
              f"{int(r['skipped'])}/{args.stages} |")  # fmt: skip
    if task is None:
        print("\ngo-task: no `task` binary on PATH and none could be fetched from PyPI.")
    ok = results["pipedeck"]["median"] < GOAL and results["pipedeck"]["skipped"] == args.stages
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
