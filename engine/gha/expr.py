"""GitHub Actions expressions: a tokenizer, a recursive-descent parser and an evaluator.

Semantics follow GitHub's documentation and runner: values are null, booleans, numbers (floats),
strings, arrays and objects; `==`/`!=`/`<`... coerce mismatched types to numbers and compare
strings case-insensitively; `&&`/`||` short-circuit and return an operand; property access on
a missing key or on null is null; `.*` is an object filter. Property names and function names are
case-insensitive. Every problem is an `ExprError` with the 0-based position in the text.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from engine.errors import PipedeckError

TYPE_CHECKING = False  # typing is not imported at run time: the job runner starts faster
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

MAX_DEPTH = 50  # nesting, as GitHub's limit
MAX_LENGTH = 21_000  # characters of one expression, as GitHub's limit

CONTEXTS = (
    "github",
    "env",
    "vars",
    "secrets",
    "matrix",
    "needs",
    "steps",
    "job",
    "jobs",
    "runner",
    "strategy",
    "inputs",
)

_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<number>[+-]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|
                 (?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|Infinity)|NaN)(?![A-Za-z0-9_])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_-]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[<>!()\[\].,*])
    """,
    re.VERBOSE,
)
_KEYWORDS = {"true": True, "false": False, "null": None}


class ExprError(PipedeckError):
    """A bad expression: `message` at 0-based character `pos` of the expression text."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(f"{message} (at character {pos + 1})")
        self.message = message
        self.pos = pos


class Filtered(list):  # type: ignore[type-arg]
    """The array an object filter (`.*`) yields; indexing it maps over its items."""


class Token:
    """One token: its kind (string, number, ident, op, end), text and position."""

    __slots__ = ("kind", "pos", "text")

    def __init__(self, kind: str, text: str, pos: int) -> None:
        self.kind, self.text, self.pos = kind, text, pos


def tokenize(text: str, start: int = 0, stop_at_braces: bool = False) -> Iterator[Token]:
    """Tokens of `text` from `start`; with `stop_at_braces`, ends at a `}}` (interpolation)."""
    pos = start
    while pos < len(text):
        if stop_at_braces and text.startswith("}}", pos):
            yield Token("end", "}}", pos)
            return
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            char = text[pos]
            if char == '"':
                raise ExprError("strings take single quotes ('...'), not double quotes", pos)
            if char == "'":
                raise ExprError("unterminated string", pos)
            raise ExprError(f"unexpected character {char!r}", pos)
        kind = match.lastgroup or ""
        if kind != "space":
            yield Token(kind, match.group(), pos)
        pos = match.end()
    if stop_at_braces:
        raise ExprError("'${{' without a closing '}}'", max(start - 3, 0))
    yield Token("end", "", pos)


# -- the syntax tree: tuples, the first item names the node ----------------------------------
# ("lit", value) ("ctx", name, pos) ("prop", obj, name) ("index", obj, expr) ("star", obj)
# ("not", x) ("cmp", op, left, right, pos) ("and", left, right) ("or", left, right)
# ("call", name, args, pos)

if TYPE_CHECKING:
    Node = tuple[Any, ...]


class _Parser:
    def __init__(self, tokens: Iterator[Token]) -> None:
        self.tokens = tokens
        self.token = next(tokens)
        self.depth = 0

    def advance(self) -> Token:
        token = self.token
        self.token = next(self.tokens)
        return token

    def expect(self, text: str) -> Token:
        if self.token.text != text or self.token.kind not in ("op",):
            raise ExprError(f"expected {text!r}, got {self.describe()}", self.token.pos)
        return self.advance()

    def describe(self) -> str:
        return "the end" if self.token.kind == "end" else repr(self.token.text)

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(f"expression nested deeper than {MAX_DEPTH} levels", self.token.pos)

    def parse(self) -> Node:
        if self.token.kind == "end":
            raise ExprError("empty expression", self.token.pos)
        node = self.or_()
        if self.token.kind != "end":
            raise ExprError(f"unexpected {self.describe()}", self.token.pos)
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.token.text == "||" and self.token.kind == "op":
            self.advance()
            node = ("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.equality()
        while self.token.text == "&&" and self.token.kind == "op":
            self.advance()
            node = ("and", node, self.equality())
        return node

    def equality(self) -> Node:
        node = self.comparison()
        while self.token.text in ("==", "!=") and self.token.kind == "op":
            op = self.advance()
            node = ("cmp", op.text, node, self.comparison(), op.pos)
        return node

    def comparison(self) -> Node:
        node = self.unary()
        while self.token.text in ("<", "<=", ">", ">=") and self.token.kind == "op":
            op = self.advance()
            node = ("cmp", op.text, node, self.unary(), op.pos)
        return node

    def unary(self) -> Node:
        if self.token.text == "!" and self.token.kind == "op":
            self.advance()
            self.nest()
            node = ("not", self.unary())
            self.depth -= 1
            return node
        return self.postfix(self.primary())

    def postfix(self, node: Node) -> Node:
        while self.token.kind == "op" and self.token.text in (".", "["):
            if self.advance().text == ".":
                if self.token.text == "*" and self.token.kind == "op":
                    self.advance()
                    node = ("star", node)
                elif self.token.kind == "ident":
                    node = ("prop", node, self.advance().text)
                else:
                    raise ExprError(
                        f"expected a property name after '.', got {self.describe()}",
                        self.token.pos,
                    )
            elif self.token.text == "*" and self.token.kind == "op":
                self.advance()
                self.expect("]")
                node = ("star", node)
            else:
                self.nest()
                index = self.or_()
                self.depth -= 1
                self.expect("]")
                node = ("index", node, index)
        return node

    def primary(self) -> Node:
        token = self.token
        if token.kind == "string":
            self.advance()
            return ("lit", token.text[1:-1].replace("''", "'"))
        if token.kind == "number":
            self.advance()
            return ("lit", parse_number(token.text))
        if token.kind == "ident":
            self.advance()
            if token.text in _KEYWORDS:
                return ("lit", _KEYWORDS[token.text])
            if self.token.text == "(" and self.token.kind == "op":
                return self.call(token)
            return ("ctx", token.text, token.pos)
        if token.text == "(" and token.kind == "op":
            self.advance()
            self.nest()
            node = self.or_()
            self.depth -= 1
            self.expect(")")
            return node
        raise ExprError(f"expected a value, got {self.describe()}", token.pos)

    def call(self, name: Token) -> Node:
        spec = FUNCTIONS.get(name.text.lower())
        if spec is None:
            raise ExprError(f"unknown function {name.text}()", name.pos)
        self.advance()
        self.nest()
        args: list[Node] = []
        if not (self.token.text == ")" and self.token.kind == "op"):
            args.append(self.or_())
            while self.token.text == "," and self.token.kind == "op":
                self.advance()
                args.append(self.or_())
        self.expect(")")
        self.depth -= 1
        low, high = spec[1], spec[2]
        if not low <= len(args) <= high:
            wanted = str(low) if low == high else f"{low} to {high if high < 99 else 'any'}"
            raise ExprError(f"{name.text}() takes {wanted} argument(s), got {len(args)}", name.pos)
        return ("call", name.text.lower(), tuple(args), name.pos)


def parse(text: str) -> Node:
    """The syntax tree of one expression (without `${{ }}`), or `ExprError`."""
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression longer than {MAX_LENGTH} characters", 0)
    return _Parser(tokenize(text)).parse()


def parse_number(text: str) -> float:
    """A number as GitHub reads it: JSON numbers, hex `0x..`, octal `0o..`, Infinity, NaN."""
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body[:2].lower() == "0x":
        return sign * int(body[2:], 16)
    if body[:2].lower() == "0o":
        return sign * int(body[2:], 8)
    return sign * float(body)


# -- values ----------------------------------------------------------------------------------


def to_str(value: Any) -> str:
    """A value as GitHub writes it into a string: null '', true 'true', 711 '711', JSON for
    arrays and objects."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return _number_text(float(value))
    if isinstance(value, str):
        return value
    return to_json(value)


def _number_text(number: float) -> str:
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == int(number) and abs(number) < 1e15:
        return str(int(number))
    return format(number, ".15g").replace("e+", "E+").replace("e-", "E-")


def to_number(value: Any) -> float:
    """GitHub's number coercion: null 0, booleans 0/1, strings parsed (empty 0, else NaN)."""
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return 0.0
        match = _TOKEN_RE.fullmatch(text)
        if match is not None and match.lastgroup == "number":
            return parse_number(text)
        return math.nan
    return math.nan


def truthy(value: Any) -> bool:
    """false, 0, -0, NaN, '' and null are false; everything else (arrays, objects) true."""
    if value is None or value is False:
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0 and not math.isnan(value)
    if isinstance(value, str):
        return value != ""
    return True


def _primitive(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"


def loose_equal(left: Any, right: Any) -> bool:
    """`==`: same types compare directly (strings case-insensitively, arrays and objects by
    identity); mismatched types are compared as numbers."""
    kl, kr = _kind(left), _kind(right)
    if kl == kr:
        if kl == "string":
            return bool(left.casefold() == right.casefold())
        if kl == "object":
            return left is right
        if kl == "number":
            return float(left) == float(right)
        return bool(left == right)
    if kl == "object" or kr == "object":
        return False
    return to_number(left) == to_number(right)


def _compare(op: str, left: Any, right: Any) -> bool:
    kl, kr = _kind(left), _kind(right)
    if kl == kr == "string":
        a, b = left.casefold(), right.casefold()
    else:
        a, b = to_number(left), to_number(right)
        if math.isnan(a) or math.isnan(b):
            return False
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def get_property(value: Any, name: str) -> Any:
    """`value.name`: a case-insensitive key of an object, else null."""
    if isinstance(value, Filtered):
        out = Filtered()
        for item in value:
            found = get_property(item, name)
            if found is not None:
                out.append(found)
        return out
    if isinstance(value, Mapping):
        if name in value:
            return value[name]
        lowered = name.lower()
        for key, item in value.items():
            if isinstance(key, str) and key.lower() == lowered:
                return item
    return None


def _index(value: Any, index: Any) -> Any:
    if isinstance(value, Filtered):
        out = Filtered()
        for item in value:
            found = _index(item, index)
            if found is not None:
                out.append(found)
        return out
    if isinstance(value, list):
        if isinstance(index, str) or index is None or isinstance(index, list | dict):
            number = to_number(index)
        else:
            number = float(index)
        if math.isnan(number) or number < 0:
            return None
        position = int(number)
        return value[position] if position < len(value) else None
    if isinstance(value, Mapping):
        return get_property(value, to_str(index)) if _primitive(index) else None
    return None


def _star(value: Any) -> Filtered:
    if isinstance(value, Filtered):
        out = Filtered()
        for item in value:
            if isinstance(item, list):
                out.extend(item)
            elif isinstance(item, Mapping):
                out.extend(item.values())
        return out
    if isinstance(value, list):
        return Filtered(value)
    if isinstance(value, Mapping):
        return Filtered(value.values())
    return Filtered()


def to_json(value: Any) -> str:
    """`toJSON`: pretty-printed with two spaces, integral numbers without a fraction."""
    return json.dumps(_plain(value), indent=2, ensure_ascii=False)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value == int(value) and abs(value) < 1e15:
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# -- evaluation ------------------------------------------------------------------------------


class Status:
    """What `success()`, `failure()` and `cancelled()` report where an expression is evaluated."""

    __slots__ = ("cancelled", "failed")

    def __init__(self, failed: bool = False, cancelled: bool = False) -> None:
        self.failed, self.cancelled = failed, cancelled


class Context:
    """What an expression sees: the context objects, the job status, and the workspace that
    `hashFiles` reads."""

    __slots__ = ("status", "values", "workspace")

    def __init__(
        self,
        values: Mapping[str, Any] | None = None,
        status: Status | None = None,
        workspace: Path | None = None,
    ) -> None:
        self.values = {} if values is None else values
        self.status = Status() if status is None else status
        self.workspace = workspace


def evaluate(node: Node | str, ctx: Context) -> Any:
    """The value of an expression (text or parsed tree) in `ctx`."""
    tree = parse(node) if isinstance(node, str) else node
    return _eval(tree, ctx)


def _eval(node: Node, ctx: Context) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "ctx":
        name = node[1].lower()
        if name not in CONTEXTS:
            raise ExprError(f"unknown context {node[1]!r}", node[2])
        return get_property(ctx.values, name)
    if kind == "prop":
        return get_property(_eval(node[1], ctx), node[2])
    if kind == "index":
        return _index(_eval(node[1], ctx), _eval(node[2], ctx))
    if kind == "star":
        return _star(_eval(node[1], ctx))
    if kind == "not":
        return not truthy(_eval(node[1], ctx))
    if kind == "and":
        left = _eval(node[1], ctx)
        return _eval(node[2], ctx) if truthy(left) else left
    if kind == "or":
        left = _eval(node[1], ctx)
        return left if truthy(left) else _eval(node[2], ctx)
    if kind == "cmp":
        op, left, right = node[1], _eval(node[2], ctx), _eval(node[3], ctx)
        if op == "==":
            return loose_equal(left, right)
        if op == "!=":
            return not loose_equal(left, right)
        return _compare(op, left, right)
    if kind == "call":
        function = FUNCTIONS[node[1]][0]
        try:
            return function(ctx, *[_eval(arg, ctx) for arg in node[2]])
        except ExprError as err:
            if err.pos < 0:
                raise ExprError(err.message + _skipped_sources(node[2], ctx), node[3]) from None
            raise
    raise ValueError(f"bad node {kind!r}")


def _skipped_sources(args: list[Node], ctx: Context) -> str:
    """Why a function's arguments may be empty: the outputs of skipped steps and jobs
    (`steps.x.outputs.y` when step x was skipped, with the reason the runner recorded in the
    hidden `skipped` value)."""
    notes = []
    for node in args:
        path = []
        while node[0] == "prop":
            path.append(node[2])
            node = node[1]
        if node[0] != "ctx" or len(path) < 2:
            continue
        root, source = node[1].lower(), path[-1]
        entry = get_property(get_property(ctx.values, root), source)
        state = get_property(entry, {"steps": "outcome", "needs": "result"}.get(root, ""))
        known = ctx.values.get("skipped", {})
        if state == "skipped":
            why = known.get(f"{root}.{source}")
            notes.append(f"{root}.{source} was skipped" + (f" ({why})" if why else ""))
        elif why := known.get(".".join([root, *reversed(path)])):  # a job output from one
            notes.append(why)
    return "; " + ", ".join(notes) + ", so its outputs are empty" if notes else ""


def _fail(message: str) -> ExprError:
    return ExprError(message, -1)  # the position of the call is filled in by _eval


def _contains(ctx: Context, search: Any, item: Any) -> bool:
    if isinstance(search, list):
        return any(loose_equal(element, item) for element in search)
    if not _primitive(search) or not _primitive(item):
        return False
    return to_str(item).casefold() in to_str(search).casefold()


def _starts_with(ctx: Context, text: Any, prefix: Any) -> bool:
    if not _primitive(text) or not _primitive(prefix):
        return False
    return to_str(text).casefold().startswith(to_str(prefix).casefold())


def _ends_with(ctx: Context, text: Any, suffix: Any) -> bool:
    if not _primitive(text) or not _primitive(suffix):
        return False
    return to_str(text).casefold().endswith(to_str(suffix).casefold())


def _format(ctx: Context, template: Any, *args: Any) -> str:
    text = to_str(template)
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "{" and text.startswith("{{", i):
            out.append("{")
            i += 2
        elif char == "}" and text.startswith("}}", i):
            out.append("}")
            i += 2
        elif char == "{":
            end = text.find("}", i)
            index = text[i + 1 : end] if end > 0 else ""
            if not index.isdigit():
                raise _fail(f"format(): bad placeholder at {text[i : i + 10]!r}")
            if int(index) >= len(args):
                raise _fail(f"format(): no argument for {{{index}}}")
            out.append(to_str(args[int(index)]))
            i = end + 1
        elif char == "}":
            raise _fail("format(): a lone '}' (write '}}' for a literal one)")
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _join(ctx: Context, items: Any, separator: Any = ",") -> str:
    if isinstance(items, list):
        return to_str(separator).join(to_str(i) if _primitive(i) else "" for i in items)
    return to_str(items) if _primitive(items) else ""


def _to_json(ctx: Context, value: Any) -> str:
    return to_json(value)


def _from_json(ctx: Context, text: Any) -> Any:
    try:
        return json.loads(to_str(text), parse_int=float)
    except (ValueError, RecursionError) as err:
        raise _fail(f"fromJSON(): not JSON: {to_str(text)[:60]!r} ({err})") from None


def _hash_files(ctx: Context, *patterns: Any) -> str:
    root = ctx.workspace or Path.cwd()
    return hash_files(root, tuple(to_str(p) for p in patterns))


def hash_files(root: Path, patterns: tuple[str, ...]) -> str:
    """sha256 over the sha256 of each file matching the globs (`!glob` excludes), in path
    order, relative to `root` (absolute patterns inside it are made relative); '' when none."""
    from engine.globs import matcher

    root = root.resolve()
    relative = []
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        if os.path.isabs(body):
            body = os.path.relpath(body, root)
        relative.append(("!" if negate else "") + body)
    match = matcher(tuple(relative))
    import hashlib  # only hashFiles needs it: the job runner starts without it

    digest = hashlib.sha256()
    found = False
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        rel_dir = os.path.relpath(directory, root)
        for name in sorted(files):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if match(rel):
                found = True
                with open(os.path.join(directory, name), "rb") as handle:
                    digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest() if found else ""


def _success(ctx: Context) -> bool:
    return not ctx.status.failed and not ctx.status.cancelled


def _always(ctx: Context) -> bool:
    return True


def _failure(ctx: Context) -> bool:
    return ctx.status.failed and not ctx.status.cancelled


def _cancelled(ctx: Context) -> bool:
    return ctx.status.cancelled


FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "contains": (_contains, 2, 2),
    "startswith": (_starts_with, 2, 2),
    "endswith": (_ends_with, 2, 2),
    "format": (_format, 1, 99),
    "join": (_join, 1, 2),
    "tojson": (_to_json, 1, 1),
    "fromjson": (_from_json, 1, 1),
    "hashfiles": (_hash_files, 1, 99),
    "success": (_success, 0, 0),
    "always": (_always, 0, 0),
    "failure": (_failure, 0, 0),
    "cancelled": (_cancelled, 0, 0),
}
STATUS_FUNCTIONS = frozenset({"success", "always", "failure", "cancelled"})


# -- ${{ }} in strings -----------------------------------------------------------------------


class Piece:
    """A part of a string: literal text, or an expression (`tree` set) at `start`..`end`."""

    __slots__ = ("end", "start", "text", "tree")

    def __init__(self, text: str, start: int, end: int, tree: Node | None = None) -> None:
        self.text, self.start, self.end, self.tree = text, start, end, tree


@lru_cache(maxsize=4096)
def pieces(text: str) -> tuple[Piece, ...]:
    """Split a string into literal text and `${{ expression }}` parts (parsed), or raise
    `ExprError` with the position in `text`. Cached: a workflow repeats its expressions."""
    return tuple(_pieces(text))


def _pieces(text: str) -> list[Piece]:
    out: list[Piece] = []
    pos = 0
    while True:
        start = text.find("${{", pos)
        if start < 0:
            if pos < len(text):
                out.append(Piece(text[pos:], pos, len(text)))
            return out
        if start > pos:
            out.append(Piece(text[pos:start], pos, start))
        tokens = list(tokenize(text, start + 3, stop_at_braces=True))
        end = tokens[-1].pos
        inner = text[start + 3 : end]
        if not inner.strip():
            raise ExprError("empty expression in '${{ }}'", start)
        tree = _Parser(iter(tokens)).parse()
        out.append(Piece(inner.strip(), start, end + 2, tree))
        pos = end + 2


def has_expression(text: str) -> bool:
    """True when the string holds a `${{`."""
    return "${{" in text


def interpolate(text: str, ctx: Context) -> Any:
    """A string with each `${{ }}` replaced by its value; a string that is exactly one
    expression keeps the value's type (`${{ fromJSON('[1]') }}` is an array)."""
    if "${{" not in text:
        return text
    parts = pieces(text)
    if len(parts) == 1 and parts[0].tree is not None:
        return _unfilter(_eval(parts[0].tree, ctx))
    return "".join(
        to_str(_eval(part.tree, ctx)) if part.tree is not None else part.text for part in parts
    )


def interpolate_all(value: Any, ctx: Context) -> Any:
    """Every string in a structure of lists and mappings interpolated."""
    if isinstance(value, str):
        return interpolate(value, ctx)
    if isinstance(value, Mapping):
        return {k: interpolate_all(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_all(v, ctx) for v in value]
    return value


def _unfilter(value: Any) -> Any:
    return list(value) if isinstance(value, Filtered) else value


def condition_tree(text: str) -> Node:
    """The tree of an `if:` value: `${{ }}` optional; without a status function it means
    `success() && (...)`."""
    stripped = text.strip()
    parts = pieces(stripped) if stripped.startswith("${{") else []
    if len(parts) == 1 and parts[0].tree is not None:
        tree = parts[0].tree
    elif "${{" in stripped:
        # text around an expression: GitHub evaluates it as a (non-empty, so true) string
        return ("interp", stripped)
    else:
        tree = parse(stripped)
    if not _uses_status(tree):
        tree = ("and", ("call", "success", (), 0), tree)
    return tree


def _children(node: Node) -> Iterator[Node]:
    for part in node[1:]:
        if isinstance(part, tuple) and part and isinstance(part[0], str):
            yield part
        elif isinstance(part, tuple):  # the arguments of a call
            yield from (arg for arg in part if isinstance(arg, tuple))


def _uses_status(node: Node) -> bool:
    if node[0] == "call" and node[1] in STATUS_FUNCTIONS:
        return True
    return any(_uses_status(child) for child in _children(node))


def only_on_success(text: str | bool | None) -> bool:
    """Whether an `if:` holds only while nothing failed (it uses no status function)."""
    if text is None or isinstance(text, bool) or not text.strip():
        return True
    success = ("call", "success", (), 0)
    tree = condition_tree(text)
    return tree == success or (tree[0] == "and" and tree[1] == success)


def condition(text: str | bool | None, ctx: Context) -> bool:
    """Whether an `if:` holds (None: no `if:`, which means `success()`)."""
    if text is None or text == "":
        return _success(ctx)
    if isinstance(text, bool):
        return text and _success(ctx)
    tree = condition_tree(text)
    if tree[0] == "interp":
        return truthy(interpolate(tree[1], ctx))
    return truthy(_eval(tree, ctx))


def references(node: Node) -> Iterator[tuple[str, int]]:
    """Each context name used in a tree, with its position."""
    if node[0] == "ctx":
        yield node[1], node[2]
    for child in _children(node):
        yield from references(child)
