"""Measuring the attempts on an SSH host: one command reads /proc for all of them (Linux hosts,
as the kill sweep assumes).

`probe_script` makes the command: the process group of each attempt whose group is not known
yet (its pid file, read by the shell's `read`), then one `grep` that prints every process's
`/proc/PID/stat` line and, for the processes carrying an attempt's token (`PIPEDECK_SSH_TASK`),
that variable. `attribute` turns its output into the processes of each attempt: those carrying
its token, plus those in its process group or session (a process that cleared its environment).
The CPU times come in clock ticks, exact to 1/100 s where `ps` would give whole seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from shlex import quote

from engine.resources import Proc

TOKEN_VAR = "PIPEDECK_SSH_TASK"
UNITS = 'printf \'units:%s %s\\0\' "$(getconf CLK_TCK)" "$(getconf PAGESIZE)"; '
_GREP = (
    f"grep -a -z -H -E -e '^{TOKEN_VAR}=[0-9a-f]+$' -e '^[0-9]+ [(]'"
    " /proc/[0-9]*/stat /proc/[0-9]*/environ 2>/dev/null; exit 0"
)


@dataclass
class Units:
    """The host's clock ticks per second and page size (asked once per connection)."""

    ticks: int = 0
    page: int = 0


_NUMBERS = (1, 2, 3, 11, 12, 19, 21)  # after the command name: ppid, pgrp, session, utime,
# stime, starttime, rss


def _pid(path: bytes) -> int:
    """/proc/PID/...'s PID (0 for anything else)."""
    part = path.split(b"/")[2:3]
    return int(part[0]) if part and part[0].isdigit() else 0


def probe_script(pidfiles: Mapping[str, str], units: Units) -> str:
    """The one command measuring every attempt: `pidfiles` maps the tokens of attempts whose
    process group is not known yet to their pid files."""
    groups = "".join(
        f"{{ read g < {quote(path)} && printf 'group:%s:%s\\0' {token} \"$g\"; }} 2>/dev/null; "
        for token, path in pidfiles.items()
    )
    return (UNITS if not units.ticks else "") + groups + _GREP


def attribute(
    out: bytes, tokens: Iterable[str], groups: dict[str, int], units: Units
) -> dict[str, list[Proc]]:
    """The processes of each attempt (by token) in a probe's output; learns `groups` (token ->
    process group) and `units` from it."""
    wanted = set(tokens)
    marked: dict[int, str] = {}
    stats: list[tuple[int, list[bytes]]] = []
    for record in out.split(b"\0"):
        head, _, body = record.partition(b":")
        head = head.rpartition(b"\n")[2]  # after what a chatty login shell printed first
        if head == b"units":
            numbers = [int(n) for n in body.split() if n.isdigit()]
            units.ticks, units.page = numbers if len(numbers) == 2 else (100, 4096)  # no getconf
        elif head == b"group":
            name, _, group = body.partition(b":")
            if group.strip().isdigit():
                groups[name.decode()] = int(group)
        elif head.endswith(b"/environ"):
            value = body.partition(b"=")[2].strip().decode(errors="replace")
            if value in wanted:
                marked[_pid(head)] = value
        elif head.endswith(b"/stat"):
            fields = body.rpartition(b")")[2].split()
            if len(fields) > 21 and all(fields[i].isdigit() for i in _NUMBERS):
                stats.append((_pid(head), fields))
    by_group = {group: token for token, group in groups.items() if token in wanted}
    found: dict[str, list[Proc]] = {token: [] for token in wanted}
    tick, size = units.ticks or 100, units.page or 4096  # not asked yet: Linux's usual ones
    for pid, fields in stats:
        owner = marked.get(pid) or by_group.get(int(fields[2])) or by_group.get(int(fields[3]))
        if owner is not None:
            cpu = (int(fields[11]) + int(fields[12])) / tick
            key = f"{pid}@{fields[19].decode()}"
            found[owner].append(Proc(key, cpu, int(fields[21]) * size, pid, int(fields[1])))
    return found
