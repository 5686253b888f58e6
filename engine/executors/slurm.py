"""Run stages as Slurm jobs (SPEC §12).

One `SlurmExecutor` per host with `executor: slurm`. Each attempt gets a job directory
`<root>/.pipedeck/slurm/<token>/` on the shared file system (root: `workdir`, or the workspace
without one) holding `job.sh`, the private script (mode 0600: cd, the exports, secrets included,
and the stage's command), and the job's `out`, `err` and `exit` files. sbatch gets on stdin a
short batch script that runs `job.sh`: no environment value is on a command line, in `--export`
or in Slurm's copy of the batch script, so none shows in `ps` or `scontrol show job`. sbatch runs
with `--no-requeue` (a node failure is `lost`, and pipedeck's `retries` decide what follows).

Without `address` the Slurm commands run on this machine (with the environment of pipedeck,
minus the pipeline's secrets, plus `slurm.env`); with `address` they run on that login node over
the host's pooled SSH connection (`engine.executors.ssh`: the same pool and sync, no SFTP).
With `workdir` the workspace is synced there before each job (over SSH; locally with rsync) and
declared outputs come back after a success; without it jobs run in the workspace itself.

Output streams into the log by tailing `out` and `err` (locally, or `tail -c` over SSH). State
comes from one `JobPoller` per host (engine/executors/slurm_jobs.py). A pending job is reported
`queued` with Slurm's reason, a running one `running` with its node, through the `on_job` callback.

Cancel and pipedeck's timeout: `scancel --full --signal=TERM`, `kill_grace` (plus a margin for
the job's own kill and sweep), then `scancel --full --signal=KILL` and `scancel`; the attempt
returns once the job left the queue.
Every submitted job id is recorded under `.pipedeck/slurm-jobs/<host>/` until it ends: a
pipedeck that crashed leaves records, and the next start of pipedeck on the pipeline cancels
their jobs (`cancel_leftovers_soon`, from the session), as does the next executor for that host
(unless the process that submitted them still runs).

With `ProctrackType=proctrack/cgroup` Slurm kills every process of a job, double-forked ones
included. With `proctrack/linuxproc` it tracks parentage only; the job then cleans up after
itself on its node: the batch script SIGKILLs the stage `kill_grace` after a TERM and, once the
stage ended, every process carrying the job's mark (`PIPEDECK_SLURM_TASK`), so escaped processes
die too, unless the whole job is SIGKILLed first (`scancel` by hand, or Slurm's own KillWait).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import posixpath
import shlex
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import psutil

from engine import graph
from engine.executors.base import ExecResult, JobCallback, OutputSink
from engine.executors.slurm_jobs import (
    PENDING_STATES,
    UNREACHABLE,
    JobPoller,
    WatchedJob,
    batch_script,
    job_result,
    job_script,
    parse_sstat,
    resource_args,
    sbatch_argv,
    sstat_argv,
)
from engine.resources import Proc
from engine.rsync import nul_join
from engine.spec import Pipeline, SlurmOptions, Stage
from engine.sync import MANIFEST, Signature, artifact_files, brings_back, workspace_files

if TYPE_CHECKING:
    from engine.executors.ssh import SshExecutor

TAIL_INTERVAL = 0.25  # seconds between reads of a job's output files
POLL_WAIT = 5.0  # on cancel: how long to wait for a fresh poll of a job believed pending
KILL_MARGIN = 2.0  # after kill_grace: time for the job's own SIGKILL and sweep (batch_script)
STOP_WAIT = 60.0  # after the final scancel: how long to wait for the job to leave the queue
JOBS_DIR = "slurm-jobs"  # under .pipedeck: one record per job that may still be queued
GONE = ("Invalid job id", "already completing or completed")  # scancel of a job that ended

StateCallback = Callable[[str, str, str | None], None]  # (host, state, reason)


class Cluster(Protocol):
    """Where the Slurm commands run and the job files are: this machine or a login node."""

    root: str  # the directory jobs run in: `workdir`, or the workspace

    async def command(self, argv: list[str], stdin: bytes = b"") -> tuple[int, str, str]: ...

    async def read(self, path: str, offset: int) -> bytes: ...

    async def push(self, stage: Stage) -> None: ...

    async def fetch(self, stage: Stage) -> None: ...

    async def remove(self, job_dir: str) -> None: ...

    async def close(self) -> None: ...


class LocalCluster:
    """Slurm commands on this machine; job files on a local (shared) path."""

    def __init__(self, pipeline: Pipeline, options: SlurmOptions, workdir: str | None) -> None:
        self.pipeline = pipeline
        self.workspace = pipeline.workspace
        self.root = os.path.expanduser(workdir) if workdir else str(self.workspace)
        self._synced = workdir is not None
        secret = set(pipeline.secrets)
        base = {k: v for k, v in os.environ.items() if k not in secret}
        self._env = {**base, **options.env}

    async def command(self, argv: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
            )
        except OSError as exc:
            return 127, "", f"{argv[0]}: {exc.strerror or exc}"
        out, err = await proc.communicate(stdin)
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def read(self, path: str, offset: int) -> bytes:
        return await asyncio.to_thread(_read_from, path, offset)

    async def push(self, stage: Stage) -> None:
        if self._synced:
            patterns = [
                pattern
                for sid in graph.upstream(self.pipeline, {stage.id}) - {stage.id}
                for pattern in self.pipeline.stages[sid].outputs
            ]
            await _local_sync(self.workspace, Path(self.root), patterns)

    async def fetch(self, stage: Stage) -> None:
        if self._synced and stage.outputs:
            await asyncio.to_thread(_copy_outputs, Path(self.root), self.workspace, stage.outputs)

    async def remove(self, job_dir: str) -> None:
        await asyncio.to_thread(shutil.rmtree, job_dir, True)

    async def close(self) -> None:
        return None


class SshCluster:
    """Slurm commands on a login node over the host's pooled SSH connection."""

    def __init__(self, pipeline: Pipeline, host: str, on_state: StateCallback | None) -> None:
        from engine.executors.ssh import SshExecutor

        spec = pipeline.hosts[host]
        self._ssh: SshExecutor = SshExecutor(pipeline, host, on_state)
        self._synced = spec.workdir is not None
        self.root = self._ssh.host.workdir if self._synced else str(pipeline.workspace)
        options = spec.slurm or SlurmOptions()
        self._env = " ".join(f"{k}={shlex.quote(v)}" for k, v in options.env.items())
        self._home: str | None = None

    async def command(self, argv: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
        import asyncssh

        from engine.executors.ssh import ConnectError

        prefix = f"env {self._env} " if self._env else ""
        try:
            if self._home is None:
                await self._resolve_root()
            status, out, err = await self._ssh.command(prefix + shlex.join(argv), stdin)
        except (ConnectError, OSError, asyncssh.Error) as exc:
            raise OSError(f"host {self._ssh.host.name}: {exc}") from exc
        return status, out.decode(errors="replace"), err.decode(errors="replace")

    async def _resolve_root(self) -> None:
        """A workdir relative to the remote home becomes absolute (jobs `cd` elsewhere)."""
        _, out, _ = await self._ssh.command("pwd")
        self._home = out.decode().strip() or "/"
        self.root = posixpath.join(self._home, self.root)

    async def read(self, path: str, offset: int) -> bytes:
        import asyncssh

        try:
            return await self._ssh.read(path, offset)
        except asyncssh.Error as exc:
            raise OSError(f"host {self._ssh.host.name}: reading {path}: {exc}") from exc

    async def push(self, stage: Stage) -> None:
        if self._synced:
            await self._ssh.prepare(stage)

    async def fetch(self, stage: Stage) -> None:
        if self._synced and stage.outputs:
            await self._ssh.fetch(stage)

    async def remove(self, job_dir: str) -> None:
        await self.command(["rm", "-rf", "--", job_dir])

    async def close(self) -> None:
        await self._ssh.close()


class SlurmExecutor:
    """The executor for every stage on one `executor: slurm` host (see the module docstring)."""

    def __init__(
        self,
        pipeline: Pipeline,
        host: str,
        on_state_change: StateCallback | None = None,
        on_job: JobCallback | None = None,
    ) -> None:
        spec = pipeline.hosts[host]
        self.pipeline = pipeline
        self.host = host
        self.options = spec.slurm or SlurmOptions()
        self.on_job = on_job
        self.cluster: Cluster = (
            SshCluster(pipeline, host, on_state_change)
            if spec.address
            else LocalCluster(pipeline, self.options, spec.workdir)
        )
        self.poller = JobPoller(self._slurm)
        self.jobs: dict[str, str] = {}  # stage id -> job id, while the job is queued or running
        self.commands = 0  # Slurm commands issued (submissions, polls, cancels): for bench/
        self.sstats = 0  # sstat calls measuring running jobs (`processes`)
        self.no_usage: str | None = None  # why sstat gives no figures here, once known
        self._sinks: dict[str, OutputSink] = {}  # stage id -> its log, while its job runs
        self._records = pipeline.state_dir / JOBS_DIR / host
        self._swept = False

    async def _slurm(self, argv: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
        self.commands += 1
        return await self.cluster.command(argv, stdin)

    # -- the executor protocol ---------------------------------------------------------------

    async def execute(self, stage: Stage, env: Mapping[str, str], sink: OutputSink) -> ExecResult:
        """Submit `stage` as a job, stream its output, return how the job ended."""
        try:
            if not self._swept:
                self._swept = True
                await self.cancel_leftovers()
            await self.cluster.push(stage)
            token = uuid.uuid4().hex
            job_dir = f"{self.cluster.root}/.pipedeck/slurm/{token}"
            submission = asyncio.create_task(self._submit(stage, env, job_dir, token))
            try:
                job_id = await asyncio.shield(submission)
            except asyncio.CancelledError:
                await self._abandon(submission)
                raise
        except OSError as exc:
            return ExecResult(None, reason=f"host {self.host}: {exc}")
        self.jobs[stage.id] = job_id
        self._sinks[stage.id] = sink
        job = self.poller.watch(job_id)
        self._report(stage, "queued", f"submitted as job {job_id}", job_id, None)
        offsets = {"stdout": 0, "stderr": 0}
        tail = asyncio.create_task(self._tail(job_dir, offsets, sink))
        try:
            result = await self._follow(stage, job)
        except asyncio.CancelledError:
            await self._stop(job, stage.kill_grace)
            raise
        finally:
            tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tail
            with contextlib.suppress(OSError):
                await self._read_new(job_dir, offsets, sink)  # what the job wrote last
            self.poller.forget(job_id)
            self.jobs.pop(stage.id, None)
            self._sinks.pop(stage.id, None)
            with contextlib.suppress(OSError):
                await self.cluster.remove(job_dir)  # the private script goes with it
        if job.info.state != UNREACHABLE:  # else the next start cancels it, if it still runs
            await asyncio.to_thread(self._unrecord, job_id)
        if brings_back(stage, result):
            try:
                await self.cluster.fetch(stage)
            except OSError as exc:
                if result.exit_code:
                    return result
                return ExecResult(None, reason=f"host {self.host}: fetching outputs failed: {exc}")
        return result

    async def processes(self, run_id: str, stages: Mapping[str, int]) -> dict[str, list[Proc]]:
        """What the jobs of `stages` use now: one `sstat` for all of them, a `Proc` per job step.
        Where sstat has no figures (no job accounting gathered, or no sstat) the log of one
        running stage says so, once, and sstat is not asked again."""
        jobs = {job_id: sid for sid, job_id in self.jobs.items() if sid in stages}
        if not jobs or self.no_usage is not None:
            return {}
        self.sstats += 1
        status, out, err = await self.cluster.command(sstat_argv(jobs))
        found = parse_sstat(out) if status == 0 else {}
        if found is None or status == 127:  # steps without figures, or no sstat at all
            why = err.strip().rpartition("\n")[2] if status else "no job accounting gathered"
            self.no_usage = f"no CPU or memory figures for its jobs: sstat: {why}"
            sid = next(iter(jobs.values()))
            if sid in self._sinks:
                self._sinks[sid](
                    "stderr", f"pipedeck: host {self.host}: {self.no_usage}\n".encode()
                )
            return {}
        return {jobs[job_id]: steps for job_id, steps in found.items() if job_id in jobs}

    async def close(self) -> None:
        """Cancel every job still queued or running, stop polling, disconnect."""
        left = list(self.jobs.values())
        if left:
            with contextlib.suppress(OSError):
                await self._slurm(["scancel", *left])
        await self.poller.close()
        await self.cluster.close()

    # -- submission --------------------------------------------------------------------------

    async def _submit(self, stage: Stage, env: Mapping[str, str], job_dir: str, token: str) -> str:
        cwd = posixpath.normpath(posixpath.join(self.cluster.root, stage.cwd))
        script = job_script(stage, env.items(), cwd, token).encode("utf-8", "surrogateescape")
        # the private script travels on stdin: umask 077 makes it 0600 from its first byte
        status, _, err = await self.cluster.command(
            ["sh", "-c", 'umask 077 && mkdir -p -- "$1" && cat > "$1/job.sh"', "sh", job_dir],
            script,
        )
        if status != 0:
            raise OSError(f"cannot write the job script in {job_dir}: {err.strip()}")
        name = f"pipedeck:{self.pipeline.name}:{stage.id}"
        argv = sbatch_argv(stage, self.options, job_dir, name)
        batch = batch_script(job_dir, token, stage.kill_grace).encode()
        status, out, err = await self._slurm(argv, batch)
        if status != 0:
            raise OSError(f"sbatch failed: {err.strip() or out.strip() or status}")
        job_id = out.strip().split(";")[0]
        await asyncio.to_thread(self._record, job_id, stage.id)
        return job_id

    async def _abandon(self, submission: asyncio.Task[str]) -> None:
        """Cancelled while sbatch ran: let it finish, then cancel the job it made and return once
        that job left the queue."""
        try:
            job_id = await submission
        except OSError:
            return  # no job was made
        job = self.poller.watch(job_id)
        try:
            await self._slurm(["scancel", job_id])
            await self._until_finished(job, STOP_WAIT, gone=True)
        except OSError:
            return  # Slurm unreachable: the job's record stays for the next start
        finally:
            self.poller.forget(job_id)
        await asyncio.to_thread(self._unrecord, job_id)

    def _report(
        self, stage: Stage, status: str, reason: str | None, job_id: str, node: str | None
    ) -> None:
        if self.on_job is not None:
            self.on_job(stage.id, status, reason, job_id, node)

    async def _follow(self, stage: Stage, job: WatchedJob) -> ExecResult:
        """Report the job's changes until it ends; its result."""
        shown: tuple[str, str | None] | None = None
        while True:
            await job.changed.wait()
            job.changed.clear()
            info = job.info
            if info.finished:
                if info.node and shown != ("running", info.node):  # it ran between two polls
                    self._report(stage, "running", None, job.job_id, info.node)
                return job_result(job.job_id, info)
            queued = info.state in PENDING_STATES
            now = ("queued", info.reason) if queued else ("running", info.node)
            if now != shown:
                shown = now
                if now[0] == "queued":
                    why = f"Slurm: {info.reason}" if info.reason else "in Slurm's queue"
                    self._report(stage, "queued", why, job.job_id, None)
                else:
                    self._report(stage, "running", None, job.job_id, info.node)

    # -- output ------------------------------------------------------------------------------

    async def _tail(self, job_dir: str, offsets: dict[str, int], sink: OutputSink) -> None:
        """Stream new bytes of `out` and `err` until cancelled; wake the poller at the end."""
        started = False
        while True:
            try:
                got = await self._read_new(job_dir, offsets, sink)
                if got and not started:
                    started = True
                    self.poller.wake()  # output: the job runs, say so before the next poll
                if await self.cluster.read(f"{job_dir}/exit", 0):
                    self.poller.wake()
            except OSError:
                pass  # a dropped connection: the job runs on; read again when it is back
            await asyncio.sleep(TAIL_INTERVAL)

    async def _read_new(self, job_dir: str, offsets: dict[str, int], sink: OutputSink) -> bool:
        got = False
        for stream, name in (("stdout", "out"), ("stderr", "err")):
            data = await self.cluster.read(f"{job_dir}/{name}", offsets[stream])
            if data:
                offsets[stream] += len(data)
                sink(stream, data)
                got = True
        return got

    # -- cancel ------------------------------------------------------------------------------

    async def _stop(self, job: WatchedJob, grace: float) -> None:
        """SIGTERM the job, wait `grace`, kill it; return once it left the queue."""
        job_id = job.job_id
        try:
            if job.info.state in PENDING_STATES:
                await self.poller.fresh(POLL_WAIT)  # it may have started since the last poll
            if not job.info.finished and job.info.state not in PENDING_STATES:
                await self._slurm(["scancel", "--full", "--signal=TERM", job_id])
                await self._until_finished(job, grace + KILL_MARGIN)
            if not job.info.finished:
                await self._slurm(["scancel", "--full", "--signal=KILL", job_id])
                await self._slurm(["scancel", job_id])
            await self._until_finished(job, STOP_WAIT, gone=True)
        except OSError:
            return  # the record stays: the next start cancels the job
        await asyncio.to_thread(self._unrecord, job_id)

    async def _until_finished(self, job: WatchedJob, limit: float, gone: bool = False) -> None:
        """Wait (at most `limit`) until the job ended (`gone`: and is no longer COMPLETING)."""
        deadline = time.monotonic() + limit
        while not job.info.finished or (gone and job.info.state == "COMPLETING"):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            job.changed.clear()
            self.poller.wake()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.changed.wait(), left)

    # -- jobs a crashed pipedeck left --------------------------------------------------------

    def _record(self, job_id: str, stage_id: str) -> None:
        me = psutil.Process()
        self._records.mkdir(parents=True, exist_ok=True)
        record = {"pid": me.pid, "started": me.create_time(), "stage": stage_id}
        (self._records / job_id).write_text(json.dumps(record))

    def _unrecord(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._records / job_id).unlink()

    def _leftovers(self) -> list[str]:
        """Recorded jobs whose pipedeck process is gone."""
        if not self._records.is_dir():
            return []
        left = []
        for path in self._records.iterdir():
            try:
                record = json.loads(path.read_text())
                alive = psutil.Process(record["pid"]).create_time() == record["started"]
            except (OSError, ValueError, KeyError, psutil.Error):
                alive = False
            if not alive:
                left.append(path.name)
        return left

    async def cancel_leftovers(self) -> list[str]:
        """Cancel the jobs an interrupted pipedeck left on this host; their ids."""
        left = await asyncio.to_thread(self._leftovers)
        if left:
            status, _, err = await self._slurm(["scancel", *left])
            if status != 0 and not any(gone in err for gone in GONE):
                raise OSError(f"cancelling jobs {', '.join(left)} an interrupted run left: {err}")
            for job_id in left:
                await asyncio.to_thread(self._unrecord, job_id)
        return left


def cancel_leftovers_soon(pipeline: Pipeline) -> threading.Thread:
    """Cancel the jobs a crashed pipedeck left on the pipeline's Slurm hosts, whether or not
    this run uses them: in a thread of its own (with its own event loop and SSH connections),
    which pipedeck's exit waits for. Where Slurm cannot be reached the records stay, and the
    host's executor tries again (and says why) when a stage runs there."""

    async def cancel_all() -> None:
        for host, spec in pipeline.hosts.items():
            if spec.executor != "slurm" or not (pipeline.state_dir / JOBS_DIR / host).is_dir():
                continue
            executor = SlurmExecutor(pipeline, host)
            try:
                await executor.cancel_leftovers()
            except OSError:
                pass  # the records stay for the executor's own sweep
            finally:
                await executor.close()

    thread = threading.Thread(
        target=asyncio.run, args=(cancel_all(),), name="pipedeck-slurm-leftovers"
    )
    thread.start()
    return thread


def shell_command(stage: Stage, job_id: str | None, workdir: str) -> list[str]:
    """The command that opens `pipedeck shell STAGE` on a Slurm stage, run where Slurm is.

    Inside the running job (`srun --overlap --jobid`), else in a new allocation with the stage's
    resources. The caller provides the stage's environment (srun exports it to the shell).
    """
    cwd = posixpath.normpath(posixpath.join(workdir, stage.cwd))
    inner = ["sh", "-c", 'cd -- "$1" && exec "${SHELL:-bash}" -l', "sh", cwd]
    if job_id is not None:
        return ["srun", "--overlap", f"--jobid={job_id}", "--pty", *inner]
    return ["srun", "--pty", *resource_args(stage.resources), *inner]


def _read_from(path: str, offset: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read()
    except FileNotFoundError:
        return b""


async def _local_sync(workspace: Path, workdir: Path, artifacts: list[str]) -> None:
    """Bring a local `workdir` in step with the workspace as SSH hosts are (engine.sync): what
    they get (no .git, .pipedeck or ignored files) and the upstream `artifacts`, copied with
    rsync (only changed files); files sent before and since removed here are deleted there
    (the manifest `.pipedeck-sync.json` names what was sent; what jobs made is never touched)."""
    rsync = shutil.which("rsync")
    if rsync is None:
        raise OSError("rsync is needed to copy the workspace to workdir")
    manifest = workdir / MANIFEST

    def listing() -> tuple[dict[str, Signature], list[str]]:
        workdir.mkdir(parents=True, exist_ok=True)
        files = {**workspace_files(workspace), **artifact_files(workspace, artifacts)}
        try:
            sent = json.loads(manifest.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            sent = {}
        gone = [rel for rel in sent if rel not in files and not (workspace / rel).exists()]
        return files, gone

    files, gone = await asyncio.to_thread(listing)
    proc = await asyncio.create_subprocess_exec(
        rsync,
        "-a",
        "--delete-missing-args",
        "--from0",
        "--files-from=-",
        f"{workspace}/",
        f"{workdir}/",
        stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate(nul_join(sorted([*files, *gone])))
    if proc.returncode:
        raise OSError(f"copying the workspace to {workdir} failed: {err.decode().strip()}")
    record = json.dumps({"version": 1, "files": files}, separators=(",", ":"))
    await asyncio.to_thread(manifest.write_text, record)


def _copy_outputs(workdir: Path, workspace: Path, patterns: tuple[str, ...]) -> None:
    for rel in artifact_files(workdir, patterns):
        target = workspace / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(workdir / rel, target)
