"""Slurm jobs for the Slurm executor: the sbatch script and arguments, and the one poller per host.

`JobPoller` watches every job of one host with one command per interval (`squeue --states=all`
for all of them at once; `sacct` where accounting exists, else `scontrol show job`, for the few
that squeue no longer knows), backing off while nothing changes and polling at once when woken.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from shlex import quote

from engine.executors.base import ExecResult
from engine.resources import Proc
from engine.spec import Resources, SlurmOptions, Stage

POLL_MIN = 0.5  # seconds between polls while jobs change
POLL_MAX = 5.0  # backoff limit while nothing changes
POLL_GIVE_UP = 120.0  # consecutive failed polls for this long: the jobs are lost

PENDING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING"})
ACTIVE_STATES = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING"})
LOST_STATES = frozenset({"NODE_FAIL", "PREEMPTED", "BOOT_FAIL"})
UNREACHABLE = "UNREACHABLE"  # ours: polls failed for POLL_GIVE_UP; the job may still run
SQUEUE_FORMAT = "JobID:|,State:|,Reason:|,NodeList:|,exit_code:|"

Command = Callable[[list[str]], Awaitable[tuple[int, str, str]]]
"""Runs one Slurm command (argv) where the cluster is: (exit status, stdout, stderr)."""


@dataclass
class JobInfo:
    """What Slurm last said about one job."""

    state: str = "PENDING"
    reason: str | None = None
    node: str | None = None
    exit_code: int | None = None  # the batch script's, once finished

    @property
    def finished(self) -> bool:
        return self.state not in PENDING_STATES | ACTIVE_STATES


@dataclass
class WatchedJob:
    """One job under watch: its latest info and an event set whenever that changes."""

    job_id: str
    info: JobInfo = field(default_factory=JobInfo)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


def job_result(job_id: str, info: JobInfo) -> ExecResult:
    """How a finished job ends the attempt (SPEC §12's mapping)."""
    state, code, node = info.state, info.exit_code, info.node or "its node"
    if state == "COMPLETED":
        return ExecResult(code or 0)
    if state in ("TIMEOUT", "DEADLINE"):
        return ExecResult(None, status="timed_out", reason=f"job {job_id}: Slurm {state}")
    if state == "CANCELLED":
        return ExecResult(None, status="cancelled", reason=f"job {job_id} cancelled in Slurm")
    if state in LOST_STATES:
        return ExecResult(None, lost=True, reason=f"job {job_id}: {state} on {node}")
    if state == UNREACHABLE:
        return ExecResult(None, lost=True, reason=f"job {job_id}: Slurm unreachable: {info.reason}")
    if state == "VANISHED":
        return ExecResult(None, lost=True, reason=f"job {job_id} is no longer known to Slurm")
    if state == "OUT_OF_MEMORY":
        return ExecResult(code or None, reason=f"job {job_id}: out of memory (Slurm)")
    if code:
        return ExecResult(code)
    return ExecResult(None, reason=f"job {job_id}: Slurm {state} ({info.reason or 'no reason'})")


def _wait_status(raw: str) -> int | None:
    """squeue's exit_code is a wait status: 768 -> 3, a signal 15 -> 143."""
    try:
        status = int(raw)
    except ValueError:
        return None
    return 128 + (status & 0x7F) if status & 0x7F else status >> 8


def _exit_pair(text: str) -> int | None:
    """sacct's and scontrol's `CODE:SIGNAL` -> an exit code."""
    code, _, sig = text.partition(":")
    if sig.isdigit() and int(sig):
        return 128 + int(sig)
    return int(code) if code.isdigit() else None


def parse_squeue(text: str) -> dict[str, JobInfo]:
    """Lines of `squeue -O SQUEUE_FORMAT` -> job id -> info."""
    jobs = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 5 or not parts[0]:
            continue
        job_id, state, reason, node, raw = parts[:5]
        jobs[job_id] = JobInfo(
            state=state.split()[0],
            reason=None if reason in ("", "None") else reason,
            node=node or None,
            exit_code=_wait_status(raw),
        )
    return jobs


def parse_sacct(text: str) -> dict[str, JobInfo]:
    """Lines of `sacct -n -P -X -o JobID,State,ExitCode,NodeList` -> job id -> info."""
    jobs = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 4:
            continue
        job_id, state, code, node = parts[:4]
        jobs[job_id] = JobInfo(state.split()[0], None, node or None, _exit_pair(code))
    return jobs


def parse_scontrol(text: str) -> JobInfo | None:
    """`scontrol show job -o ID`'s one line -> info."""
    fields = dict(re.findall(r"(\w+)=(\S*)", text))
    if "JobState" not in fields:
        return None
    reason = fields.get("Reason")
    return JobInfo(
        state=fields["JobState"],
        reason=None if reason in (None, "None") else reason,
        node=fields.get("NodeList") if fields.get("NodeList") not in (None, "(null)") else None,
        exit_code=_exit_pair(fields.get("ExitCode", "")),
    )


SSTAT_FORMAT = "JobID,TRESUsageInTot"
_SIZES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def sstat_argv(job_ids: Iterable[str]) -> list[str]:
    """One `sstat` for every step of the jobs: CPU time and memory each one uses now."""
    return ["sstat", "--noheader", "--parsable2", "--allsteps",
            f"--jobs={','.join(job_ids)}", f"--format={SSTAT_FORMAT}"]  # fmt: skip


def parse_sstat(text: str) -> dict[str, list[Proc]] | None:
    """`sstat_argv`'s lines -> job id -> one `Proc` per step (CPU seconds, memory now); None
    when Slurm lists steps without figures (the cluster gathers no job accounting)."""
    jobs: dict[str, list[Proc]] = {}
    empty = False
    for line in text.splitlines():
        step, _, tres = line.strip().partition("|")
        if not step:
            continue
        usage = dict(item.partition("=")[::2] for item in tres.split(",") if "=" in item)
        if "cpu" not in usage:
            empty = True
            continue
        cpu, rss = _duration(usage["cpu"]), _size(usage.get("mem", "0"))
        jobs.setdefault(step.split(".")[0], []).append(Proc(step, cpu, rss))
    return None if empty and not jobs else jobs


def _duration(text: str) -> float:
    """Slurm's `[DD-][HH:]MM:SS[.mmm]` -> seconds."""
    days, _, clock = text.rpartition("-")
    seconds = 0.0
    for part in clock.split(":"):
        seconds = seconds * 60 + float(part or 0)
    return seconds + int(days or 0) * 86400


def _size(text: str) -> int:
    """Slurm's `63792K` -> bytes."""
    match = re.fullmatch(r"([\d.]+)([KMGTP]?)", text.strip())
    return int(float(match[1]) * _SIZES[match[2]]) if match else 0


class JobPoller:
    """All jobs of one host, polled with one command per interval (see the module docstring)."""

    def __init__(self, command: Command) -> None:
        self._command = command
        self._jobs: dict[str, WatchedJob] = {}
        self._wake = asyncio.Event()
        self._polled = asyncio.Event()  # set after each poll
        self._task: asyncio.Task[None] | None = None
        self._accounting: bool | None = None  # sacct works; None: not asked yet
        self.commands = 0  # Slurm commands issued by polls (for bench/)

    def watch(self, job_id: str) -> WatchedJob:
        """Start watching a job (the first poll follows at once)."""
        job = self._jobs[job_id] = WatchedJob(job_id)
        self.wake()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="slurm-poller")
        return job

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def wake(self) -> None:
        """Poll now (not sooner than POLL_MIN after the last poll)."""
        self._wake.set()

    async def fresh(self, limit: float) -> None:
        """Wait (at most `limit` seconds) for a poll that starts from now."""
        self._polled.clear()
        self.wake()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._polled.wait(), limit)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        interval = POLL_MIN
        failing_since: float | None = None
        while self._jobs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            ids = list(self._jobs)
            try:
                found = await self._poll(ids)
            except (OSError, RuntimeError) as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > POLL_GIVE_UP:
                    found = {i: JobInfo(UNREACHABLE, str(exc)) for i in ids}
                else:
                    interval = min(interval * 2, POLL_MAX)
                    continue
            failing_since = None
            changed = False
            for job_id, info in found.items():
                job = self._jobs.get(job_id)
                if job is not None and info != job.info:
                    job.info = info
                    job.changed.set()
                    changed = True
            interval = POLL_MIN if changed else min(interval * 2, POLL_MAX)
            self._polled.set()
            await asyncio.sleep(POLL_MIN)  # the floor between two polls, whatever wakes us

    async def _run(self, argv: list[str]) -> tuple[int, str, str]:
        self.commands += 1
        return await self._command(argv)

    async def _poll(self, ids: list[str]) -> dict[str, JobInfo]:
        """The state of every job in `ids` (VANISHED for those Slurm no longer knows)."""
        status, out, err = await self._run(
            ["squeue", "--noheader", "--states=all", f"--jobs={','.join(ids)}", "-O", SQUEUE_FORMAT]
        )
        if status != 0 and "Invalid job id" not in err:
            raise RuntimeError(f"squeue failed: {err.strip() or status}")
        found = parse_squeue(out) if status == 0 else {}
        missing = [i for i in ids if i not in found]
        if missing and self._accounting is not False:
            found.update(await self._sacct(missing))
            missing = [i for i in ids if i not in found]
        for job_id in missing:  # gone from squeue (and from sacct): ask scontrol, then give up
            status, out, _ = await self._run(["scontrol", "show", "job", "-o", job_id])
            info = parse_scontrol(out) if status == 0 else None
            found[job_id] = info or JobInfo("VANISHED")
        return found

    async def _sacct(self, ids: list[str]) -> dict[str, JobInfo]:
        status, out, _ = await self._run(
            ["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode,NodeList", "-j", ",".join(ids)]
        )
        self._accounting = status == 0
        return parse_sacct(out) if status == 0 else {}


def sbatch_argv(stage: Stage, options: SlurmOptions, job_dir: str, name: str) -> list[str]:
    """sbatch's arguments for one attempt (no environment, no secrets: those are in the script)."""
    argv = [
        "sbatch",
        "--parsable",
        "--no-requeue",  # a node failure is `lost`, and pipedeck's retries decide
        f"--job-name={name}",
        f"--chdir={job_dir}",
        f"--output={job_dir}/out",
        f"--error={job_dir}/err",
    ]
    argv += resource_args(stage.resources)
    for flag, value in (
        ("partition", options.partition),
        ("account", options.account),
        ("qos", options.qos),
    ):
        if value:
            argv.append(f"--{flag}={value}")
    return [*argv, *options.extra_args]


def resource_args(res: Resources) -> list[str]:
    """A stage's `resources` as sbatch/srun options."""
    argv = []
    if res.cpus:
        argv.append(f"--cpus-per-task={res.cpus}")
    if res.memory:
        argv.append(f"--mem={res.memory}")
    if res.gpus:
        argv.append(f"--gpus={res.gpus}")
    if res.time:
        argv.append(f"--time={_slurm_time(res.time)}")
    return argv


def _slurm_time(seconds: float) -> str:
    """Seconds -> Slurm's D-HH:MM:SS (Slurm rounds up to whole minutes)."""
    whole = max(1, int(-(-seconds // 1)))
    days, rest = divmod(whole, 86400)
    return f"{days}-{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


TOKEN_VAR = "PIPEDECK_SLURM_TASK"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PICK_SHELL = (
    "if command -v bash >/dev/null 2>&1; then set -- bash -e -o pipefail -c; "
    "else set -- sh -e -c; fi"
)


def job_script(stage: Stage, env: Iterable[tuple[str, str]], cwd: str, token: str) -> str:
    """The private script (mode 0600) a job runs: cd, the environment, the stage's command.

    Every process of the stage inherits `PIPEDECK_SLURM_TASK=<token>`: the mark the batch
    script sweeps by.
    """
    lines = [
        f"cd -- {quote(cwd)} || exit 1",
        *(f"export {k}={quote(v)}" for k, v in env if _ENV_NAME.fullmatch(k)),
        f"export {TOKEN_VAR}={token}",
        "set -- " + " ".join(map(quote, stage.shell)) if stage.shell else _PICK_SHELL,
        f'exec "$@" {quote(stage.run)}',
    ]
    return "\n".join(lines) + "\n"


def batch_script(job_dir: str, token: str, grace: float) -> str:
    """What sbatch gets on stdin: runs the private script, records its exit code in `exit`.

    `scancel --full --signal=TERM` signals every process of the job, this one too: it outlives
    the TERM (trapped after the fork, so the stage keeps the default), SIGKILLs the stage `grace`
    seconds later if it is still there, and once the stage ended SIGKILLs every process on the
    node carrying the job's mark: with `proctrack/linuxproc` Slurm loses track of processes
    that left the job's process tree (double fork, setsid), this finds them.
    """
    d = quote(job_dir)
    mark = f"{TOKEN_VAR}={token}"
    return (
        "#!/bin/sh\n"
        f"sh {d}/job.sh &\n"
        "pid=$!\n"
        "trap 'term=1' TERM\n"
        "while :; do\n"
        "  wait $pid; s=$?\n"
        "  kill -0 $pid 2>/dev/null || break\n"
        '  if [ -n "$term" ] && [ -z "$timer" ]; then\n'
        f"    (sleep {grace:g}; kill -KILL $pid) 2>/dev/null & timer=$!\n"
        "  fi\n"
        "done\n"
        "i=0\n"
        "while [ $i -lt 50 ]; do\n"
        f"  pids=$(grep -lzx {mark} /proc/[0-9]*/environ 2>/dev/null"
        " | sed 's,^/proc/\\([0-9]*\\)/environ$,\\1,')\n"
        '  [ -z "$pids" ] && break\n'
        "  kill -KILL $pids 2>/dev/null\n"
        "  i=$((i+1))\n"
        "done\n"
        '[ -n "$timer" ] && kill $timer 2>/dev/null\n'
        f"echo $s > {d}/exit.tmp && mv -f {d}/exit.tmp {d}/exit\n"
        "exit $s\n"
    )
