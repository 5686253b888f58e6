"""Fuzzing engine.loader: any input gives a Pipeline or a ConfigError of FILE:LINE:COL lines."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import loader
from engine.loader import ConfigError, load
from engine.spec import Pipeline

SAMPLE = """\
version: 1
name: fuzz
env:
  A: "1"
  B: 2
secrets: [TOKEN]
defaults: {timeout: 5m, retries: 1, kill_grace: 2s}
hosts:
  box: {address: 127.0.0.1, port: 22, slots: 2, known_hosts: accept-new}
watch: {paths: ["."], ignore: ["build/**"], debounce: 100ms}
x-base: &base
  retries: 2
  env: {MODE: ci}
stages:
  lint:
    <<: *base
    run: ruff check .
    inputs: ["src/**/*.py"]
  test:
    needs: [lint]
    matrix:
      python: ["3.11", "3.12"]
      os: [linux]
    run: |
      pytest --python ${{ matrix.python }} -k "${{ matrix.os }}"
    env: {PY: "${{ matrix.python }}"}
    timeout: 10m
  build:
    needs: [test]
    run: python -m build
    outputs: ["dist/*.whl"]
    host: box
    shell: bash -c
  deploy:
    needs: [build]
    when: manual
    allow_failure: true
    run: ./deploy.sh
"""

KEYS = ["version", "stages", "run", "needs", "matrix", "exclude", "env", "hosts", "timeout", "x"]
LINE_RE = re.compile(r"(?P<file>.+?):(?P<line>[1-9]\d*):(?P<col>[1-9]\d*): \S.*")

SNIPPETS = [
    "&a ",
    "*a",
    "&a",
    "<<: *a",
    ": ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    "'",
    '"',
    "#",
    "\t",
    "!!str ",
    "!x ",
    "on",
    "~",
    "|",
    ">",
    "---",
    "? ",
    "%YAML 1.1",
    "${{ matrix.x }}",
    "needs: [deploy]",
    "\x00",
    "\u2028",
    "\r",
    "!!int ",
    "!!float ",
    "!!bool ",
    "!!null ",
    "!!binary ",
    "!!timestamp ",
    "!!set ",
    "!!omap ",
    "!!python/name:os ",
]


@pytest.fixture(scope="module", params=["libyaml", "python"])
def workdir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A directory for the fuzzed file; each test runs over libyaml's parser and PyYAML's."""
    default = loader._LOADER
    if request.param == "python":
        loader._LOADER = loader._PyLoader
    try:
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(tmp)
    finally:
        loader._LOADER = default


def check(workdir: Path, data: bytes) -> None:
    """Load `data`; it must give a Pipeline or a ConfigError of well-formed problem lines."""
    path = workdir / "pipedeck.yaml"
    path.write_bytes(data)
    try:
        result = load(path, environ={})
    except ConfigError as err:
        text = str(err)
        assert text, "a ConfigError must list at least one problem"
        breaks = data.decode("utf-8", "replace")  # YAML also breaks lines at NEL, LS and PS
        lines = data.count(b"\n") + data.count(b"\r") + 2
        lines += sum(breaks.count(char) for char in "\x85\u2028\u2029")
        for line in text.splitlines():
            match = LINE_RE.fullmatch(line)
            assert match, line
            if match["file"] == str(path):
                assert int(match["line"]) <= lines, line
        return
    assert isinstance(result, Pipeline)
    assert result.stages and set(result.groups) == {s.name for s in result.stages.values()}


def test_sample_is_valid(workdir: Path) -> None:
    check(workdir, SAMPLE.encode())
    assert len(load(workdir / "pipedeck.yaml", environ={}).stages) == 5


FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(st.text(max_size=400))
def test_random_text(workdir: Path, text: str) -> None:
    check(workdir, text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes(workdir: Path, data: bytes) -> None:
    check(workdir, data)


@st.composite
def mutated_sample(draw: st.DrawFn) -> str:
    """The sample pipeline after a few random line and character edits."""
    lines = SAMPLE.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(
            st.sampled_from(
                ["delete", "duplicate", "swap", "insert", "indent", "dedent", "snippet"]
            )
        )
        line = lines[i]
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, line)
        elif op == "swap" and len(line) > 1:
            j = draw(st.integers(0, len(line) - 2))
            lines[i] = line[:j] + line[j + 1] + line[j] + line[j + 2 :]
        elif op == "insert":
            j = draw(st.integers(0, len(line)))
            lines[i] = line[:j] + draw(st.characters()) + line[j:]
        elif op == "indent":
            lines[i] = " " * draw(st.integers(1, 4)) + line
        elif op == "dedent":
            lines[i] = line[draw(st.integers(1, 4)) :]
        elif op == "snippet":
            j = draw(st.integers(0, len(line)))
            lines[i] = line[:j] + draw(st.sampled_from(SNIPPETS)) + line[j:]
    return "\n".join(lines) + "\n"


@settings(FUZZ, max_examples=400)
@given(mutated_sample())
def test_mutated_sample(workdir: Path, text: str) -> None:
    check(workdir, text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(KEYS),
                children,
                max_size=5,
            )
        ),
        max_leaves=30,
    )
)
def test_random_structures(workdir: Path, value: object) -> None:
    """JSON is YAML: well-formed documents of random shape exercise the checks, not the parser."""
    check(workdir, json.dumps({"version": 1, "stages": value}).encode())


NAMES = ["a", "b", "c", "d", "e"]


@st.composite
def dag_pipelines(draw: st.DrawFn) -> dict[str, object]:
    """Pipelines of a few stages with random needs (cycles possible) and matrices."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True))
    stages: dict[str, object] = {}
    for i, name in enumerate(names):
        pool = names[:i] if draw(st.integers(0, 9)) else names  # now and then, maybe a cycle
        needs = draw(st.lists(st.sampled_from(pool), max_size=3)) if pool else []
        stage: dict[str, object] = {"run": "echo", "needs": needs}
        if draw(st.booleans()):
            stage["matrix"] = {
                "x": draw(st.lists(st.sampled_from(["1", "2"]), min_size=1, unique=True))
            }
            stage["run"] = "echo ${{ matrix.x }}"
        stages[name] = stage
    return {"version": 1, "stages": stages}


@FUZZ
@given(dag_pipelines())
def test_random_dags_load_in_topological_order(workdir: Path, doc: dict[str, object]) -> None:
    check(workdir, json.dumps(doc).encode())
    try:
        pipeline = load(workdir / "pipedeck.yaml", environ={})
    except ConfigError:
        return
    seen: set[str] = set()
    for sid, stage in pipeline.stages.items():
        assert set(stage.needs) <= seen, f"{sid} comes before what it needs"
        x = stage.matrix.get("x")
        assert (sid, stage.run) == (
            (f"{stage.name}[x={x}]", f"echo {x}") if x else (stage.name, "echo")
        )
        seen.add(sid)
    assert sorted(seen) == sorted(sid for ids in pipeline.groups.values() for sid in ids)


def test_problem_lines_count_yaml_line_breaks(workdir: Path) -> None:
    check(workdir, "\x85\x850".encode())  # NEL breaks a line in YAML: the problem is on line 3
