"""One meaning of file sets: the cache, watch mode, sync and artifacts select the same files."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import pytest

from engine import fileset, graph
from engine.artifacts import list_artifacts
from engine.cache import glob_files, track_run
from engine.ignore import IgnoreRules
from engine.loader import load
from engine.run import Run
from engine.sync import artifact_files, workspace_files

TREE = (
    "a.py",
    ".hidden.py",
    "setup.cfg",
    "src/b.py",
    "src/.c.py",
    "src/x/c.py",
    "src/x/deep/d.py",
    "src/x/d.txt",
    "docs/g.md",
    "docs/_build/i.html",
    "report/index.html",
    "report/assets/app.js",
    "[odd].txt",
    ".git/hooks/h.py",
    "src/.pipedeck/state.py",
)

PATTERN_SETS = [
    ("*.py",),
    ("**/*.py", "!src/x/**"),
    ("src/*",),
    ("./src/**", "!**/*.txt"),
    ("docs", "!docs/_build/**"),
    ("/setup.cfg", "report"),
    ("report/*",),
    ("src/x/**/*.py",),
    ("**", "!src", "!docs/**"),
    ("?.py", "[[]odd].txt"),
]


def write_tree(root: Path) -> None:
    for rel in TREE:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)


def pipeline_file(root: Path, key: str, patterns: tuple[str, ...]) -> Path:
    quoted = ", ".join(f'"{p}"' for p in patterns)
    (root / "pipedeck.yaml").write_text(
        textwrap.dedent(f"""\
            version: 1
            name: fs
            stages:
              s:
                run: "true"
                {key}: [{quoted}]
            """)
    )
    return root / "pipedeck.yaml"


@pytest.mark.parametrize("patterns", PATTERN_SETS, ids=" ".join)
async def test_cache_watch_sync_and_artifacts_select_the_same_files(
    tmp_path: Path, patterns: tuple[str, ...]
) -> None:
    write_tree(tmp_path)
    every = {rel for rel, _ in fileset.walk(tmp_path)}
    assert ".git/hooks/h.py" not in every and "src/.pipedeck/state.py" not in every

    watching = load(pipeline_file(tmp_path, "inputs", patterns))
    hashed = glob_files(tmp_path, patterns)  # the cache: the input files it fingerprints
    rules = IgnoreRules(watching)
    triggering = sorted(
        rel
        for rel in [*TREE, "pipedeck.yaml"]
        if not rules.ignored(tmp_path / rel) and "s" in graph.affected(watching, {rel})
    )

    synced = sorted(artifact_files(tmp_path, patterns))  # sync: upstream outputs sent to a host

    producing = load(pipeline_file(tmp_path, "outputs", patterns))
    run = Run(producing)
    track_run(run)
    assert await run.execute() == 0
    kept = sorted(a.path for a in list_artifacts(producing.state_dir, run.run_id))

    selected = sorted(fileset.select(tmp_path, patterns))
    assert hashed == triggering == synced == kept == selected
    assert selected, patterns  # every set selects something on this tree


def test_directory_literals_and_exclusions(tmp_path: Path) -> None:
    write_tree(tmp_path)
    assert sorted(fileset.select(tmp_path, ("report",))) == [
        "report/assets/app.js",
        "report/index.html",
    ]
    assert sorted(fileset.select(tmp_path, ("report/*",))) == ["report/index.html"]
    assert sorted(fileset.select(tmp_path, ("src", "!src/x"))) == ["src/.c.py", "src/b.py"]
    assert fileset.select(tmp_path, ("!src/**",)) == {}  # exclusions alone select nothing


def test_sync_and_watch_read_nested_gitignores_the_same_way(tmp_path: Path) -> None:
    """The repository's `.gitignore` files, from its root (above the workspace) down."""
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("*.log\nbuild/\n")
    ws = tmp_path / "project"
    files = [
        "keep.txt",
        "debug.log",
        "build/out.bin",
        "sub/.gitignore",
        "sub/a.tmp",
        "sub/keep.log",
        "sub/deeper/b.tmp",
        "sub/deeper/.gitignore",
        "sub/deeper/c.tmp",
        "venv/lib/x.py",
        "ok/build.txt",
    ]
    for rel in files:
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(rel)
    (ws / "sub/.gitignore").write_text("*.tmp\n!keep.log\n")
    (ws / "sub/deeper/.gitignore").write_text("!c.tmp\n")
    (ws / ".gitignore").write_text("venv/\n")
    (ws / "pipedeck.yaml").write_text("version: 1\nstages:\n  s:\n    run: 'true'\n")
    sent = set(workspace_files(ws))
    rules = IgnoreRules(load(ws / "pipedeck.yaml"))
    watched = {
        rel for rel in [*files, ".gitignore", "pipedeck.yaml"] if not rules.ignored(ws / rel)
    }
    assert (
        sent
        == watched
        == {
            ".gitignore",
            "keep.txt",
            "ok/build.txt",
            "pipedeck.yaml",
            "sub/.gitignore",
            "sub/keep.log",
            "sub/deeper/.gitignore",
            "sub/deeper/c.tmp",
        }
    )


@pytest.mark.parametrize(
    ("glob", "path", "selected"),
    [
        ("[[]odd].txt", "[odd].txt", True),
        ("[a&&b].txt", "&.txt", True),
        ("[~|].txt", "|.txt", True),
        ("[!a].txt", "a.txt", False),
        ("[!a].txt", "b.txt", True),
        ("[a-c].txt", "b.txt", True),
    ],
)
def test_a_class_means_its_characters_and_python_warns_of_nothing(
    glob: str, path: str, selected: bool
) -> None:
    """`[`, `&&`, `~~` and `||` inside a class are literal characters, as in a shell; Python's
    regex engine would read them as (future) set syntax and warn "Possible nested set"."""
    from engine.globs import matcher

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert matcher.__wrapped__((glob,))(path) is selected
