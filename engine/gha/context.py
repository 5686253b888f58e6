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
            ["git", *args],
            cwd=root,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def github_context(
    root: Path, event: str = "push", event_file: str | None = None
) -> dict[str, Any]:
    """What GitHub would put in `github` for a run of this checkout's HEAD: sha, ref,
    ref_name, repository (from the `origin` remote), actor, event_name and event: the
    `--event-file` payload, else one made from git (`event_payload`)."""
    head = _git(root, "rev-parse", "HEAD", "--symbolic-full-name", "HEAD").splitlines()
    sha = head[0] if head else "0" * 40
    if len(head) > 1 and head[1].startswith("refs/"):
        ref = head[1]
    else:  # detached, or a branch without commits yet
        ref = _git(root, "symbolic-ref", "--quiet", "HEAD") or sha
    config = dict(
        line.split(" ", 1)
        for line in _git(
            root, "config", "--get-regexp", r"^(remote\.origin\.url|user\.name|user\.email)$"
        ).splitlines()
        if " " in line
    )
    match = _REMOTE_RE.search(config.get("remote.origin.url", ""))
    repository = match.group(1) if match else f"local/{root.name}"
    owner = repository.split("/", 1)[0]
    actor = config.get("user.name") or os.environ.get("USER", "pipedeck")
    ref_name = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
    head_ref = base_ref = ""
    payload: dict[str, Any]
    if event_file:
        with open(event_file, encoding="utf-8") as handle:
            payload = json.load(handle)
    else:
        payload = event_payload(root, event, sha, ref, repository, actor, config)
        if event in _PULL_REQUEST_EVENTS:  # the branch's pull request into the default one
            head_ref = payload["pull_request"]["head"]["ref"]
            base_ref = payload["pull_request"]["base"]["ref"]
    return {
        "event_name": event,
        "event": payload,
        # the job runner writes `event` to a file of its job and names it here and in
        # GITHUB_EVENT_PATH (the same file with --event-file: a copy of it)
        "event_path": "",
        "sha": sha,
        "ref": ref,
        "ref_name": ref_name,
        "ref_type": "tag" if ref.startswith("refs/tags/") else "branch",
        "head_ref": head_ref,
        "base_ref": base_ref,
        "repository": repository,
        "repository_owner": owner,
        "actor": actor,
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


_PULL_REQUEST_EVENTS = ("pull_request", "pull_request_target")
# the head commit in one `git log` call: NUL-separated fields, the message last
_LOG_FORMAT = "%H%x00%T%x00%P%x00%an%x00%ae%x00%cn%x00%ce%x00%cI%x00%B"


def event_payload(
    root: Path,
    event: str,
    sha: str,
    ref: str,
    repository: str,
    actor: str,
    config: dict[str, str],
) -> dict[str, Any]:
    """The part of GitHub's webhook payload for `event` that git can tell truthfully, as if
    HEAD had just been pushed (push), were the head of a pull request just opened into the
    default branch (pull_request, pull_request_target), or were dispatched (workflow_dispatch;
    the loader adds `inputs`). What only GitHub knows (numbers, ids, URLs, a pull request's
    number, title or merge commit) is left out: it reads as null, not as a made-up value.
    Other events get `repository` only."""
    branches = _git(
        root,
        "for-each-ref",
        "--format=%(refname) %(symref) %(objectname)",
        "refs/remotes/origin/HEAD",
        "refs/heads/main",
        "refs/heads/master",
    )
    found = {}
    for line in branches.splitlines():  # refnames have no spaces; symref is empty or one
        name, _, rest = line.partition(" ")
        symref, _, tip = rest.partition(" ")
        found[name] = (symref, tip)
    default, default_sha = _default_branch(found, ref)
    name = repository.split("/", 1)[-1]
    repo: dict[str, Any] = {
        "name": name,
        "full_name": repository,
        "default_branch": default,
        "owner": {"login": repository.split("/", 1)[0]},
    }
    sender = {"login": actor}
    if event == "push":
        commit = _head_commit(root)
        if commit is None:  # no commit yet: nothing was pushed
            return {"ref": ref, "repository": repo, "sender": sender}
        parents = commit.pop("parents")
        pusher = {"name": actor}
        if config.get("user.email"):
            pusher["email"] = config["user.email"]
        return {
            "ref": ref,
            "before": parents[0] if parents else "0" * 40,
            "after": commit["id"],
            "head_commit": commit,
            "commits": [commit],
            "repository": repo,
            "pusher": pusher,
            "sender": sender,
        }
    if event in _PULL_REQUEST_EVENTS:
        branch = ref.removeprefix("refs/heads/")
        base: dict[str, Any] = {"ref": default, "repo": repo}
        if default_sha:
            base["sha"] = default_sha
        return {
            "action": "opened",
            "pull_request": {
                "head": {"ref": branch, "sha": sha, "repo": repo},
                "base": base,
                "user": sender,
            },
            "repository": repo,
            "sender": sender,
        }
    if event == "workflow_dispatch":
        return {"ref": ref, "repository": repo, "sender": sender}
    return {"repository": repo}


def _default_branch(found: dict[str, tuple[str, str]], ref: str) -> tuple[str, str]:
    """The default branch and its tip: origin's (`origin/HEAD`), else a local main or master,
    else the current branch."""
    symref, tip = found.get("refs/remotes/origin/HEAD", ("", ""))
    if symref.startswith("refs/remotes/origin/"):
        return symref.removeprefix("refs/remotes/origin/"), tip
    for name in ("main", "master"):
        if f"refs/heads/{name}" in found:
            return name, found[f"refs/heads/{name}"][1]
    if ref.startswith("refs/heads/"):
        return ref.removeprefix("refs/heads/"), ""
    return "", ""


def _head_commit(root: Path) -> dict[str, Any] | None:
    """HEAD as a push payload's `head_commit` (plus its `parents`), None without a commit."""
    fields = _git(root, "log", "-1", f"--format={_LOG_FORMAT}", "HEAD").split("\0", 8)
    if len(fields) < 9:
        return None
    sha, tree, parents, a_name, a_email, c_name, c_email, c_date, message = fields
    return {
        "id": sha,
        "tree_id": tree,
        "message": message.strip("\n"),
        "timestamp": c_date,
        "author": {"name": a_name, "email": a_email},
        "committer": {"name": c_name, "email": c_email},
        "parents": parents.split(),
    }
