"""A dead man's switch: one small shell per engine process that kills its stages if it dies.

The engine tells it each local attempt's process group as it starts (`watch`) and once it is
gone (`forget`), one line each down a pipe that only the engine holds open. When the engine
exits, however it exits (SIGKILL included), the pipe reaches EOF and the shell SIGKILLs every
group still listed. It does for the whole engine what PR_SET_PDEATHSIG (through `setpriv`) did
per stage, without an extra exec per stage, and it reaches the stage's whole group, not only
its main process. The shell runs in its own session (a terminal's Ctrl-C does not reach it),
carries no stage marker, and holds nothing but its end of the pipe. The next start's sweep
(`engine.history`) still finds what escaped the group.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

from engine.procs import own_child

# Builtins only: no process is started per line. `live` holds " pgid pgid ... ".
_SCRIPT = """
live=" "
while read -r op pgid; do
  case $op in
    +) live="$live$pgid " ;;
    -) rest=" "; for p in $live; do [ "$p" = "$pgid" ] || rest="$rest$p "; done; live=$rest ;;
  esac
done
for p in $live; do kill -s KILL -- "-$p" 2>/dev/null || kill -s KILL "$p" 2>/dev/null; done
"""

_lock = threading.Lock()
_shell: subprocess.Popen[bytes] | None = None


def watch(pgid: int) -> None:
    """Kill process group `pgid` if this process dies before `forget(pgid)`. Thread-safe."""
    _send(f"+ {pgid}\n")


def forget(pgid: int) -> None:
    """Group `pgid` is gone (or no longer this engine's to kill)."""
    _send(f"- {pgid}\n")


def _send(line: str) -> None:
    global _shell
    with _lock:
        if _shell is None:
            _shell = _start()
        if _shell is None or _shell.stdin is None:
            return
        try:
            os.write(_shell.stdin.fileno(), line.encode())  # < PIPE_BUF: one atomic write
        except OSError:  # the shell was killed: start another for the next attempts
            _shell.stdin.close()
            _shell = None


def _start() -> subprocess.Popen[bytes] | None:
    """Start the shell, fed by a pipe whose write end no stage inherits (close-on-exec)."""
    try:
        shell = subprocess.Popen(
            [shutil.which("sh") or "/bin/sh", "-c", _SCRIPT],
            cwd="/",  # holds no workspace open
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        return None
    own_child(shell.pid)  # not an orphan for reap_orphans: it is ours for the whole process
    return shell
