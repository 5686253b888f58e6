"""engine.graph: order, cycles, upstream/downstream, affected stages and rendering."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine import graph
from engine.loader import load
from engine.spec import Pipeline

SHOP = """\
version: 1
name: shop
hosts:
  box: {address: 127.0.0.1}
stages:
  lint:
    run: ruff check .
    inputs: ["src/**/*.py", "pyproject.toml"]
  docs:
    run: make docs
    inputs: ["docs/**", "!docs/_build/**"]
  test:
    needs: [lint]
    matrix: {python: ["3.11", "3.12"]}
    run: pytest
    inputs: ["src/**/*.py", "tests/**"]
  build:
    needs: [test]
    run: python -m build
    inputs: ["src/**", "/setup.cfg"]
    host: box
  notify:
    run: echo any change
  deploy:
    needs: [build, docs]
    when: manual
    run: ./deploy.sh
"""
TEST_IDS = {"test[python=3.11]", "test[python=3.12]"}


@pytest.fixture
def shop(tmp_path: Path) -> Pipeline:
    path = tmp_path / "pipedeck.yaml"
    path.write_text(SHOP)
    return load(path, environ={})


# -- topo_order -------------------------------------------------------------------------------


def test_topo_order_keeps_mapping_order_where_dependencies_allow() -> None:
    needs = {"e": ["d"], "a": [], "d": ["b"], "c": [], "b": []}
    assert graph.topo_order(needs) == ["a", "c", "b", "d", "e"]


def test_topo_order_puts_every_node_after_its_needs() -> None:
    needs = {f"n{i}": [f"n{j}" for j in range(i + 1, 20) if (i * j) % 7 == 1] for i in range(20)}
    order = graph.topo_order(needs)
    assert sorted(order) == sorted(needs)
    position = {name: i for i, name in enumerate(order)}
    assert all(position[dep] < position[name] for name, deps in needs.items() for dep in deps)


def test_topo_order_names_every_node_of_a_cycle() -> None:
    with pytest.raises(graph.CycleError) as info:
        graph.topo_order({"ok": [], "a": ["b"], "b": ["c"], "c": ["a"], "after": ["a"]})
    assert info.value.cycle == ["a", "b", "c"]
    assert str(info.value) == "dependency cycle: a -> b -> c -> a"


def test_topo_order_self_cycle() -> None:
    with pytest.raises(graph.CycleError) as info:
        graph.topo_order({"a": ["a"]})
    assert info.value.cycle == ["a"]


def test_topo_order_refuses_unknown_needs() -> None:
    with pytest.raises(ValueError, match="'a' needs unknown 'z'"):
        graph.topo_order({"a": ["z"]})


# -- upstream / downstream --------------------------------------------------------------------


def test_upstream_takes_names_and_ids(shop: Pipeline) -> None:
    assert graph.upstream(shop, ["build"]) == {"build", "lint", *TEST_IDS}
    assert graph.upstream(shop, ["test[python=3.12]"]) == {"test[python=3.12]", "lint"}
    assert graph.upstream(shop, ["notify"]) == {"notify"}


def test_downstream_takes_names_and_ids(shop: Pipeline) -> None:
    assert graph.downstream(shop, ["lint"]) == {"lint", *TEST_IDS, "build", "deploy"}
    assert graph.downstream(shop, ["test[python=3.11]"]) == {"test[python=3.11]", "build", "deploy"}
    assert graph.downstream(shop, ["docs", "notify"]) == {"docs", "notify", "deploy"}


def test_unknown_stage_is_a_key_error(shop: Pipeline) -> None:
    with pytest.raises(KeyError, match="unknown stage 'nope'"):
        graph.upstream(shop, ["nope"])


# -- affected ---------------------------------------------------------------------------------


def test_affected_by_a_source_change(shop: Pipeline) -> None:
    # lint's and test's globs match; build's `src/**` too; notify has no inputs; deploy follows
    assert graph.affected(shop, ["src/shop/cart.py"]) == {
        "lint",
        *TEST_IDS,
        "build",
        "deploy",
        "notify",
    }


def test_affected_globstar_negation_and_anchoring(shop: Pipeline) -> None:
    assert graph.affected(shop, ["./docs/guide/index.md"]) == {"docs", "deploy", "notify"}
    assert graph.affected(shop, ["docs/_build/index.html"]) == {"notify"}
    # glob rules, as the cache's: a pattern without a slash names the top level only
    assert "lint" in graph.affected(shop, ["pyproject.toml"])
    assert "lint" not in graph.affected(shop, ["sub/pyproject.toml"])
    assert graph.affected(shop, ["src/a/b.py"]) >= {"lint", "test[python=3.11]", "build"}
    assert graph.affected(shop, ["src/a/b.txt"]) == {"build", "notify", "deploy"}
    assert graph.affected(shop, ["setup.cfg"]) == {"build", "notify", "deploy"}  # "/setup.cfg"
    assert graph.affected(shop, ["sub/setup.cfg"]) == {"notify"}


def test_affected_by_an_unrelated_file_hits_only_stages_without_inputs(shop: Pipeline) -> None:
    # deploy has no inputs either, but is `when: manual`: only its upstream brings it along
    assert graph.affected(shop, ["README.md"]) == {"notify"}


def test_nothing_changed_affects_nothing(shop: Pipeline) -> None:
    assert graph.affected(shop, []) == set()


# -- render -----------------------------------------------------------------------------------


def test_render_text(shop: Pipeline) -> None:
    assert graph.render(shop, "text") == textwrap.dedent("""\
        shop
        lint
        docs
        test                 needs: lint
          test[python=3.11]
          test[python=3.12]
        build                needs: test  host: box
        notify
        deploy               needs: build, docs  when: manual""")


def test_render_dot(shop: Pipeline) -> None:
    dot = graph.render(shop, "dot")
    assert dot.startswith('digraph "shop" {\n')
    assert dot.endswith("\n}")
    assert '  subgraph cluster_2 {\n    label="test";\n    "test[python=3.11]";\n' in dot
    assert '  "lint" -> "test[python=3.12]";\n' in dot
    assert '  "test[python=3.12]" -> "build";\n' in dot
    assert '  "docs" -> "deploy";\n' in dot
    assert dot.count("->") == 6


def test_render_mermaid(shop: Pipeline) -> None:
    lines = graph.render(shop, "mermaid").splitlines()
    assert lines[0] == "flowchart LR"
    assert '  subgraph g2["test"]' in lines
    assert '    s2["test[python=3.11]"]' in lines
    assert "  s0 --> s2" in lines  # lint -> test[python=3.11]
    assert "  s4 --> s6" in lines  # build -> deploy
    assert sum("-->" in line for line in lines) == 6


def test_render_unknown_format(shop: Pipeline) -> None:
    with pytest.raises(ValueError, match="choose one of text, dot, mermaid"):
        graph.render(shop, "svg")
