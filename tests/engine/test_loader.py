"""engine.loader: the pipeline file -> Pipeline, or every problem as FILE:LINE:COL: message."""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from engine import loader
from engine.loader import ConfigError, Problem, load, parse_duration
from engine.schema import SCHEMA
from engine.spec import WHEN_VALUES, Host, WatchConfig


@pytest.fixture(autouse=True, params=["libyaml", "python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs over libyaml's parser (the default where PyYAML has it) and PyYAML's."""
    chosen = (
        getattr(loader, "_CLoader", loader._PyLoader)
        if request.param == "libyaml"
        else loader._PyLoader
    )
    monkeypatch.setattr(loader, "_LOADER", chosen)
    return str(request.param)


@pytest.fixture(autouse=True)
def _no_ssh_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of our own, so the machine's ~/.ssh/config cannot make unknown hosts known."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def write(tmp_path: Path, text: str, name: str = "pipedeck.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    """The rendered problems of a file that must not load."""
    with pytest.raises(ConfigError) as info:
        load(path, environ=environ if environ is not None else {})
    err = info.value
    assert str(err) == "\n".join(str(p) for p in err.problems)
    return [str(p) for p in err.problems]


def one_problem(path: Path) -> str:
    found = problems(path)
    assert len(found) == 1, found
    return found[0]


SPEC_EXAMPLE = """\
version: 1
name: shop-ci
env:
  PYTHONUNBUFFERED: "1"
secrets: [DEPLOY_TOKEN]
defaults:
  timeout: 30m
  retries: 0
  kill_grace: 10s
hosts:
  buildbox:
    address: 10.1.2.3
    port: 22
    user: ci
    identity_file: ~/.ssh/id_ed25519
    known_hosts: ~/.ssh/known_hosts
    workdir: /srv/pipedeck/shop-ci
    slots: 4
watch:
  paths: ["."]
  ignore: ["docs/_build/**"]
  debounce: 100ms
stages:
  lint:
    run: ruff check .
    inputs: ["src/**/*.py", "pyproject.toml"]
  test:
    needs: [lint]
    run: |
      pytest -q --python ${{ matrix.python }}
    matrix:
      python: ["3.11", "3.12"]
    timeout: 10m
    retries: 1
  build:
    needs: [test]
    run: python -m build
    inputs: ["src/**", "pyproject.toml"]
    outputs: ["dist/*.whl"]
    host: buildbox
  deploy:
    needs: [build]
    when: manual
    run: ./scripts/deploy.sh
"""


# -- valid files ------------------------------------------------------------------------------


def test_spec_example_loads_with_every_section(tmp_path: Path) -> None:
    p = load(write(tmp_path, SPEC_EXAMPLE), environ={"DEPLOY_TOKEN": "s3cret"})
    assert p.name == "shop-ci"
    assert p.path == tmp_path / "pipedeck.yaml"
    assert list(p.stages) == ["lint", "test[python=3.11]", "test[python=3.12]", "build", "deploy"]
    assert p.groups == {
        "lint": ("lint",),
        "test": ("test[python=3.11]", "test[python=3.12]"),
        "build": ("build",),
        "deploy": ("deploy",),
    }
    assert p.secrets == {"DEPLOY_TOKEN": "s3cret"}
    assert p.env == {"PYTHONUNBUFFERED": "1"}
    assert p.hosts["buildbox"] == Host(
        name="buildbox",
        address="10.1.2.3",
        port=22,
        user="ci",
        identity_file="~/.ssh/id_ed25519",
        known_hosts="~/.ssh/known_hosts",
        workdir="/srv/pipedeck/shop-ci",
        slots=4,
    )
    assert p.watch == WatchConfig(paths=(".",), ignore=("docs/_build/**",), debounce=0.1)
    test = p.stages["test[python=3.12]"]
    assert test.run == "pytest -q --python 3.12\n"
    assert test.needs == ("lint",)
    assert (test.timeout, test.retries, test.kill_grace) == (600.0, 1, 10.0)
    assert p.stages["lint"].timeout == 1800.0
    assert p.stages["lint"].inputs == ("src/**/*.py", "pyproject.toml")
    build = p.stages["build"]
    assert build.needs == ("test[python=3.11]", "test[python=3.12]")
    assert (build.host, build.outputs) == ("buildbox", ("dist/*.whl",))
    assert p.stages["deploy"].when == "manual"


def test_name_defaults_to_file_stem_and_stage_defaults(tmp_path: Path) -> None:
    p = load(
        write(
            tmp_path,
            """\
        version: 1
        stages:
          only:
            run: "true"
        """,
            name="nightly.yaml",
        ),
        environ={},
    )
    assert p.name == "nightly"
    stage = p.stages["only"]
    assert (stage.timeout, stage.kill_grace, stage.retries) == (None, 10.0, 0)
    assert (stage.when, stage.allow_failure, stage.host, stage.cwd) == (
        "on_success",
        False,
        "local",
        ".",
    )
    assert (stage.shell, stage.inputs, stage.outputs, stage.metrics) == ((), (), (), None)
    assert p.hosts == {} and p.secrets == {} and p.watch == WatchConfig()


def test_defaults_section_applies_and_stage_values_win(tmp_path: Path) -> None:
    p = load(
        write(
            tmp_path,
            """\
        version: 1
        defaults: {timeout: 1h30m, retries: 2, kill_grace: 250ms}
        stages:
          a: {run: x}
          b: {run: x, timeout: 90, retries: 0, kill_grace: 0}
          c: {run: x, timeout: 0}
        """,
        ),
        environ={},
    )
    a, b, c = p.stages["a"], p.stages["b"], p.stages["c"]
    assert (a.timeout, a.retries, a.kill_grace) == (5400.0, 2, 0.25)
    assert (b.timeout, b.retries, b.kill_grace) == (90.0, 0, 0.0)
    assert c.timeout is None  # 0 turns a default timeout off


def test_env_values_are_strings_keeping_their_source_text(tmp_path: Path) -> None:
    p = load(
        write(
            tmp_path,
            """\
        version: 1
        env: {A: "x", VERSION: 3.10, COUNT: 007, WHEN: 2024-01-01}
        stages:
          s:
            run: x
            env: {A: "stage wins", B: 1e3}
        """,
        ),
        environ={},
    )
    assert p.env == {"A": "x", "VERSION": "3.10", "COUNT": "007", "WHEN": "2024-01-01"}
    assert p.stages["s"].env == {
        "A": "stage wins",
        "VERSION": "3.10",
        "COUNT": "007",
        "WHEN": "2024-01-01",
        "B": "1e3",
    }


def test_shell_is_split_like_a_shell_and_strings_may_be_single(tmp_path: Path) -> None:
    p = load(
        write(
            tmp_path,
            """\
        version: 1
        stages:
          a: {run: x}
          b:
            run: print(1)
            shell: python3 -c "import sys; exec(sys.argv[1])"
            needs: a
            inputs: "src/**"
            allow_failure: yes
        """,
        ),
        environ={},
    )
    b = p.stages["b"]
    assert b.shell == ("python3", "-c", "import sys; exec(sys.argv[1])")
    assert (b.needs, b.inputs, b.allow_failure) == (("a",), ("src/**",), True)


def test_hosts_defaults_and_accept_new(tmp_path: Path) -> None:
    p = load(
        write(
            tmp_path,
            """\
        version: 1
        hosts:
          box: {known_hosts: accept-new}
        stages:
          s: {run: x, host: box}
        """,
        ),
        environ={},
    )
    assert p.hosts["box"] == Host(name="box", address="box", known_hosts="accept-new", slots=4)
    assert p.stages["s"].is_remote


def test_anchors_merge_keys_and_extension_keys(tmp_path: Path) -> None:
    p = load(
        write(
            tmp_path,
            """\
        version: 1
        x-common: &common
          timeout: 5m
          retries: 2
          env: {MODE: ci}
        stages:
          a:
            <<: *common
            run: x
            retries: 0
          b:
            <<: [*common]
            run: y
        """,
        ),
        environ={},
    )
    a, b = p.stages["a"], p.stages["b"]
    assert (a.timeout, a.retries, a.env) == (300.0, 0, {"MODE": "ci"})
    assert (b.timeout, b.retries) == (300.0, 2)


# -- secrets ----------------------------------------------------------------------------------


def test_secrets_come_from_environ_then_dotenv_else_empty(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        textwrap.dedent("""\
        # deployment secrets
        TOKEN=from-dotenv
        export QUOTED="two words"
        SINGLE='single quoted'
        INLINE=abc # a comment

        SHADOWED=dotenv
        """)
    )
    path = write(
        tmp_path,
        """\
        version: 1
        secrets: [TOKEN, QUOTED, SINGLE, INLINE, SHADOWED, MISSING]
        stages:
          s: {run: x}
        """,
    )
    p = load(path, environ={"SHADOWED": "environ"})
    assert p.secrets == {
        "TOKEN": "from-dotenv",
        "QUOTED": "two words",
        "SINGLE": "single quoted",
        "INLINE": "abc",
        "SHADOWED": "environ",
        "MISSING": "",
    }
    assert "TOKEN" not in p.stages["s"].env


def test_secrets_default_to_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPEDECK_TEST_SECRET", "from-os")
    p = load(
        write(
            tmp_path,
            """\
        version: 1
        secrets: PIPEDECK_TEST_SECRET
        stages:
          s: {run: x}
        """,
        )
    )
    assert p.secrets == {"PIPEDECK_TEST_SECRET": "from-os"}


def test_malformed_dotenv_line_is_reported_in_the_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GOOD=1\n  this line is wrong\n")
    path = write(
        tmp_path,
        """\
        version: 1
        secrets: [TOKEN]
        stages:
          s: {run: x}
        """,
    )
    assert one_problem(path) == f"{tmp_path / '.env'}:2:3: expected KEY=VALUE"


# -- matrix -----------------------------------------------------------------------------------


def test_matrix_expands_in_axis_order_and_substitutes(tmp_path: Path) -> None:
    p = load(
        write(
            tmp_path,
            """\
        version: 1
        stages:
          test:
            matrix:
              os: [linux, mac]
              python: ["3.11", 3.12]
              build-type: [debug]
            run: make ${{ matrix.os }}-${{matrix.python}}
            cwd: work/${{ matrix.os }}
            env: {TARGET: "py${{ matrix.python }}"}
          report:
            needs: [test]
            run: echo done
        """,
        ),
        environ={},
    )
    ids = [
        "test[os=linux,python=3.11,build-type=debug]",
        "test[os=linux,python=3.12,build-type=debug]",
        "test[os=mac,python=3.11,build-type=debug]",
        "test[os=mac,python=3.12,build-type=debug]",
    ]
    assert list(p.stages) == [*ids, "report"]
    assert p.groups["test"] == tuple(ids)
    mac = p.stages["test[os=mac,python=3.11,build-type=debug]"]
    assert mac.run == "make mac-3.11"
    assert mac.cwd == "work/mac"
    assert mac.env == {
        "TARGET": "py3.11",
        "MATRIX_OS": "mac",
        "MATRIX_PYTHON": "3.11",
        "MATRIX_BUILD_TYPE": "debug",
    }
    assert mac.matrix == {"os": "mac", "python": "3.11", "build-type": "debug"}
    assert p.stages["report"].needs == tuple(ids)


def test_matrix_stage_needing_a_matrix_stage_needs_all_its_instances(tmp_path: Path) -> None:
    p = load(
        write(
            tmp_path,
            """\
        version: 1
        stages:
          build: {run: x, matrix: {arch: [arm, x86]}}
          test: {run: x, needs: [build], matrix: {arch: [arm, x86]}}
        """,
        ),
        environ={},
    )
    assert p.stages["test[arch=arm]"].needs == ("build[arch=arm]", "build[arch=x86]")


def test_matrix_ids_stay_unique_when_values_hold_id_syntax(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        stages:
          t: {run: 'echo $MATRIX_X $MATRIX_Y', matrix: {x: ["1", "1,y=2"], y: ["2,y=3", "3"]}}
        """,
    )
    p = load(path, environ={})
    assert list(p.stages) == [
        't[x=1,y="2,y=3"]',
        "t[x=1,y=3]",
        't[x="1,y=2",y="2,y=3"]',
        't[x="1,y=2",y=3]',
    ]
    assert [dict(s.matrix) for s in p.stages.values()] == [
        {"x": x, "y": y} for x in ("1", "1,y=2") for y in ("2,y=3", "3")
    ]


def test_an_instance_can_need_its_own_counterpart(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        stages:
          setup: {run: x, matrix: {python: ["3.11", "3.12"], tag: ["a,b"]}}
          lint: {run: x}
          test:
            run: x
            matrix: {python: ["3.11", "3.12"]}
            needs: [lint, 'setup[python=${{ matrix.python }},tag="a,b"]']
            inputs: ["src/py${{ matrix.python }}/**"]
            outputs: ["out/${{ matrix.python }}.xml"]
          report: {run: x, needs: ['test[python=3.12]']}
        """,
    )
    p = load(path, environ={})
    assert p.stages["test[python=3.11]"].needs == ("lint", 'setup[python=3.11,tag="a,b"]')
    assert p.stages["test[python=3.12]"].needs == ("lint", 'setup[python=3.12,tag="a,b"]')
    assert p.stages["test[python=3.12]"].inputs == ("src/py3.12/**",)
    assert p.stages["test[python=3.12]"].outputs == ("out/3.12.xml",)
    assert p.stages["report"].needs == ("test[python=3.12]",)


def test_a_need_naming_no_instance_is_reported_where_it_is_written(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        stages:
          setup: {run: x, matrix: {python: ["3.11"]}}
          test:
            run: x
            matrix: {python: ["3.11", "3.12"]}
            needs: ['setup[python=${{ matrix.python }}]', 'setup[py=3]', 'nope[a=1]']
            inputs: ["${{ matrix.pyhton }}"]
        """,
    )
    assert problems(path) == [
        f"{path}:7:66: stages.test.needs: unknown stage 'nope'",
        f"{path}:8:15: stages.test: unknown matrix axis 'pyhton' in ${{{{ matrix.pyhton }}}}; "
        "did you mean 'python'?",
    ]
    path.write_text(path.read_text().replace(", 'nope[a=1]'", "").replace("pyhton", "python"))
    assert problems(path) == [
        f"{path}:7:13: stages.test.needs: 'setup[python=${{{{ matrix.python }}}}]' "
        "('setup[python=3.12]' for test[python=3.12]) is not an instance of 'setup'; "
        "its instances: setup[python=3.11]",
        f"{path}:7:51: stages.test.needs: 'setup[py=3]' is not an instance of 'setup'; "
        "its instances: setup[python=3.11]",
    ]


@pytest.mark.parametrize(
    ("stage", "at", "shown"),
    [
        ("{run: x, cwd: ../../..}", "../", "'../../..'"),
        ("{run: x, cwd: a/../..}", "a/", "'a/../..'"),
        ("{run: x, outputs: [dist/*, ../manifest.json]}", "../", "'../manifest.json'"),
        ("{run: x, inputs: ['**/../../x']}", "'", "'**/../../x'"),
        ("{run: x, inputs: ['!../x']}", "'", "'!../x'"),
        ("{run: x, inputs: /../etc/passwd}", "/", "'/../etc/passwd'"),
        ("{run: x, metrics: /m.json}", "/", "'/m.json'"),
        (
            "{run: x, cwd: 'w/${{ matrix.d }}', matrix: {d: [a, ../..]}}",
            "'",
            "'w/${{ matrix.d }}' ('w/../..' in {'d': '../..'})",
        ),
    ],
)
def test_paths_out_of_the_workspace_are_refused(
    tmp_path: Path, stage: str, at: str, shown: str
) -> None:
    path = write(tmp_path, f"version: 1\nstages:\n  a: {stage}\n")
    key = stage.split(", ")[1].split(":")[0]
    column = len("  a: ") + stage.index(at, stage.index(key)) + 1
    assert one_problem(path) == (
        f"{path}:3:{column}: stages.a.{key}: {shown} leads out of "
        "the workspace; paths are relative to the pipeline file's directory and stay inside"
    )


def test_paths_that_stay_inside_the_workspace_load(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "version: 1\nstages:\n  a: {run: x, cwd: a/../b, inputs: ['*/../x', './y', /setup.cfg], "
        "outputs: ['**/*.whl', '!dist/x']}\n",
    )
    assert load(path, environ={}).stages["a"].cwd == "a/../b"


def test_color_sets_the_colour_variables_under_each_env(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        color: true
        env: {PY_COLORS: "0"}
        stages:
          a: {run: x, env: {FORCE_COLOR: "3"}}
          b: {run: x}
        """,
    )
    p = load(path, environ={})
    assert p.color
    assert p.stages["a"].env == {
        "FORCE_COLOR": "3",
        "CLICOLOR_FORCE": "1",
        "PY_COLORS": "0",
        "CARGO_TERM_COLOR": "always",
        "MYPY_FORCE_COLOR": "1",
    }
    assert p.stages["b"].env["FORCE_COLOR"] == "1"
    path.write_text(path.read_text().replace("color: true", "color: false"))
    assert "FORCE_COLOR" not in load(path, environ={}).stages["b"].env


# -- order ------------------------------------------------------------------------------------


def test_stages_are_in_topological_order_keeping_file_order(tmp_path: Path) -> None:
    p = load(
        write(
            tmp_path,
            """\
        version: 1
        stages:
          deploy: {run: x, needs: [package]}
          docs: {run: x}
          package: {run: x, needs: [compile]}
          compile: {run: x}
          lint: {run: x}
        """,
        ),
        environ={},
    )
    assert list(p.stages) == ["docs", "compile", "package", "deploy", "lint"]
    assert list(p.groups) == ["docs", "compile", "package", "deploy", "lint"]


# -- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("100ms", 0.1),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("2.5s", 2.5),
        ("45", 45.0),
        ("0.5", 0.5),
        (" 10s ", 10.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "5 minutes", "-5s", "1d", "1h 30m", "ms", "5sm"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


# -- bad input: one test per case of SPEC §1, exact position and message -------------------------


def test_yaml_syntax_error_has_its_position(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        stages:
          a:
            run: echo "x: y" z: w
        """,
    )
    found = one_problem(path)
    assert found.startswith(f"{path}:4:17: YAML syntax error: mapping values are not allowed")
    assert found.endswith("; quote a value that contains ': '")


def test_unclosed_quote_names_where_the_scalar_started(tmp_path: Path) -> None:
    path = write(tmp_path, 'version: 1\nstages:\n  a:\n    run: "oops\n')
    found = one_problem(path)
    assert found.startswith(f"{path}:5:1: YAML syntax error: found unexpected end of stream")
    assert "while scanning a quoted scalar at line 4, column 10" in found


def test_tab_indentation_is_a_syntax_error_with_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nstages:\n\ta: {run: x}\n")
    found = one_problem(path)
    assert found.startswith(f"{path}:3:1: YAML syntax error: found character")
    assert found.endswith("; indent with spaces, not tabs")


def test_duplicate_keys_name_the_first_definition(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        stages:
          a:
            run: x
            run: y
          a: {run: z}
        """,
    )
    assert problems(path) == [
        f"{path}:5:5: stages.a: duplicate key 'run' (first defined at line 4, column 5)",
        f"{path}:6:3: stages: duplicate key 'a' (first defined at line 3, column 3)",
    ]


def test_unknown_keys_suggest_the_closest_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        stage:
          a: {run: x}
        stages:
          a: {run: x, neeeds: [], colour: red}
        """,
    )
    assert problems(path) == [
        f"{path}:2:1: unknown key 'stage' in the pipeline file; did you mean 'stages'?",
        f"{path}:5:15: unknown key 'neeeds' in stage 'a'; did you mean 'needs'?",
        f"{path}:5:27: unknown key 'colour' in stage 'a'",
    ]


def test_misspelt_required_key_is_one_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nstages:\n  a:\n    rnu: x\n")
    assert one_problem(path) == f"{path}:4:5: unknown key 'rnu' in stage 'a'; did you mean 'run'?"


@pytest.mark.parametrize("word", ["on", "no", "yes", "off", "True"])
def test_yaml11_boolean_where_a_string_is_expected(tmp_path: Path, word: str) -> None:
    path = write(tmp_path, f"version: 1\nenv:\n  FLAG: {word}\nstages:\n  a: {{run: x}}\n")
    assert one_problem(path) == (
        f"{path}:3:9: env.FLAG: expected a string, got {word!r}, which "
        f'YAML 1.1 reads as a boolean; quote it: "{word}"'
    )


def test_yaml11_boolean_matrix_value(tmp_path: Path) -> None:
    path = write(
        tmp_path, "version: 1\nstages:\n  a:\n    run: x\n    matrix: {debug: [on, off]}\n"
    )
    assert problems(path) == [
        f"{path}:5:22: stages.a.matrix.debug[0]: expected a string, got 'on', which YAML 1.1 "
        'reads as a boolean; quote it: "on"',
        f"{path}:5:26: stages.a.matrix.debug[1]: expected a string, got 'off', which YAML 1.1 "
        'reads as a boolean; quote it: "off"',
    ]


def test_wrong_types(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        name: [x]
        stages:
          a:
            run: {script: x}
            retries: true
            allow_failure: "no"
            needs: {b: 1}
            timeout: [1]
          b:
            run: x
            retries: -1
            env: [A=1]
            when: later
        """,
    )
    assert problems(path) == [
        f"{path}:2:7: name: expected a string, got a list",
        f"{path}:5:10: stages.a.run: expected a string, got a mapping",
        f"{path}:6:14: stages.a.retries: expected an integer, got the boolean 'true'",
        f"{path}:7:20: stages.a.allow_failure: expected true or false, got the string 'no'",
        f"{path}:8:12: stages.a.needs: expected a list of strings, got a mapping",
        f"{path}:9:14: stages.a.timeout: expected a duration (90s, 5m, 1h30m, 100ms or "
        "seconds), got a list",
        f"{path}:12:14: stages.b.retries: must be at least 0, got -1",
        f"{path}:13:10: stages.b.env: expected a mapping, got a list",
        f"{path}:14:11: stages.b.when: 'later' is not one of on_success, on_failure, always, "
        "manual",
    ]


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ('"1"', "the string '1'"),
        ("2", "the integer 2"),
        ("1.0", "the number 1.0"),
    ],
)
def test_version_must_be_the_integer_1(tmp_path: Path, value: str, got: str) -> None:
    path = write(tmp_path, f"version: {value}\nstages:\n  a: {{run: x}}\n")
    assert one_problem(path) == f"{path}:1:10: version: must be the integer 1, got {got}"


def test_missing_version_and_stages(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\n")
    assert problems(path) == [
        f"{path}:1:1: the pipeline file is missing the required key 'stages'",
        f"{path}:1:1: the pipeline file is missing the required key 'version'",
    ]


def test_empty_stages(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nstages: {}\n")
    assert one_problem(path) == f"{path}:2:9: stages: a pipeline needs at least one stage"


def test_missing_run_is_reported_at_the_stage_name(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nstages:\n  a:\n    cwd: src\n  b:\n    run: ''\n")
    assert problems(path) == [
        f"{path}:3:3: stage 'a' is missing the required key 'run'",
        f"{path}:6:10: stages.b.run: must not be empty",
    ]


def test_unknown_needs_suggest_a_stage(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        stages:
          compile: {run: x}
          test: {run: x, needs: [compil, nothing-like-it]}
        """,
    )
    assert problems(path) == [
        f"{path}:4:26: stages.test.needs: unknown stage 'compil'; did you mean 'compile'?",
        f"{path}:4:34: stages.test.needs: unknown stage 'nothing-like-it'",
    ]


def test_cycle_names_every_stage_of_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        stages:
          a: {run: x, needs: [c]}
          b: {run: x, needs: [a]}
          c: {run: x, needs: [b]}
          d: {run: x, needs: [d]}
          e: {run: x}
        """,
    )
    assert problems(path) == [
        f"{path}:3:23: dependency cycle: a -> c -> b -> a (each stage needs the next; remove "
        "one of these needs)",
        f"{path}:6:23: dependency cycle: d -> d (each stage needs the next; remove one of these "
        "needs)",
    ]


def test_unknown_host(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        hosts:
          buildbox: {address: 127.0.0.1}
        stages:
          a: {run: x, host: buildbx}
          b: {run: x, host: local}
        """,
    )
    assert one_problem(path) == (
        f"{path}:5:21: stages.a.host: unknown host 'buildbx': not in hosts:, not 'local', and no "
        "Host entry in ~/.ssh/config; did you mean 'buildbox'?"
    )


def test_ssh_config_hosts_count_but_not_a_bare_star(tmp_path: Path, _no_ssh_config: Path) -> None:
    ssh = _no_ssh_config / ".ssh"
    (ssh / "conf.d").mkdir(parents=True)
    (ssh / "config").write_text(
        "Host *\n  User me\nHost gpu1 gpu2\n  Port 2222\nInclude conf.d/*\n"
    )
    (ssh / "conf.d" / "lab").write_text("host=*.lab.example\n")
    path = write(
        tmp_path,
        """\
        version: 1
        stages:
          a: {run: x, host: gpu2}
          b: {run: x, host: box.lab.example}
          c: {run: x, host: anything}
        """,
    )
    assert one_problem(path).startswith(f"{path}:5:21: stages.c.host: unknown host 'anything'")


def test_bad_durations(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        watch: {debounce: soon}
        stages:
          a: {run: x, timeout: 5 minutes, kill_grace: -1}
        """,
    )
    assert problems(path) == [
        f"{path}:2:19: watch.debounce: bad duration 'soon'; use e.g. 90s, 5m, 1h30m, 100ms or "
        "seconds",
        f"{path}:4:24: stages.a.timeout: bad duration '5 minutes'; use e.g. 90s, 5m, 1h30m, "
        "100ms or seconds",
        f"{path}:4:47: stages.a.kill_grace: a duration must be a finite number of seconds >= 0, "
        "got the integer -1",
    ]


def test_absurd_durations_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"version: 1\nstages:\n  a: {{run: x, timeout: {'9' * 400}}}\n"
        f"  b: {{run: x, timeout: {'9' * 400}s}}\n",
    )
    assert problems(path) == [
        f"{path}:3:24: stages.a.timeout: a duration must be a finite number of seconds >= 0, "
        f"got the integer {'9' * 37}...",
        f"{path}:4:24: stages.b.timeout: duration '{'9' * 40}' is too long",
    ]


def test_a_broken_stage_or_host_is_not_also_unknown(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        hosts:
          box: [not, a, mapping]
        stages:
          a: run x
          b: {run: x, needs: [a], host: box}
        """,
    )
    assert problems(path) == [
        f"{path}:3:8: hosts.box: expected a mapping, got a list",
        f"{path}:5:6: stages.a: expected a mapping, got the string 'run x'",
    ]


def test_matrix_values_are_single_lines(tmp_path: Path) -> None:
    path = write(tmp_path, 'version: 1\nstages:\n  a: {run: x, matrix: {v: ["a\\nb", ok]}}\n')
    assert one_problem(path) == (
        f"{path}:3:28: stages.a.matrix.v[0]: a matrix value must be one line of printable text"
    )


def test_the_instance_limit_counts_stages_and_matrix_combinations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "MAX_INSTANCES", 600)
    axes = "{a: [1,2,3,4,5,6,7,8,9,10], b: [1,2,3,4,5,6,7,8,9,10], c: [1,2,3]}"
    path = write(
        tmp_path,
        f"version: 1\nstages:\n  s: {{run: x, matrix: {axes}}}\n  t: {{run: x, matrix: {axes}}}\n"
        + "".join(f"  p{i}: {{run: x}}\n" for i in range(1)),
    )
    assert one_problem(path) == (
        f"{path}:3:3: stages: 601 stage instances (stages, with each matrix combination counted); "
        "at most 600 are allowed"
    )


def test_the_needs_between_instances_are_limited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "MAX_EDGES", 100)
    path = write(
        tmp_path,
        """\
        version: 1
        stages:
          build: {run: x, matrix: {n: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}}
          test: {run: x, needs: [build], matrix: {n: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}}
          paired: {run: x, needs: ['build[n=${{ matrix.n }}]'], matrix: {n: [1, 2, 3]}}
        """,
    )
    assert one_problem(path) == (
        f"{path}:3:3: stages: the needs make 103 dependencies between stage instances (a matrix "
        "stage needing a matrix stage needs each of its instances); at most 100 are allowed: "
        "pair instances (needs: ['build[os=${{ matrix.os }}]'])"
    )
    monkeypatch.setattr(loader, "MAX_EDGES", 103)
    p = load(path, environ={})
    assert p.stages["test[n=2]"].needs == tuple(f"build[n={n}]" for n in range(1, 11))
    assert p.stages["paired[n=2]"].needs == ("build[n=2]",)


def test_a_monorepo_of_10000_stages_loads(tmp_path: Path) -> None:
    lines = ["version: 1", "stages:"]
    for i in range(10_000):
        needs = f", needs: [s{i - 1}]" if i % 10 else ""
        lines.append(f"  s{i}: {{run: 'true', inputs: ['pkg{i}/**'], env: {{N: '{i}'}}{needs}}}")
    path = tmp_path / "pipedeck.yaml"
    path.write_text("\n".join(lines) + "\n")
    p = load(path, environ={})
    assert len(p.stages) == 10_000 and p.stages["s9999"].needs == ("s9998",)


def test_matrix_exclude_leaves_out_matching_combinations(tmp_path: Path) -> None:
    p = load(
        write(
            tmp_path,
            """\
        version: 1
        stages:
          test:
            run: x
            matrix:
              os: [linux, mac]
              python: ["3.11", "3.12"]
              exclude:
                - {os: mac, python: "3.11"}
        """,
        ),
        environ={},
    )
    assert p.groups["test"] == (
        "test[os=linux,python=3.11]",
        "test[os=linux,python=3.12]",
        "test[os=mac,python=3.12]",
    )


def test_matrix_exclude_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        stages:
          a:
            run: x
            matrix:
              os: [linux]
              exclude: [{oss: linux}, {os: windows}]
          b:
            run: x
            matrix:
              os: [linux]
              exclude: [{os: linux}]
        """,
    )
    assert problems(path) == [
        f"{path}:7:18: stages.a.matrix.exclude[0]: unknown matrix axis 'oss'; did you mean 'os'?",
        f"{path}:7:36: stages.a.matrix.exclude[1].os: 'windows' is not a value of the axis 'os'",
        f"{path}:12:7: stages.b.matrix: the exclude rules leave no combination",
    ]


def test_empty_matrix_axis_and_empty_matrix(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        stages:
          a:
            run: tox -e ${{ matrix.python }}
            matrix:
              python: []
          b: {run: "${{ matrix.os }}", matrix: {}}
        """,
    )
    assert problems(path) == [
        f"{path}:6:15: stages.a.matrix.python: the matrix axis is empty; give it at least one "
        "value",
        f"{path}:7:40: stages.b.matrix: a matrix needs at least one axis",
    ]


def test_unknown_matrix_axis_is_reported_where_it_is_used(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 1
        stages:
          a:
            matrix: {python: ["3.12"]}
            run: |
              echo start
              tox -e ${{ matrix.pyhton }}
          b:
            run: echo ${{ matrix.os }}
        """,
    )
    assert problems(path) == [
        f"{path}:7:14: stages.a: unknown matrix axis 'pyhton' in ${{{{ matrix.pyhton }}}}; "
        "did you mean 'python'?",
        f"{path}:9:15: stages.b: ${{{{ matrix.os }}}} used in a stage without a matrix",
    ]


@pytest.mark.parametrize("name", ["bad name", "a/b", "x[1]", "ünï"])
def test_stage_names_must_match_the_pattern(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, f'version: 1\nstages:\n  "{name}": {{run: x}}\n  ok: {{run: x}}\n')
    assert one_problem(path) == (
        f"{path}:3:3: stages: stage name {name!r} may only contain "
        "letters, digits, '_', '.' and '-'"
    )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        version: 2
        stages:
          a: {run: x, retries: many, host: nowhere}
          b: {run: x, needs: [z]}
        """,
    )
    found = problems(path)
    assert [line.split(": ", 1)[0] for line in found] == [
        f"{path}:1:10",
        f"{path}:3:24",
        f"{path}:3:36",
        f"{path}:4:23",
    ]


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ("{run: x, cwd: /abs}", "3:20: stages.a.cwd: '/abs' leads out of the workspace; paths"),
        ("{run: x, shell: 'bash -c \"oops'}", "3:22: stages.a.shell: cannot split it: No closing"),
        (
            "{run: x, env: {1BAD: x}}",
            "3:21: stages.a.env: '1BAD' is not a valid environment variable",
        ),
        ("{run: x, env: {A: ~}}", "3:24: stages.a.env.A: expected a string, got nothing (null)"),
        ("{run: !shell x}", "3:12: stages.a.run: expected a string, got a value tagged !shell"),
        ("{run: x, matrix: {v: [1, 1.0, 1]}}", "3:36: stages.a.matrix.v[2]: duplicate value '1'"),
        ("{run: x, matrix: {9v: [1]}}", "3:24: stages.a.matrix: axis name '9v' may only contain"),
        (
            "{run: x, matrix: {v: 1}}",
            "3:27: stages.a.matrix.v: expected a list of values, got the integer 1",
        ),
        (
            "{run: x, <<: 5}",
            "3:19: stages.a: a merge key (<<) takes a mapping or a list of mappings",
        ),
        ("{run: x, [k]: v}", "3:15: stages.a: keys must be strings, got a list"),
        (
            "{run: x, matrix: {a: [1,2,3,4,5,6,7,8,9,10], b: [1,2,3,4,5,6,7,8,9,10], "
            "c: [1,2,3,4,5,6,7,8,9,10], d: [1,2,3,4,5,6,7,8,9,10], e: [1,2,3,4,5,6]}}",
            "3:23: stages.a.matrix: 60000 combinations; a pipeline may have at most 50000 stage "
            "instances",
        ),
    ],
)
def test_other_stage_checks(tmp_path: Path, stage: str, expected: str) -> None:
    path = write(tmp_path, f"version: 1\nstages:\n  a: {stage}\n")
    found = one_problem(path)
    assert found.startswith(f"{path}:{expected}"), found


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        (
            "secrets: [bad-name]",
            "2:11: secrets: 'bad-name' is not a valid environment variable name",
        ),
        ("hosts: {local: {}}", "2:9: hosts: 'local' is reserved for this machine"),
        ("hosts: {'a b': {}}", "2:9: hosts: host name 'a b' may only contain letters"),
        ("hosts: {b: {slots: 0, colour: red}}", "2:20: hosts.b.slots: must be at least 1, got 0"),
        (
            "x-a: &a {b: 1}\nx-b: &a {c: 1}",
            "3:6: YAML syntax error: second occurrence (found duplicate anchor 'a'",
        ),
    ],
)
def test_other_top_level_checks(tmp_path: Path, top: str, expected: str) -> None:
    path = write(tmp_path, f"version: 1\n{top}\nstages:\n  a: {{run: x}}\n")
    found = problems(path)
    assert found[0].startswith(f"{path}:{expected}"), found


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "1:1: the file is empty; a pipeline needs 'version: 1' and 'stages'"),
        (b"# only a comment\n", "1:1: the file is empty"),
        (b"- version: 1\n", "1:1: the file: expected a mapping, got a list"),
        (b"just text", "1:1: the file: expected a mapping, got the string 'just text'"),
        (b"version: 1\n\xff\xfe\x00garbage", "2:1: not UTF-8 text: byte 0xff cannot be decoded"),
        (b"version: 1\nname: a\x00b\n", "2:8: character U+0000 is not allowed in a YAML file"),
        (
            b"a: 1\n---\nb: 2\n",
            "2:1: YAML syntax error: found another document (expected a "
            "single document in the stream at line 1, column 1)",
        ),
        (b"version: 1\nstages: *nope\n", "2:9: YAML syntax error: found undefined alias 'nope'"),
        (b"version: 1\nx-a: &a [*a]\n", "2:10: alias *a refers to a collection that contains it"),
        (
            b"version: 1\nstages: !!python/object:os.system {}\n",
            "2:9: stages: expected a mapping, got a mapping tagged tag:yaml.org,2002:python/object",
        ),
        (b"[" * 100, "1:65: nesting deeper than 64 levels"),
        (
            b"version: !!int\nstages: {a: {run: x}}\n",
            "1:10: version: must be the integer 1, got '' tagged tag:yaml.org,2002:int",
        ),
        (
            b"version: 1\nstages: {a: {run: x, allow_failure: !!bool maybe}}\n",
            "2:37: stages.a.allow_failure: expected true or false, got 'maybe' tagged",
        ),
        (
            b"version: 1\nstages: {a: {run: x, timeout: !!float 1:x}}\n",
            "2:31: stages.a.timeout: a duration must be a finite number of seconds >= 0, got '1:x'",
        ),
    ],
)
def test_garbage_is_refused_with_a_position(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "pipedeck.yaml"
    path.write_bytes(content)
    found = one_problem(path)
    assert found.startswith(f"{path}:{expected}"), found


def test_very_deep_nesting_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pipedeck.yaml"
    path.write_text("[" * 100_000)
    found = one_problem(path)
    assert found.startswith(f"{path}:1:") and "nesting" in found


def test_missing_file_directory_and_fifo(tmp_path: Path) -> None:
    assert one_problem(tmp_path / "nope.yaml").startswith(
        f"{tmp_path / 'nope.yaml'}:1:1: cannot read the pipeline file: No such file"
    )
    assert one_problem(tmp_path) == f"{tmp_path}:1:1: not a regular file"
    os.mkfifo(tmp_path / "fifo.yaml")
    fifo = tmp_path / "fifo.yaml"
    assert one_problem(fifo) == f"{fifo}:1:1: not a regular file"


@pytest.mark.timeout(10)
def test_billion_laughs_is_refused(tmp_path: Path) -> None:
    lines = ["version: 1", 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    lines += ["stages:", "  a: {run: x, env: *l9}"]
    path = tmp_path / "pipedeck.yaml"
    path.write_text("\n".join(lines) + "\n")
    found = one_problem(path)
    assert f"the file has more than {loader.MAX_NODES} YAML values" in found
    assert "this limit guards against alias bombs" in found


@pytest.mark.timeout(10)
def test_file_over_5_mb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pipedeck.yaml"
    path.write_text("version: 1\n" + "# padding\n" * 600_000)
    assert one_problem(path) == f"{path}:1:1: file is larger than 5 MB; refusing to load it"


def test_problem_renders_as_file_line_col_message() -> None:
    assert str(Problem("p.yaml", 3, 7, "bad")) == "p.yaml:3:7: bad"
    err = ConfigError([Problem("p.yaml", 9, 1, "second"), Problem("p.yaml", 2, 4, "first")])
    assert str(err) == "p.yaml:2:4: first\np.yaml:9:1: second"


# -- the JSON Schema is made from the loader's key tables -------------------------------------


def test_schema_covers_every_key_of_the_spec_example() -> None:
    schema = json.loads(json.dumps(SCHEMA))  # plain JSON
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["version", "stages"]
    defs = schema["$defs"]
    assert defs["stage"]["required"] == ["run"]
    assert all(d["additionalProperties"] is False for d in defs.values())
    example = yaml.safe_load(SPEC_EXAMPLE)
    assert set(example) <= set(schema["properties"])
    assert set(example["defaults"]) <= set(defs["defaults"]["properties"])
    assert set(example["watch"]) <= set(defs["watch"]["properties"])
    assert set(example["hosts"]["buildbox"]) <= set(defs["host"]["properties"])
    assert set().union(*example["stages"].values()) <= set(defs["stage"]["properties"])
    assert defs["stage"]["properties"]["when"]["enum"] == list(WHEN_VALUES)
    assert defs["host"]["properties"]["slots"] == {
        "type": "integer",
        "minimum": 1,
        "default": 4,
        "description": "At most this many stages at once on this host.",
    }


@pytest.mark.parametrize("text", ["90s", "1h30m", "100ms", "45", "2.5", "5 minutes", "1d", "-1s"])
def test_schema_duration_pattern_agrees_with_the_loader(text: str) -> None:
    pattern = SCHEMA["$defs"]["stage"]["properties"]["timeout"]["oneOf"][0]["pattern"]
    try:
        parse_duration(text)
        valid = True
    except ValueError:
        valid = False
    assert bool(re.search(pattern, text)) == valid
