"""Run stages on a remote host over one pooled asyncssh connection (SPEC §4, §8).

One `SshExecutor` per host: it opens the connection on first use (keepalive on), syncs the
workspace before each stage (only changes travel, see `engine.sync`), puts upstream artifacts in
place, runs the stage, streams its output as bytes, and fetches its outputs back on success.

The remote command is a fixed `sh -c` that reads N bytes of script from stdin and evals them once
they arrived whole: the exports, the `cd` and the wrapper come over stdin, so neither the
environment (secrets included) nor the script shows in the remote process list, and the server's
AcceptEnv does not matter. The wrapper starts the stage in a new session (`setsid -w`) and writes
its process group id to `<workdir>/.pipedeck-pids/<token>`; every process of the attempt carries
`PIPEDECK_SSH_TASK=<token>` in its environment. Cancel and timeout send SIGTERM to that group over
a second channel, wait `kill_grace`, then SIGKILL the group and every process whose /proc environ
holds the token.

Failures come back as `ExecResult(exit_code=None, lost=False, reason=...)` (the stage fails with
that one-line reason; `ssh` would exit 255), a connection dropped mid-stage as
`ExecResult(exit_code=None, lost=True, reason="connection to HOST lost: ...")`; the next attempt
reconnects and first kills whatever the lost attempt left running.

asyncssh is imported here only: pipelines without remote stages never load it.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import re
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from shlex import quote
from typing import Any

import asyncssh
from asyncssh import PIPE

from engine.errors import PipedeckError
from engine.executors.base import ExecResult, OutputSink
from engine.procstat import TOKEN_VAR, Units, attribute, probe_script
from engine.ptyproc import REMOTE_PREFIX, REMOTE_RESTORE, TERMINALS, AfterMark, RemoteTerminal
from engine.resources import Proc
from engine.spec import Pipeline, Stage
from engine.sshhosts import HostConfig, resolve_host
from engine.sync import RemoteWorkspace, Shell, SyncReport, brings_back

KEEPALIVE_INTERVAL = 10.0
KEEPALIVE_COUNT_MAX = 3
CONNECT_TIMEOUT = 15.0
ORPHAN_REACH = 5.0  # on close: how long to try reconnecting to kill what lost attempts left
# AES-GCM first: one cryptography call per packet (AES-NI), where asyncssh's ChaCha20-Poly1305
# makes three; the rest of asyncssh's defaults follow, in their order
ENCRYPTION = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
              "aes256-ctr", "aes192-ctr", "aes128-ctr")  # fmt: skip
DRAIN_IDLE = 1.0  # after the exit status: close once the output has been quiet this long
PIDS_DIR = ".pipedeck-pids"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INNER = 'echo $$ > "$0"; "$@"; s=$?; rm -f -- "$0"; exit $s'
# The remote command: read the script from stdin, run it only when it arrived whole.
_SCRIPT_END = "#pipedeck-script-end"
_BOOTSTRAP = (
    'sh -c \'s=$(head -c {size}); case $s in *{end}) eval "$s";; '
    '*) echo "pipedeck: the stage script arrived truncated" >&2; exit 255;; esac\''
)
_PICK_SHELL = (
    "if command -v bash >/dev/null 2>&1; then set -- bash -e -o pipefail -c; "
    "else set -- sh -e -c; fi"
)

StateCallback = Callable[..., None]  # (host, state, reason), plus `synced` after a sync


class ConnectError(PipedeckError):
    """The host could not be reached or refused us; `str()` is the one-line reason."""


class SshExecutor:
    """The executor for every stage with `host: NAME` (one instance per host)."""

    def __init__(
        self, pipeline: Pipeline, host_name: str, on_state_change: StateCallback | None = None
    ) -> None:
        self.pipeline = pipeline
        self.host: HostConfig = resolve_host(pipeline, host_name)
        self.connection_state = "idle"
        self.on_state_change = on_state_change
        self.workspace = RemoteWorkspace(
            pipeline.workspace,
            self.host.workdir,
            exclude=self.host.sync_exclude,
            keep=[glob for stage in pipeline.stages.values() for glob in stage.outputs],
        )
        self._conn: asyncssh.SSHClientConnection | None = None
        self._connect_lock = asyncio.Lock()
        self._command_gate = asyncio.Semaphore(1)  # the one channel for short commands
        self._transfer_gate = asyncio.Semaphore(1)  # the one channel for sync transfers
        self._running: dict[str, str] = {}  # token -> pid file, for attempts on the connection
        self._attempts: dict[tuple[str, str, int], str] = {}  # (run, stage, attempt) -> token
        self._groups: dict[str, int] = {}  # token -> the attempt's process group, once known
        self._units = Units()  # the host's clock ticks and page size, once known
        self.probes = 0  # measurements taken (`processes`): for tests
        self._orphans: dict[str, str] = {}  # attempts whose connection dropped: kill on reconnect

    # -- state -------------------------------------------------------------------------------

    def _set_state(
        self, state: str, reason: str | None = None, synced: dict[str, object] | None = None
    ) -> None:
        self.connection_state = state
        if self.on_state_change is not None:
            if synced is None:
                self.on_state_change(self.host.name, state, reason)
            else:
                self.on_state_change(self.host.name, state, reason, synced)

    # -- the executor protocol ---------------------------------------------------------------

    async def execute(self, stage: Stage, env: Mapping[str, str], sink: OutputSink) -> ExecResult:
        """Sync, run `stage.run` remotely with exactly `env` exported, fetch outputs on success.

        The caller holds one of the host's slots (`engine.hosts.Hosts.slots`): the executor
        itself does not bound how many stages run at once."""
        try:
            conn = await self._connect()
        except ConnectError as exc:
            return ExecResult(None, reason=str(exc))
        if self._orphans:
            await self._sweep_orphans(conn)
        try:
            report = await self._push(conn, stage)
        except (OSError, asyncssh.Error) as exc:
            return self._broken(conn, "workspace sync", exc)
        if report.warning:
            sink("stderr", f"pipedeck: host {self.host.name}: {report.warning}\n".encode())
        result = await self._run(conn, stage, env, sink)
        if stage.outputs and brings_back(stage, result):
            try:
                await self._fetch(conn, stage)
            except (OSError, asyncssh.Error) as exc:
                return result if result.exit_code else self._broken(conn, "fetching outputs", exc)
        return result

    async def prepare(self, stage: Stage) -> asyncssh.SSHClientConnection:
        """Connect and sync the workspace for `stage`; the pooled connection, for commands of
        our own (`pipedeck shell`). Raises ConnectError, OSError or asyncssh.Error."""
        conn = await self._connect()
        await self._push(conn, stage)
        return conn

    async def close(self) -> None:
        """Kill attempts still running (and those a dropped connection left), disconnect."""
        if self._orphans:
            with contextlib.suppress(ConnectError, TimeoutError):
                await self._sweep_orphans(await asyncio.wait_for(self._connect(), ORPHAN_REACH))
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._running:
            with contextlib.suppress(OSError, asyncssh.Error):
                await self._shell(conn, _sweep_script(self._running))
            self._running.clear()
        conn.close()
        await conn.wait_closed()
        self._set_state("idle")

    # -- for executors that reuse this host's connection (Slurm on a login node) -------------

    async def command(self, script: str, stdin: bytes = b"") -> tuple[int, bytes, bytes]:
        """Run a POSIX sh script on the short-command channel: (exit status, stdout, stderr).

        Raises ConnectError, OSError or asyncssh.Error when the host cannot be reached.
        """
        conn = await self._connect()
        async with (
            self._command_gate,
            conn.create_process(f"sh -c {quote(script)}", encoding=None) as proc,
        ):
            proc.stdin.write(stdin)
            proc.stdin.write_eof()
            result = await proc.wait()
        out, err = result.stdout or b"", result.stderr or b""
        status = 255 if result.exit_status is None else result.exit_status
        return status, _as_bytes(out), _as_bytes(err)

    async def processes(self, run_id: str, stages: Mapping[str, int]) -> dict[str, list[Proc]]:
        """The processes of `stages` (stage id -> attempt) of `run_id` running here, read with one
        command on the short-command channel of the open connection (none: {}); see
        `engine.procstat`."""
        tokens = {
            token: sid
            for (run, sid, attempt), token in self._attempts.items()
            if run == run_id and stages.get(sid) == attempt
        }
        conn = self._conn
        if not tokens or conn is None or conn.is_closed():
            return {}
        unknown = {
            t: self._running[t] for t in tokens if t not in self._groups and t in self._running
        }
        self.probes += 1
        try:
            out = await self._shell(conn, probe_script(unknown, self._units))
        except (OSError, asyncssh.Error):
            return {}
        found = attribute(out, tokens, self._groups, self._units)
        return {tokens[token]: procs for token, procs in found.items()}

    async def fetch(self, stage: Stage) -> None:
        """Bring `stage`'s outputs back into the local workspace."""
        await self._fetch(await self._connect(), stage)

    async def read(self, path: str, offset: int) -> bytes:
        """The bytes of the remote file `path` from `offset` on (b"" while it does not exist),
        over the short-command channel: no SFTP subsystem needed."""
        _, out, _ = await self.command(f"tail -c +{offset + 1} -- {quote(path)} 2>/dev/null")
        return out

    # -- connection --------------------------------------------------------------------------

    async def _connect(self) -> asyncssh.SSHClientConnection:
        async with self._connect_lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            self._set_state("connecting")
            try:
                conn = await self._open()
            except ConnectError as exc:
                self._set_state("failed", str(exc))
                raise
            except asyncio.CancelledError:
                self._set_state("idle")
                raise
            self._conn = conn
            self._set_state("connected")
            return conn

    async def _sweep_orphans(self, conn: asyncssh.SSHClientConnection) -> None:
        """Kill what attempts lost with an earlier connection left running."""
        orphans, self._orphans = self._orphans, {}
        try:
            await self._shell(conn, _sweep_script(orphans))
        except (OSError, asyncssh.Error):
            self._orphans.update(orphans)

    async def _open(self) -> asyncssh.SSHClientConnection:
        host = self.host
        where = f"{host.address}:{host.display_port}"
        if host.identity_file is not None and not host.identity_file.is_file():
            raise ConnectError(f"host {host.name}: identity_file {host.identity_file} not found")
        try:
            text = host.known_hosts.read_text() if host.known_hosts.exists() else ""
            known = asyncssh.import_known_hosts(text)
        except (OSError, ValueError) as exc:
            raise ConnectError(f"host {host.name}: cannot read {host.known_hosts}: {exc}") from None
        client = _Client(self, known)
        options: dict[str, Any] = {
            "known_hosts": known,
            "agent_forwarding": False,
            "keepalive_interval": KEEPALIVE_INTERVAL,
            "keepalive_count_max": KEEPALIVE_COUNT_MAX,
            "connect_timeout": CONNECT_TIMEOUT,
            "encryption_algs": ENCRYPTION,
        }
        if host.port:
            options["port"] = host.port
        if host.user:
            options["username"] = host.user
        if host.identity_file is not None:
            options["client_keys"] = [str(host.identity_file)]
        try:
            conn, _ = await asyncssh.create_connection(lambda: client, host.address, **options)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise ConnectError(self._host_key_message(client, exc)) from None
        except asyncssh.PermissionDenied:
            raise ConnectError(
                f"host {host.name}: authentication refused by {where}"
                f" for user {host.user or 'from ~/.ssh/config or the local user'}"
                f" (keys tried: {host.identity_file or 'ssh-agent and ~/.ssh/id_*'})"
            ) from None
        except socket.gaierror as exc:
            raise ConnectError(
                f"host {host.name}: cannot resolve host name {host.address!r}: {exc.strerror}"
            ) from None
        except ConnectionRefusedError:
            raise ConnectError(
                f"host {host.name}: {where} unreachable: connection refused (is sshd running?)"
            ) from None
        except TimeoutError:
            raise ConnectError(
                f"host {host.name}: {where} unreachable: no answer within {CONNECT_TIMEOUT:g}s"
            ) from None
        except OSError as exc:
            raise ConnectError(
                f"host {host.name}: {where} unreachable: {exc.strerror or exc}"
            ) from None
        except (asyncssh.Error, ValueError) as exc:
            raise ConnectError(
                f"host {host.name}: SSH connection to {where} failed: {exc}"
            ) from None
        client.established = True
        if client.new_key_line is not None:
            self._trust(client.new_key_line)
        return conn

    def _host_key_message(self, client: _Client, exc: Exception) -> str:
        name, file = self.host.name, self.host.known_hosts
        if client.peer is None:
            return f"host {name}: host key refused: {exc}"
        address, port = client.peer  # as matched: after ~/.ssh/config's HostName, Port
        entry = address if port == 22 else f"[{address}]:{port}"
        if client.verdict == "changed":
            return (
                f"host {name}: host key of {entry} CHANGED, it does not match {file}"
                f" (possible man-in-the-middle); if the change is expected, remove the old key"
                f" with `ssh-keygen -R '{entry}' -f {file}` and trust the new one"
            )
        keyscan = f"ssh-keyscan -p {port} {address}" if port != 22 else f"ssh-keyscan {address}"
        return (
            f"host {name}: unknown host key for {entry} (not in {file}); trust it"
            f" with `{keyscan} >> {file}` after checking its fingerprint,"
            f" or set `known_hosts: accept-new` for host {name}"
        )

    def _trust(self, line: str) -> None:
        """Append a first-seen host key to known_hosts (accept-new), like OpenSSH does."""
        path = self.host.known_hosts
        path.parent.mkdir(parents=True, exist_ok=True)
        existing = path.read_bytes() if path.exists() else b""
        with path.open("ab") as handle:
            if existing and not existing.endswith(b"\n"):
                handle.write(b"\n")
            handle.write(line.encode() + b"\n")

    def _connection_lost(self, client: _Client, exc: Exception | None) -> None:
        if not client.established or self._conn is None or self._conn.get_owner() is not client:
            return
        self._conn = None
        self._orphans.update(self._running)
        self._running.clear()
        if exc:
            self._set_state("lost", str(exc))
        else:
            self._set_state("idle")

    def _broken(self, conn: asyncssh.SSHClientConnection, what: str, exc: Exception) -> ExecResult:
        if conn.is_closed():
            return ExecResult(None, lost=True, reason=f"connection to {self.host.name} lost: {exc}")
        return ExecResult(None, reason=f"host {self.host.name}: {what} failed: {exc}")

    async def _shell(
        self,
        conn: asyncssh.SSHClientConnection,
        script: str,
        stdin: bytes | Path = b"",
        transfer: bool = False,
        stdout: Path | None = None,
    ) -> bytes:
        """Run a POSIX sh script on an auxiliary channel (stdin: data, or a file to stream);
        its stdout, or b"" when written into the file `stdout`.

        Sync transfers have their own channel, so that a kill never waits behind one.
        """
        source = str(stdin) if isinstance(stdin, Path) else PIPE
        command = f"sh -c {quote(script)}"
        # leaving the block closes the channel (a cancel mid-transfer too): the remote stdin ends
        async with (
            self._transfer_gate if transfer else self._command_gate,
            conn.create_process(
                command, encoding=None, stdin=source, stdout=PIPE if stdout is None else str(stdout)
            ) as proc,
        ):
            if not isinstance(stdin, Path):
                proc.stdin.write(stdin)
                proc.stdin.write_eof()
            result = await proc.wait()
        if result.exit_status != 0:
            err = result.stderr or b""
            text = err if isinstance(err, str) else err.decode(errors="replace")
            detail = "; ".join(line for line in text.splitlines() if line.strip())
            raise OSError(f"remote command failed ({result.exit_status}): {detail}")
        out = result.stdout or b""
        return out if isinstance(out, bytes) else out.encode()

    # -- workspace ---------------------------------------------------------------------------

    def _sync_shell(self, conn: asyncssh.SSHClientConnection) -> Shell:
        """`engine.sync.Shell` on the connection's sync channel."""

        async def shell(
            command: str, stdin: bytes | Path = b"", stdout: Path | None = None
        ) -> bytes:
            return await self._shell(conn, command, stdin, True, stdout)

        return shell

    async def _push(self, conn: asyncssh.SSHClientConnection, stage: Stage) -> SyncReport:
        """Sync the workspace and upstream stages' outputs before `stage` starts."""
        patterns = [p for need in _upstream(self.pipeline, stage) for p in need.outputs]

        @contextlib.asynccontextmanager
        async def open_process(command: str) -> AsyncIterator[asyncssh.SSHClientProcess[bytes]]:
            async with (
                self._transfer_gate,
                conn.create_process(command, encoding=None) as proc,
            ):
                yield proc

        report = await self.workspace.push(
            self._sync_shell(conn),
            patterns,
            before_transfer=lambda: self._set_state("syncing"),
            open_process=open_process,
        )
        if report.sent or report.deleted:
            self._set_state("connected", synced=report.summary(stage.id))
        return report

    async def _fetch(self, conn: asyncssh.SSHClientConnection, stage: Stage) -> None:
        await self.workspace.fetch(self._sync_shell(conn), stage.outputs)

    # -- running a stage ---------------------------------------------------------------------

    async def _run(
        self,
        conn: asyncssh.SSHClientConnection,
        stage: Stage,
        env: Mapping[str, str],
        sink: OutputSink,
    ) -> ExecResult:
        token = uuid.uuid4().hex
        pidfile = f"{self.host.workdir}/{PIDS_DIR}/{token}"
        script = self._script(stage, env, token, pidfile).encode("utf-8", "surrogateescape")
        command = _BOOTSTRAP.format(size=len(script), end=_SCRIPT_END)
        tty: dict[str, Any] = {}  # `tty: true`: a PTY, see engine/ptyproc.py
        if stage.tty:
            sink = AfterMark(sink)
            command = REMOTE_PREFIX + command
            tty = {"term_type": env.get("TERM", "xterm-256color"), "term_size": TERMINALS.size}
        session = _StageSession(sink)
        try:
            chan, _ = await conn.create_session(lambda: session, command, encoding=None, **tty)
        except (OSError, asyncssh.Error) as exc:
            return self._broken(conn, "starting the stage", exc)
        self._running[token] = pidfile
        key = (env.get("PIPEDECK_RUN_ID", ""), stage.id)
        attempt = (*key, int(env.get("PIPEDECK_ATTEMPT", "1")))
        self._attempts[attempt] = token
        try:
            if isinstance(sink, AfterMark):
                await asyncio.wait_for(sink.seen.wait(), CONNECT_TIMEOUT)
                TERMINALS.open[key] = RemoteTerminal(chan)
            chan.write(script)
            if not tty:
                chan.write_eof()
            await session.finished(chan)
        except asyncio.CancelledError:
            await self._kill(conn, session, {token: pidfile}, stage.kill_grace)
            chan.close()
            raise
        except TimeoutError:
            chan.close()
            return ExecResult(None, reason=f"host {self.host.name}: the terminal did not start")
        finally:
            session.flush()  # a close before the loop came round to it
            self._running.pop(token, None)
            self._attempts.pop(attempt, None)
            self._groups.pop(token, None)
            TERMINALS.open.pop(key, None)
        if session.sink_error is not None:
            raise session.sink_error
        if session.exit_code is not None:
            return ExecResult(session.exit_code)
        self._orphans[token] = pidfile
        detail = session.error or "the channel closed without an exit status"
        return ExecResult(None, lost=True, reason=f"connection to {self.host.name} lost: {detail}")

    def _script(self, stage: Stage, env: Mapping[str, str], token: str, pidfile: str) -> str:
        """The script the remote `sh` evaluates: cd, exports, then the wrapped stage command."""
        cwd = posixpath.normpath(posixpath.join(self.host.workdir, stage.cwd))
        lines = [
            *([REMOTE_RESTORE] if stage.tty else []),
            f"mkdir -p -- {quote(posixpath.dirname(pidfile))} || exit 1",
            # a workdir relative to the home: the pid file's path must hold after the `cd`
            f"_pipedeck_pidfile={'' if pidfile.startswith('/') else '$PWD/'}{quote(pidfile)}",
            f"cd -- {quote(cwd)} || exit 1",
            *(f"export {k}={quote(v)}" for k, v in env.items() if _ENV_NAME.fullmatch(k)),
            f"export {TOKEN_VAR}={token}",
            # bash started with SHLVL<2 and SSH_CLIENT set thinks sshd runs it and reads ~/.bashrc
            # again (the login shell already did): start the stage's shell one level down.
            '[ "${SHLVL:-0}" -ge 1 ] 2>/dev/null || export SHLVL=1',
            "set -- " + " ".join(map(quote, stage.shell)) if stage.shell else _PICK_SHELL,
            # setsid's own stderr is dropped (on a cancel it says `child ... did not exit
            # normally`); the stage gets the real one back from fd 3
            "if setsid -w true 2>/dev/null; then exec setsid -w sh -c"
            f" {quote('exec 2>&3 3>&-; ' + _INNER)}"
            f' "$_pipedeck_pidfile" "$@" {quote(stage.run)} 3>&2 2>/dev/null; fi',
            f'exec sh -c {quote(_INNER)} "$_pipedeck_pidfile" "$@" {quote(stage.run)}',
        ]
        return "\n".join(lines) + "\n" + _SCRIPT_END

    async def _kill(
        self,
        conn: asyncssh.SSHClientConnection,
        session: _StageSession,
        attempts: dict[str, str],
        grace: float,
    ) -> None:
        """SIGTERM the attempt's group, wait `grace` for it to end, SIGKILL it and its escapees."""
        try:
            await self._shell(conn, _term_script(attempts))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.closed.wait(), grace)
            await self._shell(conn, _sweep_script(attempts))
        except (OSError, asyncssh.Error):
            if conn.is_closed():
                self._orphans.update(attempts)


class _Client(asyncssh.SSHClient):
    """Checks host keys against the known_hosts file (accept-new: first-seen keys only)."""

    def __init__(self, executor: SshExecutor, known: asyncssh.SSHKnownHosts) -> None:
        self._executor = executor
        self._known = known
        self.verdict: str | None = None  # "unknown" or "changed" when a key is refused
        self.new_key_line: str | None = None  # accept-new: the line to add once connected
        self.peer: tuple[str, int] | None = None  # the host name and port keys were matched for
        self.established = False

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.peer = (host, port)
        matched = self._known.match(host, addr, None if port == 22 else port)
        if matched[0] or matched[1]:
            self.verdict = "changed"
            return False
        if not self._executor.host.accept_new:
            self.verdict = "unknown"
            return False
        pattern = host if port == 22 else f"[{host}]:{port}"
        algorithm, blob = key.export_public_key("openssh").decode().split()[:2]
        self.new_key_line = f"{pattern} {algorithm} {blob}"
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._executor._connection_lost(self, exc)


class _StageSession(asyncssh.SSHClientSession[bytes]):
    """Feeds a stage's output to the sink as it arrives; records how it ended.

    The packets (16 KiB from OpenSSH) that one read of the socket brings are handed to the sink
    as one chunk per stream, once the loop is done with that read: a flood costs the sink (the
    LogStore, the run's log events) a call per read, not one per packet."""

    def __init__(self, sink: OutputSink) -> None:
        self._sink = sink
        self.exit_code: int | None = None
        self.error: Exception | None = None
        self.sink_error: Exception | None = None  # raised by the sink: the attempt raises it
        self.exited = asyncio.Event()
        self.closed = asyncio.Event()
        self._last_data = time.monotonic()
        self._stream = "stdout"
        self._pending: list[bytes] = []  # of `_stream`, not yet given to the sink

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._last_data = time.monotonic()
        stream = "stderr" if datatype == asyncssh.EXTENDED_DATA_STDERR else "stdout"
        if stream != self._stream:
            self.flush()
            self._stream = stream
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        """Give the sink what arrived since the last call."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if self.sink_error is None:
            try:
                self._sink(self._stream, data)
            except Exception as exc:  # raised from the attempt once it is over
                self.sink_error = exc

    def exit_status_received(self, status: int) -> None:
        self.flush()
        self.exit_code = status
        self.exited.set()

    def exit_signal_received(
        self, signal_name: str, core_dumped: bool, msg: str, lang: str
    ) -> None:
        self.flush()
        try:
            self.exit_code = 128 + signal.Signals[f"SIG{signal_name}"].value
        except KeyError:
            self.exit_code = 255
        self.exited.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.flush()
        self.error = exc
        self.exited.set()
        self.closed.set()

    async def finished(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        """Wait for the end: the channel closing, or after the exit status quiet output.

        A background process still holding the output open must not block the stage forever.
        """
        await self.exited.wait()
        while not self.closed.is_set():
            try:
                await asyncio.wait_for(self.closed.wait(), DRAIN_IDLE)
            except TimeoutError:
                if time.monotonic() - self._last_data >= DRAIN_IDLE:
                    chan.close()
                    return


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


def _upstream(pipeline: Pipeline, stage: Stage) -> list[Stage]:
    """Every stage `stage` transitively needs."""
    seen: dict[str, Stage] = {}
    todo = list(stage.needs)
    while todo:
        sid = todo.pop()
        if sid in seen or sid not in pipeline.stages:
            continue
        seen[sid] = pipeline.stages[sid]
        todo.extend(seen[sid].needs)
    return list(seen.values())


def _term_script(attempts: Mapping[str, str]) -> str:
    return (
        "".join(f"{_group_kill(pidfile, 'TERM')}\n" for pidfile in attempts.values()) + "exit 0\n"
    )


def _sweep_script(attempts: Mapping[str, str]) -> str:
    """SIGKILL each attempt's group, then every process carrying its token, until none is left."""
    lines = []
    for token, pidfile in attempts.items():
        lines += [
            _group_kill(pidfile, "KILL"),
            "i=0",
            "while [ $i -lt 50 ]; do",
            f"  pids=$(grep -lzx {TOKEN_VAR}={token} /proc/[0-9]*/environ 2>/dev/null"
            " | sed 's,^/proc/\\([0-9]*\\)/environ$,\\1,')",
            '  [ -z "$pids" ] && break',
            "  kill -KILL $pids 2>/dev/null",
            "  i=$((i+1))",
            "done",
            f"rm -f -- {quote(pidfile)}",
        ]
    return "\n".join([*lines, "exit 0"]) + "\n"


def _group_kill(pidfile: str, sig: str) -> str:
    return (
        f'pg=$(cat {quote(pidfile)} 2>/dev/null) && [ -n "$pg" ] && kill -{sig} "-$pg" 2>/dev/null'
    )
