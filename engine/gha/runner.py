"""The job runner: `engine.gha.runner.main()` reads one job (JSON on stdin, written by the
loader) and runs its steps in order in the job's workspace, as a hosted Linux runner would.

Each step's status goes to stdout as a step marker line (engine.gha.commands) that the engine
turns into `step_status` events. Job results and outputs are files in
`.pipedeck/gha/RUN_ID/jobs/`, read by the jobs that need this one (`needs.<job>.outputs`).
Exit status: 0 when the job succeeded, 1 when it failed, JOB_SKIPPED (78) when it was skipped,
JOB_CANCELLED (79) when it was cancelled: by fail-fast (another instance of its matrix failed),
or by SIGTERM/SIGINT (pipedeck's cancel), after which the running step's processes get SIGTERM
(SIGKILL `STEP_GRACE` seconds later), the step ends `cancelled`, and the `always()` and
`cancelled()` steps still run; a second signal kills the running step at once and runs no more.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import select
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

from engine.gha import expr
from engine.gha.commands import (
    JOB_CANCELLED,
    JOB_SKIPPED,
    CommandFilter,
    read_env_file,
    safe_name,
    split_lines,
    step_marker,
)
from engine.gha.context import runner_arch

TYPE_CHECKING = False  # not imported at run time: the job runner starts faster without typing
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

SHELLS = {
    "bash": ("bash --noprofile --norc -eo pipefail {0}", ".sh"),
    "sh": ("sh -e {0}", ".sh"),
    "python": ("python {0}", ".py"),
    "pwsh": ("pwsh -command \". '{0}'\"", ".ps1"),
    "powershell": ("pwsh -command \". '{0}'\"", ".ps1"),
}
_current: int | None = None  # the running step's process (group) id
_state_root: Path | None = None  # the repository's .pipedeck/gha, when jobs run in a copy
_job: JobRunner | None = None  # the running job instance, cancelled by SIGTERM/SIGINT
STEP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL to a cancelled or timed-out step
DRAIN = 0.5  # seconds a step's output may still come after its process exited


class JobRunner:
    """Runs one job instance (one matrix combination) and records its result."""

    def __init__(
        self,
        job: Mapping[str, Any],
        combo: Mapping[str, Any],
        instance: str,
        offset: int = 0,
        workspace: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """`workspace` and `environ` are the job's (the current directory and environment
        when the runner runs it; the engine names them to decide a skip before it starts)."""
        self.job = job
        self.offset = offset  # step numbers of earlier instances run by the same stage
        self.workflow = job["workflow"]
        # the workflow's env and defaults; a called workflow's jobs have their own, not the caller's
        self.top = {"env": {}, "defaults": {}} if job.get("call") else self.workflow
        # the stage runs in the workspace, here or on an SSH host
        self.workspace = Path.cwd() if workspace is None else workspace
        self.environ = os.environ if environ is None else environ
        self.run_id = self.environ.get("PIPEDECK_RUN_ID", "local")
        # pipedeck's state is the repository's `.pipedeck/gha`, for a job in a copy of it too:
        # the copy has no `.pipedeck` (hatchling's sdist of attrs packed it, venvs and all)
        own = _state_root if workspace is None else None
        self.state_root = own or self.workspace / ".pipedeck" / "gha"
        self.state = self.state_root / self.run_id
        self.instance = instance
        self.combo = dict(combo)
        self.temp = self.state / "tmp" / safe_name(instance)
        self.tool_cache = self.state_root / "tool-cache"
        self.masks: list[str] = [v for k, v in self.environ.items() if k in _secret_names(job)]
        self.env_ctx: dict[str, str] = {}
        self.path_add: list[str] = []
        self.steps_ctx: dict[str, Any] = {}
        # `steps.ID` -> why it was skipped, `needs.JOB.outputs.NAME` -> why it is empty
        self.skipped: dict[str, str] = read_empty_outputs(self.state, job["needs"])
        self.failed = False
        self.cancelled = ""  # why the job was cancelled while it ran (fail-fast, a signal)
        self.hard = False  # cancelled twice: no more steps
        self.pending = False  # cancelled while no step process ran: stop the one starting now
        self.made = 0  # files made in self.temp
        self.step_files: dict[str, str] = {}
        self.scripts: dict[str, str] = {}  # the job's script file of each suffix, reused
        self._base_env: dict[str, str] | None = None
        self.post: list[Any] = []  # callables run after the steps (actions/cache saves)
        self.summary: list[str] = []
        self.unavailable: list[str] = []  # steps skipped as they cannot run here
        self.missing: list[str] = []  # failures for want of a Python... a runner would install
        self.needs = read_needs(self.state, job["needs"])
        self.inputs = self.workflow["inputs"]
        if job.get("call"):  # a job of a called reusable workflow: `with:` are its inputs
            call = job["call"]
            ctx = self.contexts({"needs": read_needs(self.state, call["needs"]), "matrix": {}})
            given = expr.interpolate_all(call["with"] or {}, ctx)
            self.inputs = {**call["inputs"], **given}

    # -- contexts

    def contexts(self, extra: Mapping[str, Any] | None = None) -> expr.Context:
        github = dict(self.workflow["github"])
        github.update({"job": self.job["job"], "workspace": str(self.workspace)})
        if not github.get("event_path"):  # the file GITHUB_EVENT_PATH names (base_env writes it)
            github["event_path"] = str(self.temp / "event.json")
        values = {
            "github": github,
            "env": {**self.env_ctx},
            "vars": {},
            "secrets": {n: self.environ.get(n, "") for n in _secret_names(self.job)},
            "matrix": self.combo,
            "needs": self.needs,
            "steps": self.steps_ctx,
            "job": {"status": self.result()},
            "runner": {
                "os": "Linux",
                "arch": runner_arch(),
                "name": "pipedeck",
                "temp": str(self.temp),
                "tool_cache": str(self.tool_cache),
                "debug": "",
            },
            "strategy": self.job["strategy"],
            "inputs": self.inputs,
            "jobs": {
                short: self.needs.get(full)
                for short, full in (self.job.get("aggregate") or {}).items()
            },
            **(extra or {}),
            "skipped": self.skipped,  # not a context: named by errors about empty outputs
        }
        status = expr.Status(failed=self.failed, cancelled=bool(self.cancelled))
        return expr.Context(values, status, self.workspace)

    def base_env(self) -> dict[str, str]:
        """The runner's environment of every step (made once per job; a copy)."""
        if self._base_env is None:
            self._base_env = self._make_base_env()
        return dict(self._base_env)

    def _make_base_env(self) -> dict[str, str]:
        github = self.workflow["github"]
        env = dict(os.environ)
        pipx = self.tool_cache / "pipx" / safe_name(self.instance)  # one per job, as venvs
        env.update(
            {
                "CI": "true",
                "GITHUB_ACTIONS": "true",
                "GITHUB_WORKSPACE": str(self.workspace),
                "GITHUB_SHA": github["sha"],
                "GITHUB_REF": github["ref"],
                "GITHUB_REF_NAME": github["ref_name"],
                "GITHUB_REF_TYPE": github["ref_type"],
                "GITHUB_REPOSITORY": github["repository"],
                "GITHUB_REPOSITORY_OWNER": github["repository_owner"],
                "GITHUB_EVENT_NAME": github["event_name"],
                "GITHUB_EVENT_PATH": self.event_path(),
                "GITHUB_ACTOR": github["actor"],
                "GITHUB_WORKFLOW": str(github["workflow"]),
                "GITHUB_JOB": self.job["job"],
                "GITHUB_RUN_ID": github["run_id"],
                "GITHUB_RUN_NUMBER": github["run_number"],
                "GITHUB_RUN_ATTEMPT": github["run_attempt"],
                "GITHUB_SERVER_URL": github["server_url"],
                "GITHUB_API_URL": github["api_url"],
                "GITHUB_GRAPHQL_URL": github["graphql_url"],
                "GITHUB_HEAD_REF": github["head_ref"],
                "GITHUB_BASE_REF": github["base_ref"],
                "RUNNER_OS": "Linux",
                "RUNNER_ARCH": runner_arch(),
                "RUNNER_NAME": "pipedeck",
                "RUNNER_TEMP": str(self.temp),
                "RUNNER_TOOL_CACHE": str(self.tool_cache),
                "RUNNER_ENVIRONMENT": "self-hosted",
                # as runner images set them: `pipx install` goes to the tool cache
                # (on PATH), not to the user's ~/.local
                "PIPX_HOME": str(pipx),
                "PIPX_BIN_DIR": str(pipx / "bin"),
                "PATH": os.pathsep.join([str(pipx / "bin"), env.get("PATH", os.defpath)]),
                # a hosted runner's home is the job's: `git config --global` (pip's CI sets
                # user.name) writes to a file of the job, not to the user's own
                "GIT_CONFIG_GLOBAL": self.git_config(env),
            }
        )
        return env

    def git_config(self, env: Mapping[str, str]) -> str:
        """The job's global git config: the user's own included (read, never written)."""
        home = Path(env.get("HOME") or Path.home())
        xdg = Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "git" / "config"
        own = [env["GIT_CONFIG_GLOBAL"]] if env.get("GIT_CONFIG_GLOBAL") else []
        own = own or [str(xdg), str(home / ".gitconfig")]
        lines = ["# the job's global git config (pipedeck): `git config --global` writes here"]
        for one in own:
            quoted = one.replace("\\", "\\\\").replace('"', '\\"')
            lines += ["[include]", f'\tpath = "{quoted}"']
        path = self.temp / "gitconfig"
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    def event_path(self) -> str:
        path = self.temp / "event.json"
        if not path.exists():
            path.write_text(json.dumps(self.workflow["github"]["event"]))
        return str(path)

    # -- the job

    def run(self) -> str:
        """Run the steps; returns the job's result: success, failure or skipped."""
        self.temp.mkdir(parents=True, exist_ok=True)
        for scope in (self.top["env"], self.job["env"]):
            for key, value in (scope or {}).items():
                self.env_ctx[key] = expr.to_str(expr.interpolate(_text(value), self.contexts()))
        if self.job.get("aggregate"):  # the caller of a reusable workflow: its jobs' verdict
            self.failed = any(n["result"] in ("failure", "cancelled") for n in self.needs.values())
        for index, step in enumerate(self.job["steps"]):
            self.step(index, step)
        for action in self.post:
            action()
        outputs, empty = {}, {}
        for name, value in (self.job["outputs"] or {}).items():
            try:
                outputs[name] = expr.to_str(expr.interpolate(_text(value), self.contexts()))
            except expr.ExprError as err:
                print(f"##[error]outputs.{name}: {err}", flush=True)
            sources = [s for s in _STEP_REF.findall(_text(value)) if f"steps.{s}" in self.skipped]
            if not outputs.get(name) and sources:
                why = self.skipped[f"steps.{sources[0]}"]
                empty[name] = f"{self.job['job']}'s step {sources[0]} was skipped ({why})"
        result = self.result()
        write_result(
            self.state, self.job["job"], self.instance, result, outputs, self.cancelled,
            self.unavailable, empty, missing=self.missing if result == "failure" else None,
        )  # fmt: skip
        if self.summary:
            summary = self.state / "summary" / f"{safe_name(self.instance)}.md"
            summary.parent.mkdir(parents=True, exist_ok=True)
            summary.write_text("\n".join(self.summary))
        # as GitHub empties RUNNER_TEMP when a job ends: its step scripts hold the secrets
        # interpolated into them, and the run's folder is kept for PIPEDECK_KEEP_RUNS runs
        shutil.rmtree(self.temp, ignore_errors=True)
        return result

    def result(self) -> str:
        if self.cancelled:
            return "cancelled"
        return "failure" if self.failed else "success"

    def cancel(self, reason: str) -> None:
        """Cancel the job (from a signal handler or another thread, so without blocking): the
        running step's processes end, and only the steps that run when cancelled (`always()`,
        `cancelled()`) are left to run. Cancelled again: the step is killed now, no more run."""
        self.hard = bool(self.cancelled)
        self.cancelled = self.cancelled or reason
        if (pid := _current) is not None:  # read once: the step may end meanwhile
            _stop_group(pid, 0.0 if self.hard else STEP_GRACE)
        else:  # between steps (the next one's `if:` sees it) or while one is being started
            self.pending = True

    def step(self, index: int, step: Mapping[str, Any]) -> None:
        self.pending = False  # a cancel from now on is this step's
        ctx = self.contexts()
        name = self.step_name(step, ctx)
        step_id = str(step.get("id") or f"__step{index}")
        try:
            run = expr.condition(step.get("if"), ctx) and not self.hard
            failed = (self.failed or self.cancelled) and expr.only_on_success(step.get("if"))
            reason = f"if: {step.get('if')} is false"
            if failed or self.hard:
                reason = self.cancelled or "an earlier step failed"
        except expr.ExprError as err:
            print(f"##[error]{name}: if: {err}", flush=True)
            run, self.failed, reason = False, True, f"if: {err}"
        if run and step.get("skip"):  # it would run, but cannot here
            print(f"##[warning]{name}: skipped: {step['skip']}", flush=True)
            run, reason = False, step["skip"]
            self.unavailable.append(name)
        if not run:
            self.mark(index, name, "skipped", reason=reason)
            self.steps_ctx[step_id] = {"outputs": {}, "outcome": "skipped", "conclusion": "skipped"}
            self.skipped[f"steps.{step_id}"] = reason
            return
        self.mark(index, name, "running", then=f"##[group]{name}")
        started = time.monotonic()
        try:
            outcome, outputs, code = self.execute(step, ctx)
        except (expr.ExprError, ValueError, OSError) as err:
            print(f"##[error]{name}: {err}", flush=True)
            outcome, outputs, code = "failure", {}, None
        continue_on_error = step.get("continue-on-error", False)
        if isinstance(continue_on_error, str):
            continue_on_error = expr.truthy(expr.interpolate(continue_on_error, ctx))
        status = {"success": "succeeded", "failure": "failed", "timed_out": "timed_out"}[outcome]
        if self.cancelled and outcome != "success":
            status = "cancelled"
        outcome = "success" if outcome == "success" else "failure"
        conclusion = "success" if continue_on_error else outcome
        if conclusion == "failure":
            self.failed = True
        allowed: dict[str, Any] = {"allowed": True} if outcome != conclusion else {}
        self.steps_ctx[step_id] = {"outputs": outputs, "outcome": outcome, "conclusion": conclusion}
        self.mark(
            index,
            name,
            status,
            before="##[endgroup]",
            duration=time.monotonic() - started,
            exit_code=code,
            **allowed,  # a failure continue-on-error allows: not why the job failed
        )

    def step_name(self, step: Mapping[str, Any], ctx: expr.Context) -> str:
        if step.get("name") is not None:
            try:
                return expr.to_str(expr.interpolate(_text(step["name"]), ctx))
            except expr.ExprError:
                return _text(step["name"])
        if "uses" in step:
            return f"Run {step['uses']}"
        return (
            "Run " + _text(step.get("run", "")).strip().splitlines()[0][:80]
            if step.get("run")
            else "Run"
        )

    def mark(
        self, index: int, name: str, status: str, before: str = "", then: str = "", **fields: Any
    ) -> None:
        """Print a step's marker line (with the lines `before` and `then`). A starting step's
        goes out at once; a finished one's waits in stdout's buffer for the next write (the
        next step's start, a few hundred microseconds later): one pipe write per step less."""
        marker = step_marker(step=self.offset + index, name=name, status=status, **fields)
        lines = [line for line in (before, marker, then) if line]
        sys.stdout.write("\n".join(lines) + "\n")
        if status == "running" or self.cancelled:  # cancelled: a SIGKILL may come soon
            sys.stdout.flush()

    def execute(
        self, step: Mapping[str, Any], ctx: expr.Context
    ) -> tuple[str, dict[str, str], int | None]:
        """Run one step; (outcome, outputs, exit code)."""
        env = {**self.env_ctx}
        for key, value in (step.get("env") or {}).items():
            env[key] = expr.to_str(expr.interpolate(_text(value), ctx))
        timeout = step.get("timeout-minutes")
        if isinstance(timeout, str):
            timeout = expr.to_number(expr.interpolate(timeout, ctx))
        seconds = float(timeout) * 60 if isinstance(timeout, int | float) else None
        if "run" in step:
            script = expr.to_str(expr.interpolate(_text(step["run"]), ctx))
            defaults = {**self.top["defaults"], **self.job["defaults"]}
            shell = step.get("shell") or defaults.get("shell")
            workdir = step.get("working-directory") or defaults.get("working-directory")
            if workdir:
                workdir = expr.to_str(expr.interpolate(_text(workdir), ctx))
            return self.script(script, shell, workdir, env, seconds)
        from engine.gha.actions import run_action

        with_ = {
            k: expr.to_str(expr.interpolate(_text(v), ctx))
            for k, v in (step.get("with") or {}).items()
        }
        return run_action(self, str(step["uses"]), with_, env, seconds)

    def script(
        self,
        script: str,
        shell: str | None,
        workdir: str | None,
        env: Mapping[str, str],
        timeout: float | None,
    ) -> tuple[str, dict[str, str], int | None]:
        """Run a `run:` script with its shell as GitHub does (script in a temp file, `{0}`)."""
        if shell is None:
            template, suffix = ("bash -e {0}", ".sh") if _has_bash() else ("sh -e {0}", ".sh")
        elif shell in SHELLS:
            template, suffix = SHELLS[shell]
        elif "{0}" in shell:
            template, suffix = shell, ""
        else:
            template, suffix = shell + " {0}", ""
        path = self.write_script(script, suffix)
        argv = [word.replace("{0}", path) for word in _split(template)]
        cwd = self.workspace / workdir if workdir else self.workspace
        return self.process(argv, env, cwd, timeout)

    def write_script(self, script: str, suffix: str) -> str:
        """The script's file: one per job and suffix, rewritten in place for each step (a
        new file, or a truncated one, costs ten times more on a journaling file system)."""
        if suffix not in self.scripts:
            self.scripts[suffix] = self.temp_file("script" + suffix)
        path = self.scripts[suffix]
        data = script.encode("utf-8", "surrogateescape")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)
        return path

    def process(
        self,
        argv: list[str],
        env: Mapping[str, str],
        cwd: Path,
        timeout: float | None,
    ) -> tuple[str, dict[str, str], int | None]:
        """Run a step's process with the GITHUB_* files; (outcome, outputs, exit code)."""
        files = self.files()
        full = self.step_env({**env, **files})
        if not cwd.is_dir():
            raise ValueError(f"working-directory {cwd} does not exist")
        try:  # the program is looked up in the step's PATH, as execvpe does
            code, timed_out = stream(argv, full, cwd, timeout, CommandFilter(self.masks))
        except FileNotFoundError:
            if "/" in argv[0]:
                raise ValueError(f"cannot run {argv[0]!r}: no such file") from None
            raise ValueError(f"cannot run {argv[0]!r}: not found in PATH") from None
        outputs = self.collect(files)
        if timed_out:
            print(f"##[error]the step timed out after {timeout:g}s", flush=True)
            return "timed_out", outputs, code
        if code != 0 and self.cancelled:
            print("##[error]The operation was canceled.", flush=True)  # GitHub's words
        elif code == 127:  # the shell's own line above names the command
            print(f"##[error]Process completed with exit code 127: {_NOT_FOUND}", flush=True)
        elif code != 0:
            print(f"##[error]Process completed with exit code {code}.", flush=True)
        return ("success" if code == 0 else "failure"), outputs, code

    def step_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """A step process's environment: the runner's, `env`, and the PATH steps added."""
        full = self.base_env()
        full.update(env)
        full["PATH"] = os.pathsep.join([*reversed(self.path_add), full.get("PATH", os.defpath)])
        return full

    def temp_file(self, name: str) -> str:
        """A new file name in the job's temp directory (this process alone writes there)."""
        self.made += 1
        return str(self.temp / f"{self.made}_{name}")

    def files(self) -> dict[str, str]:
        """The empty GITHUB_ENV, GITHUB_OUTPUT, GITHUB_PATH and GITHUB_STEP_SUMMARY files of the
        next step: made once per job, emptied after each step has been read (`collect`)."""
        for name in _FILES:
            if name not in self.step_files:
                self.step_files[name] = self.temp_file(name.lower())
                open(self.step_files[name], "w").close()
        return dict(self.step_files)

    def collect(self, files: Mapping[str, str]) -> dict[str, str]:
        """Apply GITHUB_ENV and GITHUB_PATH, return GITHUB_OUTPUT, keep the summary."""

        def read(name: str) -> str:
            try:
                if os.stat(files[name]).st_size == 0:
                    return ""
                with open(files[name], "r+", encoding="utf-8", errors="replace") as handle:
                    text = handle.read()
                    handle.truncate(0)  # the next step's file starts empty
                return text
            except FileNotFoundError:  # the step removed it: made anew for the next step
                del self.step_files[name]
                return ""

        self.env_ctx.update(read_env_file(read("GITHUB_ENV")))
        self.path_add.extend(
            line.strip() for line in read("GITHUB_PATH").splitlines() if line.strip()
        )
        summary = read("GITHUB_STEP_SUMMARY")
        if summary.strip():
            self.summary.append(summary)
        return dict(read_env_file(read("GITHUB_OUTPUT")))


def stream(
    argv: list[str],
    env: Mapping[str, str],
    cwd: Path,
    timeout: float | None,
    commands: CommandFilter,
) -> tuple[int, bool]:
    """Run a process (its own group, stderr merged into stdout), passing its output lines
    through the workflow-command filter to our stdout; (exit code, timed out).

    Spawned with `os.posix_spawn` (vfork and exec, no `subprocess` to import): the program is
    looked up in the step's PATH, the ignored SIGPIPE and SIGXFSZ are reset as `subprocess`
    does, and the working directory is changed around the spawn (only this thread spawns)."""
    global _current
    program = _which(argv[0], env.get("PATH", os.defpath))
    read, write = os.pipe()
    stdin = os.open(os.devnull, os.O_RDONLY)
    here = os.getcwd()
    try:
        os.chdir(cwd)
        _current = os.posix_spawn(
            program,
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, stdin, 0),
                (os.POSIX_SPAWN_DUP2, write, 1),
                (os.POSIX_SPAWN_DUP2, write, 2),
            ],
            setpgroup=0,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
    except BaseException:
        os.close(read)
        raise
    finally:
        os.chdir(here)
        os.close(write)
        os.close(stdin)
    pid = _current
    if _job is not None and _job.pending:  # cancelled after its `if:`, before it started
        _stop_group(pid, 0.0 if _job.hard else STEP_GRACE)
    timer = None
    expired: list[bool] = []
    if timeout:
        import threading  # only for a step with timeout-minutes

        def expire() -> None:
            expired.append(True)
            _stop_group(pid, STEP_GRACE)

        timer = threading.Timer(timeout, expire)
        timer.start()
    try:
        _read_until_exit(pid, read, commands)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    finally:
        os.close(read)
        if timer:
            timer.cancel()
        _current = None
    return code, bool(expired)


def _read_until_exit(pid: int, read: int, commands: CommandFilter) -> None:
    """Pass a step's output on until its process has exited and its output has ended, or
    stopped coming for `DRAIN` seconds: a background process it left (`cmd &`) may hold the
    pipe open, and a step ends with its process, as on GitHub (what it left is killed when
    the job ends)."""
    out = sys.stdout
    buffer = bytearray()
    poller = select.poll()
    poller.register(read, select.POLLIN)
    try:
        exited = os.pidfd_open(pid)
    except OSError:  # no pidfd (Linux before 5.3): until the output ends
        exited = -1
    else:
        poller.register(exited, select.POLLIN)
    wait: float | None = None  # milliseconds, once the process has exited
    try:
        while True:
            ready = dict(poller.poll(wait))
            if not ready:  # exited, and nothing more for DRAIN seconds
                break
            if exited in ready:
                poller.unregister(exited)
                wait = DRAIN * 1000
            if read in ready:
                if not (chunk := os.read(read, 1 << 16)):
                    break
                buffer.extend(chunk)
                _emit(split_lines(buffer), commands, out)
        _emit(split_lines(buffer, final=True), commands, out)
    finally:
        if exited >= 0:
            os.close(exited)


def _which(name: str, path: str) -> str:
    """The program `name` as exec would find it in `path`; FileNotFoundError if nowhere."""
    if "/" in name:
        return name
    for folder in path.split(os.pathsep):
        candidate = os.path.join(folder or ".", name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(name)


_NOT_FOUND = (
    "a command was not found (a tool that hosted runners have, like pipx or poetry, may not be "
    "installed here)"
)
_STEP_REF = re.compile(r"\bsteps\.([A-Za-z_][\w-]*)")
_FILES = ("GITHUB_ENV", "GITHUB_OUTPUT", "GITHUB_PATH", "GITHUB_STEP_SUMMARY")


def _emit(lines: Any, commands: CommandFilter, out: Any) -> None:
    shown = [text for line in lines if (text := commands.line(line)) is not None]
    if shown:
        out.write("\n".join(shown) + "\n")
        out.flush()


def _stop_group(pid: int, grace: float) -> None:
    """SIGTERM to a step's process group now, SIGKILL to what is left of it after `grace`
    seconds (from a thread: the caller may be a signal handler). The thread reading the step
    reaps its leader."""
    import threading

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM if grace else signal.SIGKILL)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)

    threading.Thread(target=kill, name="stop-step", daemon=True).start()


def _on_term(signum: int, frame: Any) -> None:
    """Cancel the running job (its `always()` steps still run); before it starts, exit. Why:
    what pipedeck wrote before its SIGTERM ("run cancelled" after Ctrl-C...), else the signal."""
    if _job is None:
        raise SystemExit(128 + signum)
    attempt = int(_job.environ.get("PIPEDECK_ATTEMPT") or 0)
    try:
        why = cancel_file(_job.state, _job.job["instance"], attempt).read_text()
    except OSError:
        why = f"cancelled ({signal.Signals(signum).name})"
    _job.cancel(why)


def cancel_file(state: Path, instance: str, attempt: int) -> Path:
    """Where pipedeck says why it cancels an attempt of a job instance."""
    return state / "cancel" / f"{safe_name(instance)}.{attempt}"


@functools.cache
def _split(template: str) -> list[str]:
    """A shell template's words (`bash -e {0}`), split once per job."""
    return shlex.split(template)


@functools.cache
def _has_bash() -> bool:
    """Whether bash is installed (the default shell then, else sh), looked up once per job."""
    path = os.environ.get("PATH", os.defpath).split(os.pathsep)
    return any(os.access(os.path.join(d, "bash"), os.X_OK) for d in path if d)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else expr.to_str(value)


def _secret_names(job: Mapping[str, Any]) -> list[str]:
    return list(job["workflow"].get("secrets", []))


# -- results shared between jobs -------------------------------------------------------------


def write_result(
    state: Path,
    job: str,
    instance: str,
    result: str,
    outputs: Mapping[str, str],
    reason: str | None = None,
    unavailable: list[str] | None = None,
    empty: Mapping[str, str] | None = None,
    here: bool = True,
    missing: list[str] | None = None,
) -> None:
    """Record a job instance's result and outputs (and why it was skipped, whether it could run
    here at all, which of its steps could not, why outputs are empty) for the jobs that need
    it."""
    folder = state / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"job": job, "instance": instance, "result": result}
    data["outputs"] = dict(outputs)
    if reason:
        data["reason"] = reason
    if not here:  # a macOS runner, services: not that its `if:` was false
        data["not_here"] = True
    if unavailable:
        data["unavailable"] = unavailable
    if empty:
        data["empty"] = dict(empty)
    if missing:  # it failed for want of what a hosted runner installs (a Python version)
        data["missing"] = missing
    target = folder / f"{safe_name(instance)}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(target)


def read_results(state: Path, job: str) -> list[dict[str, Any]]:
    """The recorded results of every instance of a job in this run."""
    folder = state / "jobs"
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("job") == job:
            found.append(data)
    return found


def read_needs(state: Path, needs: list[str]) -> dict[str, Any]:
    """The `needs` context: each needed job's outputs (merged over its instances) and result."""
    context: dict[str, Any] = {}
    for name in needs:
        results = read_results(state, name)
        outputs: dict[str, str] = {}
        for data in results:
            outputs.update({k: v for k, v in data["outputs"].items() if v != ""})
        kinds = {data["result"] for data in results}
        result = next((r for r in ("failure", "cancelled", "success") if r in kinds), "skipped")
        context[name] = {"outputs": outputs, "result": result}
    return context


def read_empty_outputs(state: Path, needs: list[str]) -> dict[str, str]:
    """Why outputs of the needed jobs are empty (`needs.JOB.outputs.NAME` -> a skipped step)."""
    return {
        f"needs.{name}.outputs.{output}": why
        for name in needs
        for data in read_results(state, name)
        for output, why in data.get("empty", {}).items()
    }


# -- the job, from its description -----------------------------------------------------------


def ignore_state(folder: Path) -> None:
    """A `.gitignore` of `*` in the workspace's `.pipedeck/`: a hosted runner's checkout has
    no such folder, and steps checking `git status --porcelain` must not see it."""
    ignore = folder / ".gitignore"
    if not ignore.exists():
        folder.mkdir(parents=True, exist_ok=True)
        ignore.write_text("# pipedeck's state: not part of the repository\n*\n")


_RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]+")  # engine.run.new_run_id's (not cache/, tool-cache/)


def prune_runs(folder: Path, current: str) -> None:
    """Remove the state (results, artifacts) of all but the last `PIPEDECK_KEEP_RUNS` runs
    (default 20, as pipedeck's own artifacts), this new run `current` counted."""
    from engine import artifacts

    runs = sorted(p for p in folder.glob("*") if _RUN_ID.fullmatch(p.name))  # oldest first
    artifacts.prune_runs(runs, artifacts.keep_runs() - 1, current)


def skipped_before_start(job: Mapping[str, Any], probe: JobRunner) -> str | None:
    """Why a job instance is skipped before its first step: it cannot run here, or its `if:`
    is false (seen with the needed jobs' results, as GitHub does); None when it runs. The job
    runner asks it, and the engine too before it starts a job (engine.gha.gate).
    ExprError: a bad `if:`."""
    if job.get("skip"):
        return str(job["skip"])
    probe.failed = any(n["result"] in ("failure", "cancelled") for n in probe.needs.values())
    if expr.condition(job.get("if"), probe.contexts()):
        return None
    return f"if: {job['if']} is false"


def run_job(job: Mapping[str, Any]) -> int:
    """Run a job description (all matrix instances when the matrix is known only now)."""
    global _job, _state_root
    run_id = os.environ.get("PIPEDECK_RUN_ID", "local")
    _state_root = Path.cwd() / ".pipedeck" / "gha"
    in_copy = job.get("workspace") == "copy"
    if in_copy:  # the job works in a copy of the repository
        from engine.gha.workspace import copy_workspace

        ignore_state(Path.cwd() / ".pipedeck")
        os.chdir(copy_workspace(Path.cwd(), run_id))
    state = _state_root / run_id
    ignore_state(state.parent.parent)
    if not state.exists():  # the run's first job here: older runs' state over the limit goes
        prune_runs(state.parent, run_id)
    instance = job["instance"]
    probe = JobRunner(job, job["matrix"], instance)
    try:
        reason = skipped_before_start(job, probe)
    except expr.ExprError as err:
        print(f"##[error]if: {err}", flush=True)
        write_result(state, job["job"], instance, "failure", {})
        return 1
    if reason is not None:
        print(f"##[warning]job skipped: {reason}", flush=True)
        write_result(state, job["job"], instance, "skipped", {}, reason, here=not job.get("skip"))
        return JOB_SKIPPED
    combos = [(job["matrix"], instance)]
    if job.get("matrix_expr") is not None:
        from engine.gha.matrix import expand_matrix, instance_id

        try:
            matrix = expr.interpolate_all(job["matrix_expr"], probe.contexts())
            if not isinstance(matrix, dict):
                got = " ".join(expr.to_json(matrix).split())
                raise ValueError(f"expected a mapping, got {got}"[:200])
            combos = [(c, instance_id(job["job"], c)) for c in expand_matrix(matrix)]
        except (expr.ExprError, ValueError) as err:
            print(f"##[error]strategy.matrix: {err}", flush=True)
            write_result(state, job["job"], instance, "failure", {})
            return 1
        print(f"matrix from needs: {len(combos)} instance(s)", flush=True)
    strategy = job["strategy"]
    siblings = len(combos) > 1 or int(strategy.get("job-total", 1)) > 1
    fail_fast = strategy["fail-fast"] is True and siblings
    failed = False
    for number, (combo, name) in enumerate(combos):
        if len(combos) > 1:
            print(f"##[group]{name}", flush=True)
        # max-parallel: the engine starts no more instances at once (Stage.max_parallel)
        if fail_fast and sibling_failed(state, job["job"], name):
            print(f"##[warning]{FAIL_FAST}", flush=True)
            write_result(state, job["job"], name, "cancelled", {}, FAIL_FAST)
            return JOB_CANCELLED
        if number and in_copy:  # as each instance on GitHub, from a fresh checkout
            from engine.gha.workspace import resync_workspace

            os.chdir(resync_workspace())
            if _job is not None and _job.cancelled:  # a signal while it synced: no more
                write_result(state, job["job"], name, "cancelled", {}, _job.cancelled)
                return JOB_CANCELLED
        one = job
        if job.get("matrix_expr") is not None:
            one = {
                **job,
                "strategy": {**strategy, "job-index": number, "job-total": len(combos)},
            }
        runner = _job = JobRunner(one, combo, name, number * len(job["steps"]))
        with _watch_siblings(runner, state) if fail_fast else contextlib.nullcontext():
            result = runner.run()
        if result == "cancelled":
            return JOB_CANCELLED
        failed = failed or result == "failure"
    return 1 if failed else 0


FAIL_FAST = "cancelled: another instance of this matrix failed (fail-fast)"


def sibling_failed(state: Path, job: str, instance: str) -> bool:
    """Whether another instance failed, for a reason of its own: one that failed because this
    machine lacks its Python (pip's tests-unix asks for 3.14, 3.15, 3.14t, 3.11.0...) says
    nothing of the code, and would not have failed on GitHub; it does not cancel the others."""
    return any(
        data["result"] == "failure" and data["instance"] != instance and not data.get("missing")
        for data in read_results(state, job)
    )


@contextlib.contextmanager
def _watch_siblings(runner: JobRunner, state: Path, every: float = 0.25) -> Any:
    """fail-fast while the job runs: when another instance of its matrix fails, cancel it."""
    import threading  # only for matrix jobs

    done = threading.Event()

    def watch() -> None:
        while not done.wait(every):
            if sibling_failed(state, runner.job["job"], runner.instance):
                print(f"##[warning]{FAIL_FAST}", flush=True)
                runner.cancel(FAIL_FAST)
                return

    thread = threading.Thread(target=watch, name="fail-fast", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def main() -> int:
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    sys.stdout.reconfigure(errors="replace", line_buffering=False)  # type: ignore[union-attr]
    job = json.load(sys.stdin)
    try:
        return run_job(job)
    except (expr.ExprError, ValueError, OSError) as err:  # a bad expression, a full disk...
        print(f"##[error]{job['instance']}: {err}", flush=True)
        state_root = _state_root or Path.cwd() / ".pipedeck" / "gha"
        run_id = os.environ.get("PIPEDECK_RUN_ID", "local")
        write_result(state_root / run_id, job["job"], job["instance"], "failure", {})
        return 1


if __name__ == "__main__":
    sys.exit(main())
