"""Load a pipeline file: YAML nodes (with their source marks) -> a checked `Pipeline`.

The file is composed into nodes with PyYAML's SafeLoader machinery and never constructed into
Python objects directly: every value keeps its position, so each problem is reported as
`FILE:LINE:COL: message`, and all of them are reported at once in one `ConfigError`. Alias bombs,
deep nesting and oversized files are refused in bounded time and memory.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import math
import os
import re
import shlex
import stat
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from fnmatch import fnmatchcase
from glob import glob
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import yaml
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from engine import globs, graph
from engine.errors import PipedeckError
from engine.schema import (
    AXIS_PATTERN,
    DEFAULTS_KEYS,
    DURATION_PATTERN,
    ENV_NAME_PATTERN,
    EXTENSION_PREFIX,
    GLOB_KEYS,
    HOST_KEYS,
    MATRIX_EXCLUDE,
    NAME_PATTERN,
    PATH_KEYS,
    READY_KEYS,
    SECTION_KINDS,
    STAGE_KEYS,
    TOP_KEYS,
    WATCH_KEYS,
    Key,
)
from engine.spec import (
    COLOR_ENV,
    LOCAL,
    MAX_FILE_BYTES,
    PROBE_KINDS,
    Host,
    Pipeline,
    Probe,
    Resources,
    SlurmOptions,
    Stage,
    WatchConfig,
)

if TYPE_CHECKING:
    from engine.envfile import EnvProblem

MAX_NODES = 300_000  # YAML nodes, counting each alias as the nodes it stands for
MAX_DEPTH = 64  # nesting of YAML collections
MAX_MERGE_DEPTH = 16  # merge keys (<<) within merged mappings
MAX_INSTANCES = 50_000  # stage instances in the whole pipeline, after matrix expansion
MAX_EDGES = 1_000_000  # needs between stage instances, after matrix expansion

_TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
TIMESTAMP, MERGE, SEQ, MAP = (_TAG + t for t in ("timestamp", "merge", "seq", "map"))
_TEXT_TAGS = frozenset({STR, INT, FLOAT, TIMESTAMP})  # scalars whose source text is a string

_NAME_RE = re.compile(NAME_PATTERN)
_ENV_NAME_RE = re.compile(ENV_NAME_PATTERN)
_AXIS_RE = re.compile(AXIS_PATTERN)
_DURATION_RE = re.compile(DURATION_PATTERN)
_DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_MATRIX_EXPR_RE = re.compile(r"\$\{\{\s*matrix\.([A-Za-z0-9_-]+)\s*\}\}")
_PLAIN_VALUE_RE = re.compile(r'[^,=\[\]"\\]*')  # matrix values an id shows unquoted
_SCALARS = yaml.constructor.SafeConstructor()  # parses int, float and bool scalar nodes
_START = yaml.Mark("", 0, 0, 0, "", 0)  # where problems of the whole file are reported
_NON_PRINTABLE_RE = yaml.reader.Reader.NON_PRINTABLE
# Patterns compiled on first use (re's cache), not at import: only problems and matrices need them
_LINE_BREAK = "\r\n|[\n\r\x85\u2028\u2029]"  # what PyYAML counts as a new line
_CONTROL = "[\x00-\x1f\x7f-\x9f\u2028\u2029]"


class Problem(NamedTuple):
    """One problem in a file, at a 1-based line and column (ordered by file, line, column)."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class ConfigError(PipedeckError):
    """An invalid pipeline file; `problems` lists every problem found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(set(problems))
        super().__init__("\n".join(map(str, self.problems)))


def parse_duration(text: str) -> float:
    """Seconds in `90s`, `5m`, `1h`, `100ms`, `1h30m` or a plain number of seconds.

    Raises `ValueError` for anything else, including negative values.
    """
    text = text.strip()
    if not _DURATION_RE.fullmatch(text):
        raise ValueError(f"bad duration {text!r}; use e.g. 90s, 5m, 1h30m, 100ms or seconds")
    parts = _DURATION_PART_RE.findall(text)
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in parts) if parts else float(text)
    if seconds >= 1e12:
        raise ValueError(f"duration {text[:40]!r} is too long")
    return seconds


def load(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    data: bytes | None = None,
) -> Pipeline:
    """Load and check the pipeline file at `path`, or raise `ConfigError` with every problem.

    Secret values come from `environ` (default: `os.environ`), then from a `.env` file beside
    the pipeline file; a secret found in neither is the empty string. `data`: the file's bytes,
    already read (engine.loadcache: what it keys the result by is what was parsed).
    """
    file = os.fspath(path)
    checker = _Checker(file, _read(file) if data is None else _decode(file, data))
    with _gc_paused():
        pipeline = checker.check(Path(os.path.abspath(file)), environ)
    if checker.problems or pipeline is None:
        raise ConfigError(checker.problems)
    return pipeline


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection meanwhile: the node tree has no cycles (recursive aliases are
    refused), and collecting while it grows costs a 10,000-stage file 40% of its load time.
    Drop the node tree inside the block: the first collection after it scans every object made
    meanwhile that is still alive (~10% of the load time of a 10,000-stage file if the tree is)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _fail(file: str, message: str, line: int = 1, col: int = 1) -> ConfigError:
    """A ConfigError of one problem of the file."""
    return ConfigError([Problem(file, line, col, message)])


def _read(file: str) -> str:
    """The decoded text of the file, refusing what is not a regular file of at most 5 MB."""
    try:
        if not stat.S_ISREG(os.stat(file).st_mode):  # a FIFO would block, a device never end
            raise _fail(file, "not a regular file")
        with open(file, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except (OSError, ValueError) as err:  # ValueError: a NUL in the path
        message = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise _fail(file, f"cannot read the pipeline file: {message}") from None
    return _decode(file, data)


def _decode(file: str, data: bytes) -> str:
    """The text of the file's bytes, refusing more than 5 MB and what is not UTF-8/16."""
    if len(data) > MAX_FILE_BYTES:
        raise _fail(
            file, f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB; refusing to load it"
        )
    try:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - data.rfind(b"\n", 0, err.start)
        raise _fail(
            file, f"not UTF-8 text: byte 0x{data[err.start]:02x} cannot be decoded", line, col
        ) from None


class _Refused(yaml.YAMLError):
    """Input refused while composing (alias bomb, too many nodes, too deep)."""

    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


class _PyParser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    """PyYAML's pure-Python scanner and parser (about 0.5 MB/s)."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)


class _Bounded(yaml.composer.Composer, yaml.resolver.Resolver):
    """SafeLoader composition (no construction) that counts nodes, aliases at their expanded
    size, limits nesting and refuses recursive aliases: no input costs more than MAX_NODES.

    Mixed with an event source: libyaml's parser when PyYAML has it (`_LOADER`), else PyYAML's.
    """

    peek_event: Callable[[], Any]  # from the event source

    def __init__(self) -> None:
        yaml.composer.Composer.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self.spent = 0
        self.depth = 0
        self.sizes: dict[int, int] = {}
        self._resolved: dict[tuple[Any, str, Any], str] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        """The resolver's tag, remembered per distinct scalar (a big file repeats many)."""
        if kind is not ScalarNode:
            return str(super().resolve(kind, value, implicit))  # type: ignore[no-untyped-call]
        key = (kind, value, implicit)
        tag = self._resolved.get(key)
        if tag is None:
            tag = self._resolved[key] = str(super().resolve(kind, value, implicit))  # type: ignore[no-untyped-call]
        return tag

    def _spend(self, count: int, mark: Any) -> None:
        self.spent += count
        if self.spent > MAX_NODES:
            raise _Refused(
                f"the file has more than {MAX_NODES} YAML values (each alias counted as the "
                "values it repeats); this limit guards against alias bombs: use fewer aliases, "
                "or split the pipeline",
                mark,
            )

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self.sizes.get(id(target))
                if size is None:
                    raise _Refused(
                        f"alias *{event.anchor} refers to a collection that contains "
                        "it; recursive aliases are not allowed",
                        event.start_mark,
                    )
                self._spend(size, event.start_mark)
            return super().compose_node(parent, index)
        if type(event) is yaml.ScalarEvent and event.anchor is None:  # most nodes: a fast path
            self._spend(1, event.start_mark)
            self.get_event()  # type: ignore[attr-defined]  # the Parser's, mixed in by the loader
            tag = event.tag
            if tag is None or tag == "!":
                tag = self.resolve(ScalarNode, event.value, event.implicit)
            start, end = cast(Mark, event.start_mark), cast(Mark, event.end_mark)
            return ScalarNode(tag, event.value, start, end, event.style)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refused(f"nesting deeper than {MAX_DEPTH} levels", event.start_mark)
        before = self.spent
        self._spend(1, event.start_mark)
        node = super().compose_node(parent, index)
        self.depth -= 1
        self.sizes[id(node)] = self.spent - before
        return node


class _PyLoader(_Bounded, _PyParser):
    """Bounded composition over PyYAML's pure-Python parser."""

    def __init__(self, stream: str) -> None:
        _PyParser.__init__(self, stream)
        _Bounded.__init__(self)


_LOADER: Callable[[str], _Bounded] = _PyLoader
if yaml.__with_libyaml__:
    from yaml.cyaml import CParser  # type: ignore[attr-defined]

    class _CLoader(_Bounded, CParser):
        """Bounded composition over libyaml's parser (about 50 MB/s)."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _Bounded.__init__(self)

    _LOADER = _CLoader


def _describe(node: Node) -> str:
    """What a node is, for messages: `a list`, `the boolean 'on'`, ..."""
    if isinstance(node, MappingNode):
        return "a mapping" + (f" tagged {node.tag}" if node.tag != MAP else "")
    if isinstance(node, SequenceNode):
        return "a list" + (f" tagged {node.tag}" if node.tag != SEQ else "")
    value = node.value if len(node.value) <= 40 else node.value[:37] + "..."
    if node.tag in (INT, FLOAT, BOOL) and _scalar(node) is None:
        return f"{value!r} tagged {node.tag}"
    return {
        STR: f"the string {value!r}",
        INT: f"the integer {value}",
        FLOAT: f"the number {value}",
        BOOL: f"the boolean {value!r}",
        NULL: "nothing (null)",
        TIMESTAMP: f"the date {value!r}",
    }.get(node.tag, f"a value tagged {node.tag}")


def _scalar(node: Node) -> Any:
    """The value of an int, float or bool scalar; None for other nodes and unparsable text
    (possible with explicit tags: `!!int ""`, `!!bool maybe`)."""
    construct = {
        INT: _SCALARS.construct_yaml_int,
        FLOAT: _SCALARS.construct_yaml_float,
        BOOL: _SCALARS.construct_yaml_bool,
    }.get(node.tag)
    if construct is None or not isinstance(node, ScalarNode):
        return None
    try:
        return construct(node)
    except (ValueError, IndexError, KeyError, yaml.YAMLError):
        return None


def _closest(word: str, options: Iterable[str]) -> str | None:
    """The option most like `word`, if one is close enough."""
    import difflib  # only for a mistake: a valid file does not pay for it

    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return close[0] if close else None


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest option, or nothing."""
    close = _closest(word, options)
    return f"; did you mean {close!r}?" if close else ""


def _id_value(value: str) -> str:
    """A matrix value as written in an instance id: as is, or JSON-quoted when it holds `,`, `=`,
    `[`, `]`, `"` or `\\`, so that no two combinations get the same id."""
    return value if _PLAIN_VALUE_RE.fullmatch(value) else json.dumps(value, ensure_ascii=False)


def _matrix_id(name: str, combo: Mapping[str, str]) -> str:
    """The instance id of one matrix combination: `test[os=linux,python=3.11]`."""
    return f"{name}[{','.join(f'{axis}={_id_value(value)}' for axis, value in combo.items())}]"


def _matrix_env_name(axis: str) -> str:
    """The environment variable of a matrix axis: `python-version` -> `MATRIX_PYTHON_VERSION`."""
    return "MATRIX_" + axis.upper().replace("-", "_")


class _RawStage(NamedTuple):
    """A stage's checked fields before matrix expansion."""

    name: str
    key: Node  # the stage's name in the file
    node: Node  # the stage's mapping
    nodes: dict[str, Node]
    fields: dict[str, Any]
    needs: dict[str, Node]  # stage name -> the list item naming it
    axes: dict[str, list[str]]
    combos: list[dict[str, str]]  # matrix combinations, in order; [{}] without a matrix


class _Checker:
    """Walks the composed nodes, collecting problems and building the pipeline."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.text = text
        self.problems: list[Problem] = []
        self._line_starts: list[int] | None = None
        self._ssh_patterns: list[str] | None = None
        self.stage_names: set[str] = set()  # every name under stages:, even a broken stage's
        self.host_names: set[str] = set()  # every name under hosts:

    # -- positions and reports

    def report(self, where: Any, message: str) -> None:
        """Record a problem at a node's start or at a mark (PyYAML's or libyaml's)."""
        mark = where.start_mark if isinstance(where, Node) else where
        self.problems.append(Problem(self.file, mark.line + 1, mark.column + 1, message))

    def report_index(self, index: int, message: str) -> None:
        """Record a problem at a character index of the text."""
        if self._line_starts is None:
            self._line_starts = [0] + [m.end() for m in re.finditer(_LINE_BREAK, self.text)]
        line = bisect_right(self._line_starts, index)
        col = index - self._line_starts[line - 1] + 1
        self.problems.append(Problem(self.file, line, col, message))

    # -- composing

    def compose(self) -> Node | None:
        """The root node, or None with the problem recorded."""
        bad = _NON_PRINTABLE_RE.search(self.text)
        if bad:
            self.report_index(
                bad.start(), f"character U+{ord(bad.group()):04X} is not allowed in a YAML file"
            )
            return None
        try:
            root = _LOADER(self.text).get_single_node()
        except _Refused as err:
            self.report(err.mark, err.message)
            return None
        except yaml.MarkedYAMLError as err:
            self.report(err.problem_mark or err.context_mark or _START, self.syntax_message(err))
            return None
        except yaml.YAMLError as err:  # a reader error the check above did not foresee
            self.report(_START, "YAML error: " + " ".join(str(err).split()))
            return None
        if root is None:
            self.report(_START, "the file is empty; a pipeline needs 'version: 1' and 'stages'")
        return root

    def syntax_message(self, err: yaml.MarkedYAMLError) -> str:
        """A one-line message for a scanner, parser or composer error, with hints."""
        problem = err.problem.removeprefix("but ") if err.problem else err.context
        message = f"YAML syntax error: {problem}"
        if err.problem and err.context and err.context_mark is not None:
            cm = err.context_mark
            message += f" ({err.context} at line {cm.line + 1}, column {cm.column + 1})"
        mark = err.problem_mark
        if err.problem and err.problem.startswith("mapping values are not allowed"):
            message += "; quote a value that contains ': '"
        elif mark is not None and self.text[mark.index : mark.index + 1] == "\t":
            message += "; indent with spaces, not tabs"
        return message

    # -- mappings

    def entries(self, node: Node, path: str) -> dict[str, tuple[Node, Node]] | None:
        """Key text -> (key node, value node) of a mapping, with merge keys (<<) applied;
        reports a non-mapping, duplicate keys and non-scalar keys."""
        if not isinstance(node, MappingNode) or node.tag != MAP:
            self.report(node, f"{path}: expected a mapping, got {_describe(node)}")
            return None
        return self._flatten(node, path, 0)

    def _flatten(self, node: MappingNode, path: str, depth: int) -> dict[str, tuple[Node, Node]]:
        own: dict[str, tuple[Node, Node]] = {}
        merged: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            if key.tag == MERGE:
                sources = value.value if isinstance(value, SequenceNode) else [value]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        self.report(
                            source,
                            f"{path}: a merge key (<<) takes a mapping or a list "
                            f"of mappings, got {_describe(source)}",
                        )
                    elif depth >= MAX_MERGE_DEPTH:
                        self.report(source, f"{path}: merge keys (<<) nested too deeply")
                    else:
                        for name, item in self._flatten(source, path, depth + 1).items():
                            merged.setdefault(name, item)
                continue
            if not isinstance(key, ScalarNode):
                self.report(key, f"{path}: keys must be strings, got {_describe(key)}")
                continue
            if key.value in own:
                first = own[key.value][0].start_mark
                self.report(
                    key,
                    f"{path}: duplicate key {key.value!r} (first defined at line "
                    f"{first.line + 1}, column {first.column + 1})",
                )
                continue
            own[key.value] = (key, value)
        return {**merged, **own}

    def section(
        self, node: Node, table: Mapping[str, Key], path: str, label: str, at: Node | None = None
    ) -> dict[str, Node] | None:
        """Value nodes of a section with a fixed key table: reports unknown keys (with a
        did-you-mean) and missing required keys (at `at`, default the section's start;
        `label` names the section in messages)."""
        items = self.entries(node, path or "the file")
        if items is None:
            return None
        found: dict[str, Node] = {}
        suggested: set[str] = set()
        for name, (key_node, value) in items.items():
            if name.startswith(EXTENSION_PREFIX):
                continue
            if name not in table:
                suggested.add(_closest(name, table) or "")
                self.report(
                    key_node, f"unknown key {name!r} in {label}" + _did_you_mean(name, table)
                )
                continue
            found[name] = value
        for name, key in table.items():
            if key.required and name not in found and name not in suggested:
                self.report(at or node, f"{label} is missing the required key {name!r}")
        return found

    def fields(
        self, nodes: Mapping[str, Node], table: Mapping[str, Key], path: str
    ) -> dict[str, Any]:
        """Checked values of the plain (non-section) keys present; bad ones are left out."""
        out: dict[str, Any] = {}
        for name, node in nodes.items():
            if table[name].kind in SECTION_KINDS:
                continue
            value = self.value(table[name], node, f"{path}{name}")
            if value is not None:
                out[name] = value
        return out

    # -- values; each returns None after reporting a problem

    def value(self, key: Key, node: Node, path: str) -> Any:
        """Check one value according to its key's kind."""
        kind = key.kind
        if kind == "string":
            text = self.string(node, path, nonempty=True)
            if text is not None and key.pattern and not re.fullmatch(key.pattern, text):
                self.report(node, f"{path}: {text!r} does not match {key.pattern}")
                return None
            return text
        if kind == "table":
            nodes = self.section(node, key.keys or {}, path, path)
            return None if nodes is None else self.fields(nodes, key.keys or {}, f"{path}.")
        if kind == "integer":
            return self.integer(node, path, key.minimum, key.maximum)
        if kind == "boolean":
            return self.boolean(node, path)
        if kind == "duration":
            return self.duration(node, path)
        if kind == "strings":
            return self.strings(node, path)
        if kind == "env":
            return self.env(node, path)
        if kind == "choice":
            text = self.string(node, path)
            if text is not None and text not in key.choices:
                self.report(
                    node,
                    f"{path}: {text!r} is not one of {', '.join(key.choices)}"
                    + _did_you_mean(text, list(key.choices)),
                )
                return None
            return text
        if kind == "version":
            if node.tag != INT or _scalar(node) != 1:
                self.report(node, f"{path}: must be the integer 1, got {_describe(node)}")
                return None
            return 1
        raise ValueError(f"kind {kind!r} is not a plain value")

    def string(self, node: Node, path: str, nonempty: bool = False) -> str | None:
        """A string; numbers and dates keep their source text; booleans are refused."""
        if isinstance(node, ScalarNode) and node.tag in _TEXT_TAGS:
            if "\x00" in node.value:
                self.report(node, f"{path}: must not contain a NUL character")
                return None
            if nonempty and not node.value.strip():
                self.report(node, f"{path}: must not be empty")
                return None
            return str(node.value)
        if isinstance(node, ScalarNode) and node.tag == BOOL:
            self.report(
                node,
                f"{path}: expected a string, got {node.value!r}, which YAML 1.1 "
                f'reads as a boolean; quote it: "{node.value}"',
            )
        else:
            self.report(node, f"{path}: expected a string, got {_describe(node)}")
        return None

    def integer(
        self, node: Node, path: str, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        """An integer within [minimum, maximum]."""
        number = _scalar(node) if node.tag == INT else None
        if not isinstance(number, int):
            self.report(node, f"{path}: expected an integer, got {_describe(node)}")
            return None
        if minimum is not None and number < minimum:
            self.report(node, f"{path}: must be at least {minimum}, got {number}")
            return None
        if maximum is not None and number > maximum:
            self.report(node, f"{path}: must be at most {maximum}, got {number}")
            return None
        return number

    def boolean(self, node: Node, path: str) -> bool | None:
        """true or false (YAML 1.1 spellings included)."""
        value = _scalar(node) if node.tag == BOOL else None
        if isinstance(value, bool):
            return value
        self.report(node, f"{path}: expected true or false, got {_describe(node)}")
        return None

    def duration(self, node: Node, path: str) -> float | None:
        """Seconds: a number, or text such as 90s, 5m, 1h30m, 100ms."""
        if isinstance(node, ScalarNode) and node.tag in (INT, FLOAT):
            number = _scalar(node)
            seconds = float(number) if number is not None and abs(number) < 1e12 else math.inf
            if not math.isfinite(seconds) or seconds < 0:
                self.report(
                    node,
                    f"{path}: a duration must be a finite number of seconds >= 0, "
                    f"got {_describe(node)}",
                )
                return None
            return seconds
        if isinstance(node, ScalarNode) and node.tag == STR:
            try:
                return parse_duration(node.value)
            except ValueError as err:
                self.report(node, f"{path}: {err}")
                return None
        self.report(
            node,
            f"{path}: expected a duration (90s, 5m, 1h30m, 100ms or seconds), "
            f"got {_describe(node)}",
        )
        return None

    def strings(self, node: Node, path: str) -> list[str] | None:
        """A list of strings; a single string counts as a list of one."""
        if isinstance(node, ScalarNode) and node.tag != NULL:
            text = self.string(node, path, nonempty=True)
            return None if text is None else [text]
        if not isinstance(node, SequenceNode) or node.tag != SEQ:
            self.report(node, f"{path}: expected a list of strings, got {_describe(node)}")
            return None
        items = [
            self.string(item, f"{path}[{i}]", nonempty=True) for i, item in enumerate(node.value)
        ]
        return None if None in items else [item for item in items if item is not None]

    def env(self, node: Node, path: str) -> dict[str, str] | None:
        """A mapping of variable names to strings (numbers keep their source text)."""
        items = self.entries(node, path)
        if items is None:
            return None
        out: dict[str, str] = {}
        for name, (key_node, value_node) in items.items():
            if not _ENV_NAME_RE.fullmatch(name):
                self.report(
                    key_node,
                    f"{path}: {name!r} is not a valid environment variable "
                    "name (letters, digits and _, not starting with a digit)",
                )
                continue
            value = self.string(value_node, f"{path}.{name}")
            if value is not None:
                out[name] = value
        return out

    # -- the pipeline

    def check(self, path: Path, environ: Mapping[str, str] | None) -> Pipeline | None:
        """Compose the text and build the pipeline; the node tree is garbage on return."""
        root = self.compose()
        return None if root is None else self.pipeline(root, path, environ)

    def pipeline(
        self, root: Node, path: Path, environ: Mapping[str, str] | None
    ) -> Pipeline | None:
        """Check everything and build the pipeline (None when a problem makes it impossible)."""
        top = self.section(root, TOP_KEYS, "", "the pipeline file")
        if top is None:
            return None
        fields = self.fields(top, TOP_KEYS, "")
        defaults = self.defaults(top.get("defaults"))
        hosts = self.hosts(top.get("hosts"))
        watch = self.watch(top.get("watch"))
        raw = self.raw_stages(top.get("stages"))
        env = fields.get("env", {})
        secrets = self.secrets(top.get("secrets"), fields.get("secrets", []), environ)
        if raw is None:
            return None
        self.check_needs(raw)
        self.check_hosts(raw)
        color = fields.get("color", False)
        stages, groups = self.expand(raw, {**COLOR_ENV, **env} if color else env, defaults)
        if self.problems:
            return None
        return Pipeline(
            path=path,
            name=fields.get("name", path.stem),
            stages=stages,
            groups=groups,
            env=env,
            secrets=secrets,
            hosts=hosts,
            watch=watch,
            color=color,
        )

    def defaults(self, node: Node | None) -> dict[str, Any]:
        """The `defaults:` section's values."""
        if node is None:
            return {}
        nodes = self.section(node, DEFAULTS_KEYS, "defaults", "defaults")
        return self.fields(nodes, DEFAULTS_KEYS, "defaults.") if nodes is not None else {}

    def hosts(self, node: Node | None) -> dict[str, Host]:
        """The `hosts:` section."""
        items = self.entries(node, "hosts") if node is not None else None
        hosts: dict[str, Host] = {}
        self.host_names = set(items or ())
        for name, (key_node, value) in (items or {}).items():
            if name == LOCAL:
                self.report(key_node, f"hosts: {LOCAL!r} is reserved for this machine")
                continue
            if not _NAME_RE.fullmatch(name):
                self.report(
                    key_node,
                    f"hosts: host name {name!r} may only contain letters, digits, '_', '.' and '-'",
                )
            nodes = self.section(value, HOST_KEYS, f"hosts.{name}", f"host {name!r}")
            if nodes is None:
                continue
            f = self.fields(nodes, HOST_KEYS, f"hosts.{name}.")
            hosts[name] = Host(
                name=name,
                address=f.get("address", "" if f.get("executor") == "slurm" else name),
                port=f.get("port"),
                user=f.get("user"),
                identity_file=f.get("identity_file"),
                known_hosts=f.get("known_hosts"),
                workdir=f.get("workdir"),
                slots=f.get("slots", Host.slots),
                executor=f.get("executor", Host.executor),
                slurm=_slurm_options(f["slurm"]) if "slurm" in f else None,
                sync_exclude=tuple(f.get("sync", {}).get("exclude", ())),
            )
        return hosts

    def watch(self, node: Node | None) -> WatchConfig:
        """The `watch:` section."""
        nodes = self.section(node, WATCH_KEYS, "watch", "watch") if node is not None else None
        if nodes is None:
            return WatchConfig()
        f = self.fields(nodes, WATCH_KEYS, "watch.")
        return WatchConfig(
            paths=tuple(f.get("paths", (".",))),
            ignore=tuple(f.get("ignore", ())),
            debounce=f.get("debounce", WatchConfig.debounce),
        )

    def secrets(
        self, node: Node | None, names: list[str], environ: Mapping[str, str] | None
    ) -> dict[str, str]:
        """Secret values: from `environ`, else from `.env` beside the file, else empty."""
        items = node.value if isinstance(node, SequenceNode) else [node]
        for name, item in zip(names, items, strict=False):
            if not _ENV_NAME_RE.fullmatch(name):
                self.report(item, f"secrets: {name!r} is not a valid environment variable name")
        from engine import envfile

        env_file = Path(self.file).parent / ".env"
        environ = os.environ if environ is None else environ
        values, problems = envfile.secret_values(names, environ, env_file)
        self.env_problems(env_file, problems)
        return values

    def dotenv(self, env_file: Path) -> dict[str, str]:
        """The values of a .env file (engine.envfile); its problems are reported."""
        from engine import envfile

        values, problems = envfile.read(env_file, MAX_FILE_BYTES)
        self.env_problems(env_file, problems)
        return values

    def env_problems(self, env_file: Path, problems: Iterable[EnvProblem]) -> None:
        """Report the problems of a .env file."""
        self.problems += [Problem(str(env_file), p.line, p.col, p.message) for p in problems]

    def raw_stages(self, node: Node | None) -> dict[str, _RawStage] | None:
        """Each stage's checked fields, before needs, hosts and matrices are resolved."""
        if node is None:
            return None
        items = self.entries(node, "stages")
        if items is None:
            return None
        if not items:
            self.report(node, "stages: a pipeline needs at least one stage")
            return None
        raw: dict[str, _RawStage] = {}
        self.stage_names = set(items)
        for name, (key_node, value) in items.items():
            if not _NAME_RE.fullmatch(name):
                self.report(
                    key_node,
                    f"stages: stage name {name!r} may only contain letters, "
                    "digits, '_', '.' and '-'",
                )
                continue
            path = f"stages.{name}"
            nodes = self.section(value, STAGE_KEYS, path, f"stage {name!r}", at=key_node)
            if nodes is None:
                continue
            fields = self.fields(nodes, STAGE_KEYS, f"{path}.")
            self.stage_details(fields, nodes, path)
            if "ready" in nodes:
                self.ready(fields, nodes["ready"], f"{path}.ready")
            needs = dict(zip(fields.get("needs", []), _items(nodes.get("needs")), strict=False))
            matrix = self.matrix(nodes["matrix"], f"{path}.matrix") if "matrix" in nodes else None
            axes, combos = matrix or ({}, [{}])
            raw[name] = _RawStage(name, key_node, value, nodes, fields, needs, axes, combos)
            if (matrix is not None or "matrix" not in nodes) and self.check_matrix_refs(raw[name]):
                self.check_paths(raw[name])
        return raw

    def stage_details(self, fields: dict[str, Any], nodes: Mapping[str, Node], path: str) -> None:
        """Checks of single stage fields beyond their type; `shell` becomes a tuple."""
        if "shell" in fields:
            try:
                fields["shell"] = tuple(shlex.split(fields["shell"]))
            except ValueError as err:
                self.report(nodes["shell"], f"{path}.shell: cannot split it: {err}")
                del fields["shell"]

    def check_paths(self, stage: _RawStage) -> None:
        """Report a cwd, metrics file, input or output that leads out of the workspace, as written
        or in any matrix combination."""
        for key in PATH_KEYS:
            texts = stage.fields.get(key)
            if texts is None:
                continue
            texts = texts if isinstance(texts, list) else [texts]
            for text, node in zip(texts, _items(stage.nodes[key]), strict=False):
                for combo in stage.combos:
                    path = _substitute(text, combo)
                    if key in GLOB_KEYS:  # `!` excludes; a leading `/` anchors at the workspace
                        path = globs.normalize(path.removeprefix("!"))
                    if _leaves_workspace(path):
                        shown = f"{text!r}" + (f" ({path!r} in {combo})" if combo else "")
                        self.report(
                            node,
                            f"stages.{stage.name}.{key}: {shown} leads out of the workspace; "
                            "paths are relative to the pipeline file's directory and stay inside",
                        )
                        break

    def ready(self, fields: dict[str, Any], node: Node, path: str) -> None:
        """The `ready:` probe of a service: exactly one of PROBE_KINDS, checked, into `fields`."""
        nodes = self.section(node, READY_KEYS, path, path)
        if nodes is None:
            return
        f = self.fields(nodes, READY_KEYS, f"{path}.")
        kinds = [kind for kind in PROBE_KINDS if kind in nodes]
        if len(kinds) != 1:
            found = f"got {', '.join(kinds)}" if kinds else "got none"
            self.report(node, f"{path}: needs exactly one of {', '.join(PROBE_KINDS)}; {found}")
            return
        kind = kinds[0]
        target = f.get(kind)
        if target is None:
            return
        if not fields.get("service"):
            self.report(node, f"{path}: only a stage with service: true has a ready probe")
        if kind == "http" and not re.match(r"https?://", target):
            self.report(nodes[kind], f"{path}.http: expected an http:// or https:// URL")
            return
        if kind == "tcp" and not re.fullmatch(r"\S+:(?:[0-9]+|\$\{\{.*\}\})", target):
            self.report(nodes[kind], f"{path}.tcp: expected HOST:PORT, got {target!r}")
            return
        if kind == "log":
            try:
                re.compile(target)
            except re.error as err:
                self.report(nodes[kind], f"{path}.log: not a valid regular expression: {err}")
                return
        timing = {k: f[k] for k in ("interval", "timeout") if k in f}  # else Probe's defaults
        fields["ready"] = Probe(kind, target, **timing)

    def matrix(
        self, node: Node, path: str
    ) -> tuple[dict[str, list[str]], list[dict[str, str]]] | None:
        """Axis -> values, and the combinations left after `exclude`; every axis needs at
        least one value, no value twice (an axis with a problem maps to no values, so that
        references to it are not reported too)."""
        items = self.entries(node, path)
        if items is None:
            return None
        exclude = items.pop(MATRIX_EXCLUDE, None)
        if not items:
            self.report(node, f"{path}: a matrix needs at least one axis")
            return None
        axes: dict[str, list[str]] = {}
        for axis, (key_node, value) in items.items():
            axes[axis] = []
            if not _AXIS_RE.fullmatch(axis):
                self.report(
                    key_node,
                    f"{path}: axis name {axis!r} may only contain letters, "
                    "digits, '_' and '-', not starting with a digit",
                )
                continue
            if not isinstance(value, SequenceNode):
                self.report(
                    value, f"{path}.{axis}: expected a list of values, got {_describe(value)}"
                )
                continue
            if not value.value:
                self.report(
                    value, f"{path}.{axis}: the matrix axis is empty; give it at least one value"
                )
                continue
            values: list[str] = []
            for i, item in enumerate(value.value):
                text = self.string(item, f"{path}.{axis}[{i}]", nonempty=True)
                if text is None:
                    continue
                if text in values:
                    self.report(item, f"{path}.{axis}[{i}]: duplicate value {text!r}")
                elif re.search(_CONTROL, text):
                    self.report(
                        item,
                        f"{path}.{axis}[{i}]: a matrix value must be one line of printable text",
                    )
                else:
                    values.append(text)
            axes[axis] = values
        size = math.prod(len(values) for values in axes.values())
        if size > MAX_INSTANCES:
            self.report(
                node,
                f"{path}: {size} combinations; a pipeline may have at most {MAX_INSTANCES} "
                "stage instances",
            )
            return axes, []
        rules = self.matrix_exclude(exclude[1], axes, f"{path}.{MATRIX_EXCLUDE}") if exclude else []
        combos = [
            combo
            for combo in _combinations(axes)
            if not any(rule.items() <= combo.items() for rule in rules)
        ]
        if exclude and size and not combos:
            self.report(exclude[0], f"{path}: the exclude rules leave no combination")
        return axes, combos

    def matrix_exclude(
        self, node: Node, axes: Mapping[str, list[str]], path: str
    ) -> list[dict[str, str]]:
        """The `exclude:` rules of a matrix: each a mapping of some axes to one of their values."""
        if not isinstance(node, SequenceNode):
            self.report(node, f"{path}: expected a list of mappings, got {_describe(node)}")
            return []
        rules = []
        for i, item in enumerate(node.value):
            entries = self.entries(item, f"{path}[{i}]")
            if entries is None:
                continue
            rule: dict[str, str] = {}
            for axis, (key_node, value_node) in entries.items():
                value = self.string(value_node, f"{path}[{i}].{axis}")
                if axis not in axes:
                    self.report(
                        key_node,
                        f"{path}[{i}]: unknown matrix axis {axis!r}"
                        + _did_you_mean(axis, list(axes)),
                    )
                elif value is not None and value not in axes[axis]:
                    self.report(
                        value_node,
                        f"{path}[{i}].{axis}: {value!r} is not a value of the axis {axis!r}",
                    )
                elif value is not None:
                    rule[axis] = value
            if len(rule) == len(entries):  # a rule with a problem excludes nothing
                rules.append(rule)
        return rules

    def check_needs(self, raw: dict[str, _RawStage]) -> None:
        """Report unknown needs and every dependency cycle."""
        needs: dict[str, list[str]] = {}
        for name, stage in raw.items():
            needs[name] = []
            for need, node in stage.needs.items():
                dep = _need_stage(need)
                if dep in raw:
                    needs[name].append(dep)
                elif dep not in self.stage_names:
                    self.report(
                        node,
                        f"stages.{name}.needs: unknown stage {dep!r}"
                        + _did_you_mean(dep, sorted(self.stage_names)),
                    )
        while True:
            try:
                graph.topo_order(needs)
                return
            except graph.CycleError as err:
                first, second = err.cycle[0], err.cycle[1 % len(err.cycle)]
                self.report(
                    next(n for need, n in raw[first].needs.items() if _need_stage(need) == second),
                    f"{err} (each stage needs the next; remove one of these needs)",
                )
                needs[first] = [dep for dep in needs[first] if dep != second]

    def check_hosts(self, raw: dict[str, _RawStage]) -> None:
        """Every stage host is `local`, in `hosts:`, or a Host entry of ~/.ssh/config."""
        for name, stage in raw.items():
            host = stage.fields.get("host", LOCAL)
            if host == LOCAL or host in self.host_names or self.in_ssh_config(host):
                continue
            self.report(
                stage.nodes["host"],
                f"stages.{name}.host: unknown host {host!r}: not in "
                "hosts:, not 'local', and no Host entry in ~/.ssh/config"
                + _did_you_mean(host, [LOCAL, *sorted(self.host_names)]),
            )

    def in_ssh_config(self, host: str) -> bool:
        """True when a Host line of ~/.ssh/config (or a file it includes) names `host`.

        A pattern made only of `*` (`Host *`) does not count; negated patterns are ignored.
        """
        if self._ssh_patterns is None:
            self._ssh_patterns = _ssh_config_hosts(_ssh_dir() / "config")
        host = host.lower()
        return any(
            fnmatchcase(host, pattern.lower())
            for pattern in self._ssh_patterns
            if pattern.strip("*") and not pattern.startswith("!")
        )

    def check_matrix_refs(self, stage: _RawStage) -> bool:
        """Report each `${{ matrix.X }}` (in run, cwd, env, inputs, outputs, needs or metrics)
        naming an axis the stage lacks, at its first place in the stage's text; True if none."""
        f = stage.fields
        texts = [f.get("run", ""), *f.get("env", {}).values(), *stage.needs]
        for key in PATH_KEYS:
            value = f.get(key, [])
            texts.extend(value if isinstance(value, list) else [value])
        if "ready" in f:
            texts.append(f["ready"].target)
        unknown = {
            m.group(0): m.group(1)
            for text in texts
            if "${{" in text
            for m in _MATRIX_EXPR_RE.finditer(text)
            if m.group(1) not in stage.axes
        }
        start, end = stage.node.start_mark.index, stage.node.end_mark.index
        for expr, axis in unknown.items():
            if stage.axes:
                message = (
                    f"stages.{stage.name}: unknown matrix axis {axis!r} in {expr}"
                    + _did_you_mean(axis, list(stage.axes))
                )
            else:
                message = f"stages.{stage.name}: {expr} used in a stage without a matrix"
            offset = self.text.find(expr, start, end)
            if offset >= 0:
                self.report_index(offset, message)
            else:
                self.report(stage.key, message)
        return not unknown

    def expand(
        self, raw: dict[str, _RawStage], env: Mapping[str, str], defaults: Mapping[str, Any]
    ) -> tuple[dict[str, Stage], dict[str, tuple[str, ...]]]:
        """Matrix expansion into stage instances, in topological order."""
        total = sum(len(stage.combos) for stage in raw.values())
        if total > MAX_INSTANCES:
            self.report(
                next(iter(raw.values())).key,
                f"stages: {total} stage instances (stages, with each matrix combination "
                f"counted); at most {MAX_INSTANCES} are allowed",
            )
        edges = sum(
            len(stage.combos) * (len(raw[need].combos) if need in raw else 1)
            for stage in raw.values()
            for need in stage.needs
        )
        if edges > MAX_EDGES:
            self.report(
                next(iter(raw.values())).key,
                f"stages: the needs make {edges} dependencies between stage instances (a matrix "
                f"stage needing a matrix stage needs each of its instances); at most {MAX_EDGES} "
                "are allowed: pair instances (needs: ['build[os=${{ matrix.os }}]'])",
            )
        if self.problems:
            return {}, {}
        groups = {
            name: [_matrix_id(name, combo) if combo else name for combo in stage.combos]
            for name, stage in raw.items()
        }
        ids = {sid for sids in groups.values() for sid in sids}
        instances: dict[str, Stage] = {}
        for name, stage in raw.items():
            shared = None  # needs without ${{ matrix.X }} are the same for every instance
            for sid, combo in zip(groups[name], stage.combos, strict=True):
                if shared is None:
                    needs = self.instance_needs(stage, sid, combo, groups, ids)
                else:
                    needs = shared
                if not any("${{" in need for need in stage.needs):
                    shared = needs
                instances[sid] = _instance(stage, sid, combo, needs, env, defaults)
        if self.problems:
            return {}, {}
        order = graph.topo_order({sid: s.needs for sid, s in instances.items()})
        names = dict.fromkeys(instances[sid].name for sid in order)  # in topological order
        return {sid: instances[sid] for sid in order}, {n: tuple(groups[n]) for n in names}

    def instance_needs(
        self,
        stage: _RawStage,
        sid: str,
        combo: Mapping[str, str],
        groups: Mapping[str, list[str]],
        ids: set[str],
    ) -> tuple[str, ...]:
        """The instance ids one instance needs: every instance of a needed stage name, or the
        instance a need names (`setup[python=${{ matrix.python }}]`, values as in ids)."""
        needs: dict[str, None] = {}
        for need, node in stage.needs.items():
            dep = _need_stage(need)
            if need in groups:
                needs.update(dict.fromkeys(groups[need]))
                continue
            wanted = _MATRIX_EXPR_RE.sub(lambda m: _id_value(combo[m.group(1)]), need)
            if wanted in ids:
                needs[wanted] = None
            elif dep in groups:
                shown = f"{need!r}" + (f" ({wanted!r} for {sid})" if wanted != need else "")
                self.report(
                    node,
                    f"stages.{stage.name}.needs: {shown} is not an instance of {dep!r}; "
                    f"its instances: {', '.join(groups[dep][:5])}"
                    + (", ..." if len(groups[dep]) > 5 else ""),
                )
        return tuple(needs)


def _items(node: Node | None) -> list[Node]:
    """The item nodes of a list, or the node itself for a single value."""
    return node.value if isinstance(node, SequenceNode) else [node] if node is not None else []


def _need_stage(need: str) -> str:
    """The stage name in a `needs` entry: `setup` for `setup[python=3.12]`."""
    return need.split("[", 1)[0]


def _leaves_workspace(path: str) -> bool:
    """True when a path or glob can lead out of the directory it is relative to: absolute, or
    more `..` than the parts before them (a `**` may stand for no part at all)."""
    if path.startswith("/"):
        return True
    depth = 0
    for part in path.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", ".", "**"):
            depth += 1
    return False


def _combinations(axes: Mapping[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of matrix values, in axis order."""
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


def _substitute(text: str, combo: Mapping[str, str]) -> str:
    """Replace `${{ matrix.AXIS }}` by the combination's values."""
    return _MATRIX_EXPR_RE.sub(lambda m: combo[m.group(1)], text) if combo else text


def _instance(
    stage: _RawStage,
    sid: str,
    combo: dict[str, str],
    needs: tuple[str, ...],
    env: Mapping[str, str],
    defaults: Mapping[str, Any],
) -> Stage:
    """One stage instance for one matrix combination."""
    f = stage.fields
    stage_env = {**env, **{k: _substitute(v, combo) for k, v in f.get("env", {}).items()}}
    stage_env.update({_matrix_env_name(axis): value for axis, value in combo.items()})
    return Stage(
        id=sid,
        name=stage.name,
        run=_substitute(f["run"], combo),
        needs=needs,
        env=stage_env,
        cwd=_substitute(f.get("cwd", "."), combo),
        shell=f.get("shell", ()),
        timeout=f.get("timeout", defaults.get("timeout")) or None,
        kill_grace=f.get("kill_grace", defaults.get("kill_grace", Stage.kill_grace)),
        retries=f.get("retries", defaults.get("retries", Stage.retries)),
        when=f.get("when", Stage.when),
        allow_failure=f.get("allow_failure", Stage.allow_failure),
        inputs=tuple(_substitute(glob, combo) for glob in f.get("inputs", ())),
        outputs=tuple(_substitute(glob, combo) for glob in f.get("outputs", ())),
        host=f.get("host", LOCAL),
        matrix=combo,
        metrics=_substitute(f["metrics"], combo) if "metrics" in f else None,
        resources=Resources(**f.get("resources", {})),
        service=f.get("service", False),
        ready=f["ready"]._replace(target=_substitute(f["ready"].target, combo))
        if "ready" in f
        else None,
        restart=f.get("restart", Stage.restart),
        tty=f.get("tty", False),
    )


def _slurm_options(fields: dict[str, Any]) -> SlurmOptions:
    return SlurmOptions(**{**fields, "extra_args": tuple(fields.get("extra_args", ()))})


def _ssh_dir() -> Path:
    """~/.ssh (os.path.expanduser, unlike Path.home(), never raises without a home)."""
    return Path(os.path.expanduser("~/.ssh"))


def _ssh_config_hosts(config: Path, depth: int = 0) -> list[str]:
    """The Host patterns of an OpenSSH client config and of the files it includes."""
    try:
        if not config.is_file() or config.stat().st_size > MAX_FILE_BYTES:
            return []
        text = config.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    patterns: list[str] = []
    for line in text.splitlines():
        match = re.match(r"\s*(\w+)(?:\s*=\s*|\s+)(.*)", line)
        if match is None:
            continue
        keyword, args = match.group(1).lower(), match.group(2).replace('"', " ").split()
        if keyword == "host":
            patterns.extend(args)
        elif keyword == "include" and depth < 8:
            for arg in args:
                target = Path(os.path.expanduser(arg))
                if not target.is_absolute():
                    target = _ssh_dir() / target
                for included in sorted(glob(str(target))):
                    patterns.extend(_ssh_config_hosts(Path(included), depth + 1))
    return patterns
