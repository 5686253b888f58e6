"""The command-line side of workflows: the options `run`, `ui`, `validate` and `graph` take,
loading with warnings printed, and finding the workflow when there is no pipedeck.yaml."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import PipedeckError

if TYPE_CHECKING:  # the loader (yaml...) only when a workflow is loaded: `--help` stays quick
    from engine.gha.loader import Options, Workflow


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--event, --event-file, --input, --runner and --strict (SPEC §3, §11)."""
    group = parser.add_argument_group("GitHub Actions workflows")
    group.add_argument("--event", default="push", help="github.event_name (default: push)")
    group.add_argument("--event-file", metavar="FILE", help="a JSON event payload: github.event")
    group.add_argument(
        "--input", action="append", default=[], metavar="KEY=VALUE", help="an input (repeatable)"
    )
    group.add_argument(
        "--runner",
        action="append",
        default=[],
        metavar="LABEL=HOST",
        help="run jobs whose runs-on has LABEL on HOST (repeatable)",
    )
    group.add_argument(
        "--strict", action="store_true", help="what cannot run here is an error, not a warning"
    )
    group.add_argument(
        "--workspace",
        choices=("copy", "here"),
        help="where local jobs run: in a copy of the repository under .pipedeck/workspace (its"
        " HEAD plus your uncommitted changes; the default in a git checkout) or here, in your"
        " working tree",
    )
    group.add_argument(
        "--watch-paths",
        action="append",
        default=[],
        metavar="PATH",
        help="with --watch: only changes under PATH rerun (repeatable; default: the repository)",
    )


def _pairs(items: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} {item}: expected KEY=VALUE")
        pairs[key] = value
    return pairs


def options_of(args: argparse.Namespace) -> Options:
    """The loader options from parsed arguments (ValueError on a malformed pair)."""
    from engine.gha.loader import Options

    return Options(
        event=getattr(args, "event", "push"),
        event_file=getattr(args, "event_file", None),
        inputs=_pairs(getattr(args, "input", []), "--input"),
        runners=_pairs(getattr(args, "runner", []), "--runner"),
        strict=getattr(args, "strict", False),
        workspace=getattr(args, "workspace", None),
    )


def load(path: str, args: argparse.Namespace) -> Workflow:
    """Load a workflow for the command line, printing its warnings and notes to stderr."""
    from engine.gha.loader import load_workflow

    workflow = load_workflow(path, options_of(args))
    for warning in workflow.warnings:
        print(warning, file=sys.stderr)
    paths = tuple(getattr(args, "watch_paths", None) or ())
    if paths:  # a workflow has no `inputs`: by default every change reruns it
        from dataclasses import replace

        pipeline = workflow.pipeline
        workflow = replace(
            workflow, pipeline=replace(pipeline, watch=replace(pipeline.watch, paths=paths))
        )
    return workflow


def is_workflow(path: str) -> bool:
    """True for a file with a top-level `jobs:` and no top-level `version:` (SPEC §11)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return False
    return bool(re.search(r"(?m)^jobs\s*:", head)) and not re.search(r"(?m)^version\s*:", head)


def workflow_root(start: Path) -> Path:
    """The repository root above a workflow (`.github/workflows/x.yml` -> the checkout)."""
    for parent in [start, *start.parents]:
        if (parent / ".git").exists():
            return parent
        if parent.name == ".github":
            return parent.parent
    return start


class SeveralWorkflows(PipedeckError, ValueError):
    """No pipedeck.yaml and several workflows: which one is meant (a usage error, exit 2)."""

    exit_code = 2


def single_workflow(directory: Path, command: str = "run") -> Path | None:
    """The one workflow in `.github/workflows` (None if there is none); `SeveralWorkflows`
    listing them and how to pass one if there are several."""
    folder = directory / ".github" / "workflows"
    found = sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]) if folder.is_dir() else []
    if len(found) > 1:
        names = ", ".join(path.name for path in found)
        raise SeveralWorkflows(
            f"no pipedeck.yaml here, and {len(found)} workflows in {folder}: {names}; "
            f"pass one: pipedeck {command} {found[0]}"
        )
    return found[0] if found else None
