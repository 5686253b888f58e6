"""The `github` context, from the local git checkout and the command line's event, and the
runner's architecture (the job runner imports this module: subprocess is imported where used)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

TYPE_CHECKING = False  # the job runner starts faster without typing
if TYPE_CHECKING:
    from typing import Any

_REMOTE_RE = re.compile(r"[:/]([^/:]+/[^/]+?)(?:\.git)?/?$")
# runs-on labels naming an architecture: GitHub's hosted ARM runners (ubuntu-24.04-arm,
# windows-11-arm) and the architecture labels of self-hosted ones (ARM64, ARM, X64)
_ARCH_LABEL_RE = re.compile(r"(?i)^(?:.+-arm|.+-arm64|arm64)$|^(?P<other>arm|x64)$")


def runner_arch() -> str:
    """This machine as `runner.arch` names it: X64, ARM64, ARM..."""
    machine = os.uname().machine.lower()
    return {"x86_64": "X64", "amd64": "X64", "aarch64": "ARM64", "arm64": "ARM64"}.get(
        machine, "ARM" if machine.startswith("arm") else machine.upper()
    )


def label_arch(label: str) -> str | None:
    """The architecture a runs-on label asks for (X64, ARM64, ARM), or None if it names none."""
    match = _ARCH_LABEL_RE.match(label)
    if match is None:
        return None
    return (match["other"] or "ARM64").upper()


def _git(root: Path, *args: str) -> str:
    import subprocess

    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def github_context(
    root: Path, event: str = "push", event_file: str | None = None
) -> dict[str, Any]:
    """What GitHub would put in `github` for a run of this checkout's HEAD: sha, ref,
    ref_name, repository (from the `origin` remote), actor, event_name and event."""
    head = _git(root, "rev-parse", "HEAD", "--symbolic-full-name", "HEAD").splitlines()
    sha = head[0] if head else "0" * 40
    if len(head) > 1 and head[1].startswith("refs/"):
        ref = head[1]
    else:  # detached, or a branch without commits yet
        ref = _git(root, "symbolic-ref", "--quiet", "HEAD") or sha
    config = dict(
        line.split(" ", 1)
        for line in _git(
            root, "config", "--get-regexp", r"^(remote\.origin\.url|user\.name)$"
        ).splitlines()
        if " " in line
    )
    match = _REMOTE_RE.search(config.get("remote.origin.url", ""))
    repository = match.group(1) if match else f"local/{root.name}"
    payload: dict[str, Any] = {}
    if event_file:
        with open(event_file, encoding="utf-8") as handle:
            payload = json.load(handle)
    owner = repository.split("/", 1)[0]
    return {
        "event_name": event,
        "event": payload,
        "event_path": os.path.abspath(event_file) if event_file else "",
        "sha": sha,
        "ref": ref,
        "ref_name": ref.removeprefix("refs/heads/").removeprefix("refs/tags/"),
        "ref_type": "tag" if ref.startswith("refs/tags/") else "branch",
        "head_ref": "",
        "base_ref": "",
        "repository": repository,
        "repository_owner": owner,
        "actor": config.get("user.name") or os.environ.get("USER", "pipedeck"),
        "server_url": "https://github.com",
        "api_url": "https://api.github.com",
        "graphql_url": "https://api.github.com/graphql",
        "workspace": str(root),
        "run_id": "1",
        "run_number": "1",
        "run_attempt": "1",
        "retention_days": "90",
        "token": os.environ.get("GITHUB_TOKEN", ""),
    }
