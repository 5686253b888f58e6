"""`.env` files: KEY=VALUE lines read with python-dotenv, every problem with its FILE:LINE:COL.

The syntax is python-dotenv's (`#` comments, optional `export`, single or double quotes, escapes
and multi-line values in double quotes, inline comments after unquoted values). A `.env` that
is not a regular file (a directory, a FIFO: never opened, so never waited on), too large, not
UTF-8, holding a NUL byte, or with a line python-dotenv cannot parse (an unterminated quote) is
reported, never silently taken as empty.
"""

from __future__ import annotations

import io
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.schema import ENV_NAME_PATTERN
from engine.spec import MAX_FILE_BYTES

_NAME = re.compile(ENV_NAME_PATTERN)
_QUOTED = re.compile(rf"(?:export\s+)?{ENV_NAME_PATTERN}\s*=\s*(['\"])")


@dataclass(frozen=True)
class EnvProblem:
    """One problem at a 1-based line and column of a `.env` file."""

    line: int
    col: int
    message: str


def _where(text: str, offset: int) -> tuple[int, int]:
    """The 1-based line and column of a character offset."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def read(path: Path, max_bytes: int) -> tuple[dict[str, str], list[EnvProblem]]:
    """The values of the `.env` file at `path` ({} when there is none) and its problems."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {}, []
    except OSError as err:
        return {}, [EnvProblem(1, 1, f"cannot read: {err.strerror or err}")]
    if stat.S_ISDIR(st.st_mode):
        return {}, [EnvProblem(1, 1, "is a directory, not a file")]
    if not stat.S_ISREG(st.st_mode):
        return {}, [EnvProblem(1, 1, "is not a regular file (a FIFO or a device?)")]
    if st.st_size > max_bytes:
        return {}, [EnvProblem(1, 1, f"is larger than {max_bytes // (1 << 20)} MiB")]
    try:
        data = path.read_bytes()
    except OSError as err:
        return {}, [EnvProblem(1, 1, f"cannot read: {err.strerror or err}")]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line, col = _where(data.decode("latin-1"), err.start)
        return {}, [EnvProblem(line, col, "is not UTF-8 text")]
    if "\0" in text:
        line, col = _where(text, text.index("\0"))
        return {}, [EnvProblem(line, col, "contains a NUL byte")]
    return parse(text)


def secret_values(
    names: Iterable[str], environ: Mapping[str, str], env_file: Path
) -> tuple[dict[str, str], list[EnvProblem]]:
    """Each secret's value: from `environ`, else from the `.env` file `env_file` (read only
    when a name is missing from `environ`), else empty; and the problems of that `.env`."""
    names = list(names)
    missing = any(name not in environ for name in names)
    found, problems = read(env_file, MAX_FILE_BYTES) if missing else ({}, [])
    return {name: environ.get(name, found.get(name, "")) for name in names}, problems


def _error(rest: str) -> str:
    """What is wrong with the line that starts `rest`."""
    first = rest.split("\n", 1)[0]
    quoted = _QUOTED.match(first)
    if quoted and quoted.group(1) not in first[quoted.end() :]:
        return f"unterminated {quoted.group(1)} quote"
    return "expected KEY=VALUE"


def parse(text: str) -> tuple[dict[str, str], list[EnvProblem]]:
    """The values and problems of `.env` text."""
    from dotenv.parser import parse_stream  # ~6 ms to import: only when a .env is read

    values: dict[str, str] = {}
    problems: list[EnvProblem] = []
    offset = 0
    for binding in parse_stream(io.StringIO(text)):
        original = binding.original.string
        start = offset + len(original) - len(original.lstrip())
        offset += len(original)
        line, col = _where(text, start)
        if binding.error:
            problems.append(EnvProblem(line, col, _error(text[start:])))
        elif binding.key is None:
            continue  # a comment or a blank line
        elif binding.value is None or not _NAME.fullmatch(binding.key):
            problems.append(EnvProblem(line, col, "expected KEY=VALUE"))
        else:
            values[binding.key] = binding.value
    return values, problems
