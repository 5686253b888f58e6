"""Running a one-command script without bash, where bash would do exactly the same.

`bash -c 'make -j2 all'` execs `make` in place of itself (no fork), with changes to the
environment: `PWD` (the working directory), `_` (the program's path), `SHLVL` (0 when unset),
`OLDPWD` (dropped unless a directory).
`direct_exec` returns that argv and environment for scripts where nothing else can differ:
one line of plain words (no quotes, variables, globs, redirections, operators, comments), a
first word that is no bash builtin or keyword and names an executable file that the kernel can
run itself (a `#!` line or an ELF header; bash would read any other file as a script). Like make,
which execs recipes without shell syntax directly, this saves starting a shell per stage.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Mapping
from pathlib import Path

_PLAIN = re.compile(r"[A-Za-z0-9_./+:,@%-][A-Za-z0-9_./+=:,@%-]*(?: +[A-Za-z0-9_./+=:,@%-]+)*")
# Words bash runs itself: a script starting with one needs bash. `true` and `false` are
# builtins too, but their programs behave the same (no output, exit 0 / 1, arguments ignored).
_BASH_WORDS = frozenset(
    """! . : [ [[ ]] { } alias bg bind break builtin caller case cd command compgen complete
    compopt continue coproc declare dirs disown do done echo elif else enable esac eval exec
    exit export fc fg fi for function getopts hash help history if in jobs kill let local
    logout mapfile popd printf pushd pwd read readarray readonly return select set shift
    shopt source suspend test then time times trap type typeset ulimit umask unalias unset
    until wait while""".split()  # noqa: SIM905
)
_RUNNABLE = (b"#!", b"\x7fELF")


def direct_exec(
    script: str, env: Mapping[str, str], cwd: Path
) -> tuple[list[str], dict[str, str]] | None:
    """(argv, env) to exec `script` as bash would, or None when it needs bash."""
    line = script.strip()
    level = env.get("SHLVL", "0")
    if not _PLAIN.fullmatch(line) or "PATH" not in env or not (level.isdigit() and len(level) < 3):
        return None
    words = line.split(" ")
    words = [w for w in words if w]
    if words[0] in _BASH_WORDS or "=" in words[0]:
        return None
    if "/" in words[0]:
        program = str(cwd / words[0]) if os.access(cwd / words[0], os.X_OK) else None
    else:
        program = _which(words[0], env["PATH"])
        if program is not None and not os.path.isabs(program):  # a relative PATH entry
            program = str(cwd / program)
    if program is None or not _runnable(program):
        return None
    return [program, *words[1:]], _bash_env(env, cwd, program)


def _which(name: str, path: str) -> str | None:
    """`shutil.which(name, path=path)` for a bare name, with fewer calls: `os.access` alone
    answers `exists and access` (it fails for a missing file too), and the directory test is
    `_runnable`'s."""
    seen = set()
    for folder in path.split(os.pathsep) if path else ():
        if folder not in seen:  # os.path.normcase is the identity here
            seen.add(folder)
            candidate = os.path.join(folder, name)
            if os.access(candidate, os.F_OK | os.X_OK) and not _is_dir(candidate):
                return candidate
    return None


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


_HEADS: dict[tuple[str, int, int, int, int, int], bool] = {}  # file identity -> runnable
_SETTLED = 2_000_000_000  # ns: a file changed longer ago than this has a trustworthy ctime


def _runnable(path: str) -> bool:
    """True for a file (not a directory) the kernel runs itself. Remembered per file identity
    (device, inode, size, mtime, ctime), but only for a file last changed over `_SETTLED` ago:
    a later change moves its ctime past any remembered one, coarse clock ticks or not."""
    try:
        info = os.stat(path)
    except OSError:
        return False
    if stat.S_ISDIR(info.st_mode):
        return False
    key = (path, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    known = _HEADS.get(key)
    if known is not None:
        return known
    try:
        with open(path, "rb") as file:
            runnable = file.read(4).startswith(_RUNNABLE)
    except OSError:
        return False
    if time.time_ns() - info.st_ctime_ns > _SETTLED:
        if len(_HEADS) > 256:
            _HEADS.clear()
        _HEADS[key] = runnable
    return runnable


def _bash_env(env: Mapping[str, str], cwd: Path, program: str) -> dict[str, str]:
    """`env` as bash passes it on to the program it execs."""
    out = dict(env)
    pwd = env.get("PWD")
    if not (pwd and os.path.isabs(pwd) and _same_dir(pwd, cwd)):
        out["PWD"] = os.path.realpath(cwd)
    oldpwd = env.get("OLDPWD")
    if oldpwd is not None and not os.path.isdir(oldpwd):
        del out["OLDPWD"]
    # bash counts itself in SHLVL, and out again when it execs its last command
    out["SHLVL"] = str(int(env.get("SHLVL", "0")))
    out["_"] = program
    return out


def _same_dir(a: str, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
