"""The engine never imports textual or rich; the CLI imports them only for the TUI."""

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


def _modules_after(argv: list[str], cwd: Path) -> dict[str, bool]:
    script = (
        "import sys, json\n"
        "from tui.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write('\\nMODULES ' + json.dumps({m: m in sys.modules for m in "
        "('textual', 'rich', 'asyncssh')}) + '\\n')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *argv], cwd=cwd, capture_output=True, text=True, timeout=60
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
