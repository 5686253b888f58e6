"""`github.event` without `--event-file`: a payload made from the git checkout, the same in
expressions and in the file GITHUB_EVENT_PATH names; `--event-file` replaces it entirely."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from dataclasses import replace
from pathlib import Path

from engine.gha.loader import Options, load_workflow
from engine.run import Run
from tests.conftest import Recorder

ZEROS = "0" * 40
# what a job prints: the expressions, then the payload file as JSON on one line
ECHO = """
    echo "ref=${{ github.event.ref }}"
    echo "before=${{ github.event.before }} after=${{ github.event.after }}"
    echo "id=${{ github.event.head_commit.id }} first=${{ github.event.commits[0].id }}"
    echo "author=${{ github.event.head_commit.author.name }} <${{ github.event.head_commit.author.email }}>"
    echo "committer=${{ github.event.head_commit.committer.name }} at ${{ github.event.head_commit.timestamp }}"
    echo "repo=${{ github.event.repository.full_name }} name=${{ github.event.repository.name }} owner=${{ github.event.repository.owner.login }} default=${{ github.event.repository.default_branch }}"
    echo "pusher=${{ github.event.pusher.name }} <${{ github.event.pusher.email }}> sender=${{ github.event.sender.login }}"
    echo "group=${{ github.event.pull_request.number || github.ref }}"
    echo "action=${{ github.event.action }} head=${{ github.event.pull_request.head.ref }}@${{ github.event.pull_request.head.sha }} base=${{ github.event.pull_request.base.ref }}@${{ github.event.pull_request.base.sha }}"
    echo "head_ref=${{ github.head_ref }}/$GITHUB_HEAD_REF base_ref=${{ github.base_ref }}/$GITHUB_BASE_REF"
    echo "same_repo=${{ github.event.pull_request.head.repo.full_name == github.repository }}"
    echo "inputs=${{ toJSON(github.event.inputs) }}"
    test "${{ github.event_path }}" = "$GITHUB_EVENT_PATH"
    echo "file=$(python3 -c 'import json,os; print(json.dumps(json.load(open(os.environ["GITHUB_EVENT_PATH"]))))')"
"""


def git(repo: Path, *args: str, date: str = "2024-05-06T07:08:09+02:00") -> str:
    env = {**os.environ, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    done = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    )
    return done.stdout.strip()


def make_repo(tmp_path: Path, workflow: str, branch: str = "main") -> Path:
    """A git checkout with a workflow and user.name/user.email of its own; no commit yet."""
    repo = tmp_path / "shop"
    folder = repo / ".github" / "workflows"
    folder.mkdir(parents=True)
    (folder / "ci.yml").write_text(textwrap.dedent(workflow))
    git(repo, "init", "-q", "-b", branch)
    git(repo, "config", "user.name", "Ada Lovelace")
    git(repo, "config", "user.email", "ada@example.org")
    git(repo, "remote", "add", "origin", "git@github.com:acme/shop.git")
    return repo


def commit(repo: Path, message: str, author: str = "Grace Hopper <grace@example.org>") -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", f"--author={author}", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def echo_workflow(event: str, extra: str = "") -> str:
    """A workflow on `event` whose job `show` prints ECHO, and the jobs of `extra`."""
    steps = textwrap.indent(textwrap.dedent(ECHO).strip(), " " * 10)
    jobs = textwrap.indent(textwrap.dedent(extra).strip(), "  ")
    text = f"on: {event}\njobs:\n  show:\n    runs-on: ubuntu-latest\n    steps:\n"
    return f"{text}      - run: |\n{steps}\n{jobs}\n"


async def run(repo: Path, options: Options) -> tuple[Recorder, int]:
    path = repo / ".github" / "workflows" / "ci.yml"
    # in the checkout itself: the payload is the same with either workspace
    options = replace(options, workspace="here")
    recorder = Recorder()
    the_run = Run(load_workflow(path, options, environ={}).pipeline)
    the_run.subscribe(recorder)
    try:
        code = await the_run.execute()
    finally:
        await the_run.close()
    return recorder, code


def printed(recorder: Recorder, stage: str) -> tuple[dict[str, str], dict[str, object]]:
    """The job's `key=value` lines (first key of each line), and the payload file's JSON."""
    lines = recorder.lines(stage)
    values = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in lines if "=" in line}
    return values, json.loads(values.pop("file"))


async def test_push_payload_from_git_in_expressions_and_in_the_event_file(
    tmp_path: Path,
) -> None:
    repo = make_repo(
        tmp_path,
        echo_workflow(
            "push",
            """
            ci:
              if: "!contains(github.event.head_commit.message, '[skip ci]')"
              runs-on: ubuntu-latest
              steps: [{run: echo built}]
            """,
        ),
    )
    first = commit(repo, "start")
    # origin's default branch is trunk, whatever the local branch is called
    git(repo, "update-ref", "refs/remotes/origin/trunk", first)
    git(repo, "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/trunk")
    second = commit(repo, "Fix the cart\n\nLong text. [skip ci]")

    recorder, code = await run(repo, Options(event="push"))

    assert code == 0
    values, payload = printed(recorder, "show")
    assert values["ref"] == "refs/heads/main"
    assert values["before"] == f"{first} after={second}"
    assert values["id"] == f"{second} first={second}"
    assert values["author"] == "Grace Hopper <grace@example.org>"
    assert values["committer"] == "Ada Lovelace at 2024-05-06T07:08:09+02:00"
    assert values["repo"] == "acme/shop name=shop owner=acme default=trunk"
    assert values["pusher"] == "Ada Lovelace <ada@example.org> sender=Ada Lovelace"
    assert values["group"] == "refs/heads/main"  # no pull request number: the ref
    assert values["action"] == " head=@ base=@"
    assert values["inputs"] == "null"
    head_commit = {
        "id": second,
        "tree_id": git(repo, "rev-parse", "HEAD^{tree}"),
        "message": "Fix the cart\n\nLong text. [skip ci]",
        "timestamp": "2024-05-06T07:08:09+02:00",
        "author": {"name": "Grace Hopper", "email": "grace@example.org"},
        "committer": {"name": "Ada Lovelace", "email": "ada@example.org"},
    }
    repository = {
        "name": "shop",
        "full_name": "acme/shop",
        "default_branch": "trunk",
        "owner": {"login": "acme"},
    }
    assert payload == {
        "ref": "refs/heads/main",
        "before": first,
        "after": second,
        "head_commit": head_commit,
        "commits": [head_commit],
        "repository": repository,
        "pusher": {"name": "Ada Lovelace", "email": "ada@example.org"},
        "sender": {"login": "Ada Lovelace"},
    }
    assert recorder.final("ci").status == "skipped"  # [skip ci] in the head commit's message
    assert "built" not in recorder.lines("ci")


async def test_push_of_a_first_commit_has_zeros_before_and_runs_what_skip_ci_guards(
    tmp_path: Path,
) -> None:
    repo = make_repo(
        tmp_path,
        echo_workflow(
            "push",
            """
            ci:
              if: "!contains(github.event.head_commit.message, '[skip ci]')"
              runs-on: ubuntu-latest
              steps: [{run: echo built}]
            """,
        ),
        branch="develop",
    )
    only = commit(repo, "Initial commit")

    recorder, code = await run(repo, Options())  # push is the default event

    assert code == 0
    values, payload = printed(recorder, "show")
    assert values["before"] == f"{ZEROS} after={only}"
    # no origin/HEAD, no main or master: the current branch is the default one
    assert values["repo"] == "acme/shop name=shop owner=acme default=develop"
    assert payload["before"] == ZEROS
    assert recorder.final("ci").status == "succeeded"
    assert "built" in recorder.lines("ci")


async def test_pull_request_payload_is_the_branch_opened_into_the_default_branch(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path, echo_workflow("pull_request"))
    base = commit(repo, "start")
    git(repo, "checkout", "-q", "-b", "feature/cart")
    head = commit(repo, "Add the cart")
    git(repo, "checkout", "-q", "main")
    newer = commit(repo, "Meanwhile on main")  # the base's tip moved on
    git(repo, "checkout", "-q", "feature/cart")
    assert newer != base

    recorder, code = await run(repo, Options(event="pull_request"))

    assert code == 0
    values, payload = printed(recorder, "show")
    assert values["action"] == f"opened head=feature/cart@{head} base=main@{newer}"
    assert values["head_ref"] == "feature/cart/feature/cart base_ref=main/main"
    assert values["same_repo"] == "true"
    # no pull request number is made up: a concurrency group falls back to the ref
    assert values["group"] == "refs/heads/feature/cart"
    assert values["before"] == " after="  # push fields are not there
    pull_request = payload["pull_request"]
    assert isinstance(pull_request, dict)
    assert "number" not in pull_request and "number" not in payload
    assert payload["action"] == "opened"
    assert pull_request["head"]["sha"] == head
    assert pull_request["base"] == {
        "ref": "main",
        "sha": newer,
        "repo": payload["repository"],
    }


async def test_dispatch_payload_has_inputs_ref_and_repository(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path,
        """
        on:
          workflow_dispatch:
            inputs:
              level: {type: number, default: 1}
        jobs:
          show:
            runs-on: ubuntu-latest
            steps:
              - run: |
                  echo "level=${{ github.event.inputs.level }}"
                  echo "file=$(python3 -c 'import json,os; print(json.dumps(json.load(open(os.environ["GITHUB_EVENT_PATH"]))))')"
        """,
    )
    commit(repo, "start")

    recorder, code = await run(repo, Options(event="workflow_dispatch", inputs={"level": "3"}))

    assert code == 0
    values, payload = printed(recorder, "show")
    assert values["level"] == "3"
    assert payload == {
        "ref": "refs/heads/main",
        "repository": {
            "name": "shop",
            "full_name": "acme/shop",
            "default_branch": "main",
            "owner": {"login": "acme"},
        },
        "sender": {"login": "Ada Lovelace"},
        "inputs": {"level": "3"},
    }


async def test_event_file_replaces_the_payload_entirely(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, echo_workflow("push"))
    commit(repo, "start")
    event = tmp_path / "event.json"
    event.write_text('{"after": "abc"}')

    recorder, code = await run(repo, Options(event="push", event_file=str(event)))

    assert code == 0
    values, payload = printed(recorder, "show")
    assert payload == {"after": "abc"}
    assert values["before"] == " after=abc"
    assert values["repo"] == " name= owner= default="
