"""The expression language against the examples of GitHub's expressions documentation
(docs.github.com/actions/reference/workflows-and-actions/expressions), and a parser fuzz."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import PipedeckError
from engine.gha.expr import (
    Context,
    ExprError,
    Status,
    condition,
    evaluate,
    interpolate,
    parse,
    to_str,
)

LABELS = {"issue": {"labels": [{"name": "bug"}, {"name": "help wanted"}]}}


def ev(text: str, **values: Any) -> Any:
    return evaluate(text, Context(values=values))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${{ null }}", ""),
        ("${{ false }}", "false"),
        ("${{ 711 }}", "711"),
        ("${{ -9.2 }}", "-9.2"),
        ("${{ 0xff }}", "255"),
        ("${{ -2.99e-2 }}", "-0.0299"),
        ("Mona the Octocat", "Mona the Octocat"),
        ("${{ 'It''s open source!' }}", "It's open source!"),
    ],
)
def test_literal_examples(text: str, expected: str) -> None:
    assert to_str(interpolate(text, Context())) == expected


def test_double_quotes_are_an_error_with_position() -> None:
    with pytest.raises(ExprError) as err:
        parse('"hello"')
    assert err.value.pos == 0 and "single quotes" in err.value.message


def test_a_bad_expression_is_a_pipedeck_error() -> None:
    """Callers that report pipedeck's errors as one line catch expression errors too."""
    with pytest.raises(PipedeckError):
        parse("1 +")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("null == 0", True),
        ("true == 1", True),
        ("false == 0", True),
        ("'' == 0", True),
        ("'1' == 1", True),
        ("'abc' == 'ABC'", True),
        ("'abc' == 1", False),
        ("'0x10' == 16", True),
        ("1 < 2", True),
        ("'a' < 'B'", True),
        ("'abc' < 1", False),  # NaN in a comparison is false
        ("'abc' > 1", False),
        ("1 != 2", True),
        ("!0", True),
        ("!''", True),
        ("!'a'", False),
        ("(1 == 1) && (2 == 2)", True),
        ("null == false", True),
        ("fromJSON('[]') == fromJSON('[]')", False),  # arrays equal only as one instance
    ],
)
def test_operators_and_loose_equality(text: str, expected: bool) -> None:
    assert ev(text) is expected


def test_and_or_return_operands_ternary_pattern() -> None:
    expr = (
        "github.ref == 'refs/heads/main' && 'value_for_main_branch' || 'value_for_other_branches'"
    )
    assert ev(expr, github={"ref": "refs/heads/main"}) == "value_for_main_branch"
    assert ev(expr, github={"ref": "refs/heads/dev"}) == "value_for_other_branches"
    assert ev("0 || 'x'") == "x"
    assert ev("'' && 'x'") == ""


def test_contains_examples() -> None:
    assert ev("contains('Hello world', 'llo')") is True
    assert ev("contains('Hello world', 'LLO')") is True  # case-insensitive
    assert ev("contains(github.event.issue.labels.*.name, 'bug')", github={"event": LABELS})
    assert ev(
        'contains(fromJSON(\'["push", "pull_request"]\'), github.event_name)',
        github={"event_name": "push"},
    )
    assert not ev("contains(fromJSON('[\"push\", \"pull_request\"]'), 'issues')")


def test_starts_and_ends_with_examples() -> None:
    assert ev("startsWith('Hello world', 'He')") is True
    assert ev("endsWith('Hello world', 'ld')") is True
    assert ev("startsWith('Hello world', 'wo')") is False


def test_format_examples() -> None:
    assert ev("format('Hello {0} {1} {2}', 'Mona', 'the', 'Octocat')") == "Hello Mona the Octocat"
    assert (
        ev("format('{{Hello {0} {1} {2}!}}', 'Mona', 'the', 'Octocat')")
        == "{Hello Mona the Octocat!}"
    )
    with pytest.raises(ExprError) as err:
        ev("format('{3}', 'a')")
    assert err.value.pos == 0 and "{3}" in err.value.message


def test_join_example() -> None:
    assert ev("join(github.event.issue.labels.*.name, ', ')", github={"event": LABELS}) == (
        "bug, help wanted"
    )
    assert ev("join(fromJSON('[1, true, null]'))") == "1,true,"
    assert ev("join('abc')") == "abc"


def test_to_json_and_from_json_examples() -> None:
    job = {"status": "success"}
    assert ev("toJSON(job)", job=job) == '{\n  "status": "success"\n}'
    matrix = '{"include":[{"project":"foo","config":"Debug"},{"project":"bar","config":"Release"}]}'
    value = ev(
        "fromJSON(needs.job1.outputs.matrix)", needs={"job1": {"outputs": {"matrix": matrix}}}
    )
    assert value["include"][1]["config"] == "Release"
    assert ev("fromJSON(env.continue)", env={"continue": "true"}) is True
    assert ev("fromJSON(env.time)", env={"time": "3"}) == 3
    with pytest.raises(ExprError):
        ev("fromJSON('{nope')")


def test_object_filters_examples() -> None:
    fruits = [
        {"name": "apple", "quantity": 1},
        {"name": "orange", "quantity": 2},
        {"name": "pear", "quantity": 1},
    ]
    assert list(ev("github.fruits.*.name", github={"fruits": fruits})) == [
        "apple",
        "orange",
        "pear",
    ]
    vegetables = {
        "scallions": {"colors": ["green", "white", "red"], "ingredients": ["vitamin K", "fiber"]},
        "beets": {
            "colors": ["purple", "red", "gold", "white", "pink"],
            "ingredients": ["fiber", "potassium", "manganese"],
        },
    }
    assert list(ev("github.vegetables.*.ingredients.*", github={"vegetables": vegetables})) == [
        "vitamin K",
        "fiber",
        "fiber",
        "potassium",
        "manganese",
    ]


def test_property_and_index_access() -> None:
    github = {"event": {"commits": [{"id": "a1"}]}, "event_name": "push"}
    assert ev("github['event_name']", github=github) == "push"
    assert ev("github.EVENT_NAME", github=github) == "push"  # keys are case-insensitive
    assert ev("github.event.commits[0].id", github=github) == "a1"
    assert ev("github.event.commits[5].id", github=github) is None
    assert ev("github.nothing.deeper", github=github) is None
    with pytest.raises(ExprError) as err:
        ev("gthub.ref")
    assert "unknown context 'gthub'" in err.value.message


def test_status_functions_and_if_conditions() -> None:
    ok, failed, cancelled = Status(), Status(failed=True), Status(cancelled=True)
    assert condition(None, Context(status=ok)) is True
    assert condition(None, Context(status=failed)) is False
    assert condition("${{ failure() }}", Context(status=failed)) is True
    assert condition("failure()", Context(status=ok)) is False
    assert condition("always()", Context(status=cancelled)) is True
    assert condition("cancelled()", Context(status=cancelled)) is True
    assert condition("success()", Context(status=cancelled)) is False
    # without a status function, `if:` means `success() && (...)`
    assert condition("github.event_name == 'push'", Context({"github": {"event_name": "push"}}))
    assert not condition(
        "github.event_name == 'push'",
        Context({"github": {"event_name": "push"}}, status=failed),
    )
    assert condition("${{ failure() || github.event_name == 'x' }}", Context(status=failed))


def test_hash_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "package-lock.json").write_text("one")
    (tmp_path / "Gemfile.lock").write_text("two")
    ctx = Context(workspace=tmp_path)
    one = hashlib.sha256(hashlib.sha256(b"one").digest()).hexdigest()
    assert ev_ctx("hashFiles('**/package-lock.json')", ctx) == one
    both = ev_ctx("hashFiles('**/package-lock.json', '**/Gemfile.lock')", ctx)
    assert both not in ("", one)
    assert ev_ctx("hashFiles('**/*.lock', '!Gemfile.lock')", ctx) == ""
    assert ev_ctx("hashFiles('nothing/**')", ctx) == ""


def ev_ctx(text: str, ctx: Context) -> Any:
    return evaluate(text, ctx)


def test_interpolation_keeps_type_alone_and_joins_text() -> None:
    ctx = Context({"matrix": {"n": 3.0, "os": "ubuntu-latest"}})
    assert interpolate("${{ matrix.n }}", ctx) == 3.0
    assert interpolate("run on ${{ matrix.os }} x${{ matrix.n }}", ctx) == "run on ubuntu-latest x3"
    assert interpolate("${{ '}}' }}", ctx) == "}}"  # a '}}' inside a string literal
    with pytest.raises(ExprError) as err:
        interpolate("a ${{ matrix.n", ctx)
    assert err.value.pos == 2


@pytest.mark.parametrize(
    ("text", "pos"),
    [("1 ==", 4), ("foo(", 0), ("(1", 2), ("a.", 2), ("'open", 0), ("1 @ 2", 2), ("", 0)],
)
def test_parse_errors_name_their_position(text: str, pos: int) -> None:
    with pytest.raises(ExprError) as err:
        parse(text)
    assert err.value.pos == pos


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(ExprError, match="nested deeper"):
        parse("(" * 200 + "1" + ")" * 200)


_ATOMS = st.sampled_from(
    [
        "1", "'a'", "null", "true", "github", "matrix.os", "x", "*", "(", ")", "[", "]",
        ".", ",", "==", "!=", "&&", "||", "!", "<", ">=", "contains(", "format(", "'", '"',
        "0x", "-", "fromJSON('[1]')", "${{", "}}", " ", "é", "join(", "hashFiles('zz')",
    ]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(_ATOMS, max_size=14).map("".join) | st.text(max_size=30))
def test_fuzz_parser_and_evaluator_raise_only_expr_errors(text: str) -> None:
    ctx = Context(
        {"github": {"ref": "x"}, "matrix": {"os": "linux"}}, workspace=Path("/nonexistent")
    )
    try:
        evaluate(text, ctx)
    except ExprError as err:
        assert 0 <= err.pos <= len(text)
    try:
        interpolate(text, ctx)
    except ExprError as err:
        assert 0 <= err.pos <= len(text)
