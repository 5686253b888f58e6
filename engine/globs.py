"""Globs of `inputs` and `outputs`, one meaning everywhere (cache, watch mode, sync).

Relative to the workspace: `*`, `?` and `[...]` stay within one path segment, `**` matches any
number of directories, a leading `./` is dropped, a pattern without wildcards naming a directory
means everything under it, and `!glob` excludes what the others match. These are glob rules (like
Python's `glob` with `recursive=True`, go-task's `sources` or GitHub's `hashFiles`), not
gitignore rules: `*.py` is the top level's Python files only, and `src/*` does not reach into
`src/x/`. (`watch.ignore` and `.gitignore` files do follow gitignore rules, through pathspec.)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

_MAGIC = re.compile(r"[*?\[]")


def has_magic(pattern: str) -> bool:
    """True when the pattern has a wildcard."""
    return _MAGIC.search(pattern) is not None


def normalize(pattern: str) -> str:
    """The pattern without a leading `/` or `./` (it is relative to the workspace anyway),
    doubled or trailing slashes ("." for the workspace)."""
    pattern = re.sub(r"/+", "/", pattern.strip()).lstrip("/")
    while pattern.startswith("./"):
        pattern = pattern[2:]
    return pattern.rstrip("/") or "."


def base(pattern: str) -> str:
    """The literal directory part of a normalized glob ("" for the workspace)."""
    segments = pattern.split("/")
    magic = [i for i, s in enumerate(segments) if has_magic(s)]
    return "/".join(segments[: magic[0]]) if magic else ("" if pattern == "." else pattern)


@lru_cache(maxsize=1024)
def regex(pattern: str) -> re.Pattern[str]:
    """A regex matching workspace-relative paths against a glob (see the module docstring)."""
    parts = pattern.split("/")
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:.*/)?")
            continue
        segment = ""
        j = 0
        while j < len(part):
            char = part[j]
            if char == "*":
                segment += "[^/]*"
            elif char == "?":
                segment += "[^/]"
            elif char == "[" and "]" in part[j + 2 :]:
                end = part.index("]", j + 2)
                body = part[j + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                segment += f"[{body}]"
                j = end
            else:
                segment += re.escape(char)
            j += 1
        out.append(segment if last else segment + "/")
    return re.compile("".join(out))


def split(patterns: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the globs, the `!globs` without their `!`)."""
    return (
        tuple(p for p in patterns if not p.startswith("!")),
        tuple(p[1:] for p in patterns if p.startswith("!")),
    )


def _test(pattern: str) -> Callable[[str], bool]:
    pattern = normalize(pattern)
    if pattern == ".":
        return lambda path: True
    if has_magic(pattern):
        return lambda path: regex(pattern).fullmatch(path) is not None
    return lambda path: path == pattern or path.startswith(pattern + "/")


@lru_cache(maxsize=512)
def matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """A test of a workspace-relative path: matched by a glob and by no `!glob`."""
    include, exclude = split(patterns)
    tests, vetoes = [_test(p) for p in include], [_test(p) for p in exclude]
    return lambda path: any(t(path) for t in tests) and not any(v(path) for v in vetoes)
