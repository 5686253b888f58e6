"""SSH benchmarks: pipedeck's pooled asyncssh executor against OpenSSH on a local sshd.

1. N short remote stages, one after another, over the executor's one connection, against the
   same N commands through `ssh` with ControlMaster multiplexing (master opened beforehand).
2. A remote stage printing 2,000,000 lines into a file (and into the LogStore), against
   `ssh host seq 1 2000000 > file`.

Both sides talk to the same throwaway sshd (started like the tests' fixture) and pay the same
remote login shell. Prints a markdown table of times and ratios (pipedeck / OpenSSH).

    .venv/bin/python bench/ssh_bench.py [--stages 100] [--lines 2000000]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from math import inf
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.executors.ssh import SshExecutor  # noqa: E402
from engine.logs import LogStore  # noqa: E402
from engine.spec import Stage  # noqa: E402
from tests.ssh.conftest import USER, Sshd, make_pipeline, running_sshd, stage_env  # noqa: E402

ADDRESS = "127.0.0.2"


def ssh_argv(sshd: Sshd, control: Path) -> list[str]:
    """`ssh` with multiplexing through `control`, reaching the bench sshd as this user."""
    return [
        "ssh",
        "-p",
        str(sshd.port),
        "-i",
        str(sshd.client_key),
        "-l",
        USER,
        "-o",
        f"UserKnownHostsFile={sshd.known_hosts}",
        "-o",
        "BatchMode=yes",
        "-o",
        "ControlMaster=auto",
        "-o",
        f"ControlPath={control}",
        "-o",
        "ControlPersist=120",
        ADDRESS,
    ]


async def measure(sshd: Sshd, tmp: Path, stages: int, lines: int, rounds: int) -> dict[str, float]:
    """Seconds per case; the short stages alternate with OpenSSH in blocks of 10, and each big
    output case runs `rounds` times in turn with the others (best time kept), so that load from
    elsewhere on the machine hits both sides alike."""
    workspace = tmp / "ws"
    short = Stage(id="short", name="short", host="box", run="echo $PIPEDECK_ATTEMPT")
    big = Stage(id="big", name="big", host="box", run=f"seq 1 {lines}")
    pipeline = make_pipeline(workspace, {"box": sshd.host("box", ADDRESS)}, [short, big])
    executor = SshExecutor(pipeline, "box")
    argv = ssh_argv(sshd, tmp / "cm.sock")
    times = {"short": 0.0, "short_ssh": 0.0, "big_file": inf, "big_logstore": inf, "big_ssh": inf}

    async def stage(which: Stage, sink: Callable[[str, bytes], object], attempt: int = 1) -> None:
        result = await executor.execute(which, stage_env(which, attempt=attempt), sink)  # type: ignore[arg-type]
        assert result.exit_code == 0, result

    try:
        await stage(short, lambda _s, _d: None)  # connect and sync, untimed
        subprocess.run([*argv, "true"], check=True)  # open the ControlMaster, untimed
        for block in range(0, stages, 10):
            count = min(10, stages - block)
            start = time.perf_counter()
            for attempt in range(count):
                await stage(short, lambda _s, _d: None, attempt)
            times["short"] += time.perf_counter() - start
            start = time.perf_counter()
            for i in range(count):
                subprocess.run([*argv, f"echo {i}"], check=True, stdout=subprocess.DEVNULL)
            times["short_ssh"] += time.perf_counter() - start
        for _ in range(rounds):
            with (tmp / "big.out").open("wb") as out:
                start = time.perf_counter()
                await stage(big, lambda _s, data: out.write(data))
                times["big_file"] = min(times["big_file"], time.perf_counter() - start)
            writer = LogStore(tmp / "logs").writer("bench", "big", 1)
            start = time.perf_counter()
            await stage(big, writer.feed)
            writer.finish()
            times["big_logstore"] = min(times["big_logstore"], time.perf_counter() - start)
            with (tmp / "seq.out").open("wb") as out:
                start = time.perf_counter()
                subprocess.run([*argv, f"seq 1 {lines}"], check=True, stdout=out)
                times["big_ssh"] = min(times["big_ssh"], time.perf_counter() - start)
            assert (tmp / "big.out").read_bytes() == (tmp / "seq.out").read_bytes()
    finally:
        await executor.close()
        subprocess.run([*argv[:-1], "-O", "exit", ADDRESS], capture_output=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=100)
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=5)  # load from elsewhere: best of 5
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pipedeck-ssh-bench-") as name:
        tmp = Path(name)
        (tmp / "sshd").mkdir()
        (tmp / "ws").mkdir()
        (tmp / "ws" / "pipedeck.yaml").write_text("version: 1\n")
        with running_sshd(tmp / "sshd") as sshd:
            t = asyncio.run(measure(sshd, tmp, args.stages, args.lines, args.rounds))
    rows = [
        (
            f"{args.stages} short remote stages, one after another",
            t["short"],
            f"{args.stages} × `ssh` via ControlMaster",
            t["short_ssh"],
            "<= 1.2x",
        ),
        (
            f"one stage printing {args.lines:,} lines, sink to a file",
            t["big_file"],
            f"`ssh host seq 1 {args.lines} > file`",
            t["big_ssh"],
            "<= 1.5x",
        ),
        (
            f"one stage printing {args.lines:,} lines, into the LogStore",
            t["big_logstore"],
            f"`ssh host seq 1 {args.lines} > file`",
            t["big_ssh"],
            "<= 1.5x",
        ),
    ]
    print("## SSH executor\n")
    print(f"A local OpenSSH {ADDRESS} server (throwaway keys), both sides paying the same remote")
    print("login shell per command. pipedeck: `SshExecutor.execute` over its one pooled asyncssh")
    print("connection (workspace sync included, nothing to send after the first stage).")
    print(f"Big output: best of {args.rounds} alternating rounds.\n")
    print("| benchmark | pipedeck (s) | peer | peer (s) | ratio | goal |")
    print("|---|---:|---|---:|---:|---|")
    for what, mine, peer, other, goal in rows:
        print(f"| {what} | {mine:.2f} | {peer} | {other:.2f} | {mine / other:.2f}x | {goal} |")


if __name__ == "__main__":
    main()
