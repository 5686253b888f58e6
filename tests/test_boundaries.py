"""The engine never imports textual or rich; the CLI imports them only for the TUI, and each
command only the modules it uses."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, SAMPLES


def test_engine_sources_never_import_textual_or_rich() -> None:
    offenders = []
    for path in (REPO / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path}:{node.lineno} {n}" for n in names if n.split(".")[0] in ("textual", "rich")
            ]
    assert offenders == []


UI_LIBRARIES = ("textual", "rich", "asyncssh")


def _modules_after(
    argv: list[str], cwd: Path, watched: tuple[str, ...] = UI_LIBRARIES
) -> dict[str, bool]:
    """Which of the `watched` modules `pipedeck ARGV` has imported when it is done."""
    script = (
        "import sys, json\n"
        "from tui.cli import main\n"
        "try:\n    main(sys.argv[2:])\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write('\\nMODULES ' + json.dumps({m: m in sys.modules "
        "for m in sys.argv[1].split(',')}) + '\\n')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, ",".join(watched), *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = [ln for ln in done.stderr.splitlines() if ln.startswith("MODULES ")][-1]
    return json.loads(line.removeprefix("MODULES "))


def test_importing_the_whole_engine_loads_no_ui_library() -> None:
    code = (
        "import sys, pkgutil, importlib, engine\n"
        "for m in pkgutil.walk_packages(engine.__path__, 'engine.'):\n"
        "    if m.name != 'engine.executors.ssh':\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('textual', 'rich')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_help_validate_and_local_run_import_neither_textual_nor_asyncssh(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("version: 1\nstages:\n  a:\n    run: echo hi\n")
    for argv in (
        ["--help"],
        ["validate", str(SAMPLES / "ci.yaml")],
        ["run", str(tmp_path / "p.yaml")],
    ):
        loaded = _modules_after(argv, tmp_path)
        assert loaded == {"textual": False, "rich": False, "asyncssh": False}, argv


def test_help_and_validate_load_only_what_they_use(tmp_path: Path) -> None:
    """`--help` builds the parser and nothing else; `validate` loads the file without the run
    machinery (asyncio, SQLite) or the workflow loader; a plain local run leaves out what only
    some pipelines use (gitignore matching, service probes, JUnit, metrics) and psutil, which
    samples only stages running longer than resources.FIRST_SAMPLE."""
    (tmp_path / "p.yaml").write_text("version: 1\nstages:\n  a:\n    run: echo hi\n")
    heavy = ("asyncio", "sqlite3", "yaml", "dataclasses", "engine.gha.loader", "engine.loader")
    assert not any(_modules_after(["--help"], tmp_path, heavy).values())
    loaded = _modules_after(["validate", str(tmp_path / "p.yaml")], tmp_path, heavy)
    assert loaded == dict.fromkeys(heavy, False) | {
        "yaml": True,
        "dataclasses": True,
        "engine.loader": True,
    }
    optional = ("pathspec", "http.client", "xml.etree.ElementTree", "engine.metrics", "difflib")
    optional += ("psutil",)
    loaded = _modules_after(["run", str(tmp_path / "p.yaml")], tmp_path, ("asyncio", *optional))
    assert loaded == {"asyncio": True} | dict.fromkeys(optional, False)
