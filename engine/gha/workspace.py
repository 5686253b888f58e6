"""`--workspace copy`: a run's jobs work in a copy of the repository, not in the user's tree.

A copy is a git repository of its own sharing the user's objects (git's alternates), kept
between runs: `.pipedeck/workspace`, and `.pipedeck/workspace-N` for jobs at the same time as
others. A job takes a copy of its own when it starts: it is given the repository's branches (as
`origin/*`) and tags and no other refs, checked out at the repository's HEAD on its branch, and
then given the working tree's uncommitted changes (modified and untracked files that are not
ignored; deleted files deleted), as the job would see them in place. Its refs and config being
its own, the tags, branches and config a job makes stay in it (a git worktree shares them with
its repository). Of the ignored files the last run made, virtual environments and tools'
caches (`KEEP`) are kept; the rest (build output) goes, as from a fresh checkout. The copy has
no `.pipedeck`: its jobs keep their state (results, caches, artifacts, summaries, venvs) in the
repository's (engine.gha.runner's `_state_root`), where pipedeck reads it.

Two jobs never share a copy at once, as each job on GitHub has a machine and a checkout of its
own (pip's packaging job commits and tags while its vendoring job checks `git diff`). Each copy
has a lock file and a claim (the run id that last took it) in `.pipedeck/gha/workspaces/`: a
job takes the first copy whose lock no other job holds (one job at a time chooses,
`take.lock`), holds it exclusively while it runs (the lock is its process's; it ends with it),
and syncs it. Jobs one after another take the first copy again, warm; jobs at the same time
take `workspace-1`, `-2`... A spare copy (`workspace-N`) no job took for `SPARE_DAYS` is
removed when a job takes a copy.

A job whose matrix is known only when it runs (`fromJSON(needs.x.outputs.y)`) is one stage
running its instances one after another in the copy it took: `resync_workspace` syncs that copy
again before each instance after the first, as each instance on GitHub has a runner and a
checkout of its own (attrs' `tests` runs `rm -rf src`; the next instance needs `src`).
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import time
from pathlib import Path
from typing import IO

COPY = ".pipedeck/workspace"
SPARE_DAYS = 1.0  # a spare copy unused for this long is removed
_held: list[IO[str]] = []  # the lock of the copy this job runs in, held until the process ends
_taken: list[tuple[Path, Path, Path]] = []  # the copy this job took: (root, copy, its folder)


def copy_workspace(root: Path, run_id: str) -> Path:
    """The folder of a copy of the repository at `root` for this job alone, synced, held for
    this process's life (see the module docstring). ValueError when it cannot be made."""
    # `root` may be a folder of the git checkout (a sample's): the same folder of the copy
    prefix = _git(root, "rev-parse", "--show-prefix").strip()
    locks = root / ".pipedeck" / "gha" / "workspaces"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / "take.lock", "w") as taking:  # one job at a time chooses
        fcntl.flock(taking, fcntl.LOCK_EX)
        n, lock = _free(locks)  # held exclusively until this job's process ends
        _write_claim(locks, n, run_id)
        _remove_spares(root, locks, keep=n)
    try:
        _sync(root, _copy(root, n), _copy(root, n) / prefix)
    except BaseException:
        lock.close()
        raise
    _held.append(lock)
    _taken.append((root, _copy(root, n), _copy(root, n) / prefix))
    return _copy(root, n) / prefix


def resync_workspace() -> Path:
    """Sync the copy this process took (`copy_workspace`) again, as a job taking it now would
    find it: the user's refs, HEAD and uncommitted changes, what the last instance left gone but
    venvs and tools' caches (`KEEP`). Its folder (the job's working directory: a copy broken
    by the last instance is made anew). ValueError when it cannot be synced."""
    if not _taken:
        raise ValueError("--workspace copy: no copy taken to sync again")
    root, copy, here = _taken[-1]
    _sync(root, copy, here)
    return here


def _free(locks: Path) -> tuple[int, IO[str]]:
    """The first copy no job runs in, and its lock, held exclusively."""
    n = 0
    while True:
        lock = open(locks / f"{n}.lock", "w")  # noqa: SIM115 - returned
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return n, lock
        except BlockingIOError:
            lock.close()
            n += 1


def _copy(root: Path, n: int) -> Path:
    return root / (COPY if n == 0 else f"{COPY}-{n}")


def _slots(locks: Path) -> list[int]:
    return sorted(int(p.stem) for p in locks.glob("*.lock") if p.stem.isdigit())


def _write_claim(locks: Path, n: int, run_id: str) -> None:
    tmp = locks / f"{n}.run.tmp"
    tmp.write_text(run_id)
    tmp.replace(locks / f"{n}.run")


def _remove_spares(root: Path, locks: Path, keep: int) -> None:
    """Remove the spare copies (not the first) that no run took for SPARE_DAYS."""
    old = time.time() - SPARE_DAYS * 86400
    removed = False
    for n in _slots(locks):
        claim = locks / f"{n}.run"
        if n == 0 or n == keep or not claim.exists() or claim.stat().st_mtime > old:
            continue
        with open(locks / f"{n}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # in use after all
            shutil.rmtree(_copy(root, n), ignore_errors=True)
            claim.unlink(missing_ok=True)
            (locks / f"{n}.lock").unlink(missing_ok=True)
            removed = True
    if removed:
        _git(root, "worktree", "prune")


_FETCH = "+refs/heads/*:refs/remotes/origin/*"
_CONFIG = """[core]
\trepositoryformatversion = 0
\tfilemode = true
\tbare = false
\tlogallrefupdates = false
[gc]
\tauto = 0
"""


def _reset(root: Path, copy: Path) -> None:
    """Make the copy a repository of its own (objects shared with the user's, through git's
    alternates) at the user's HEAD, on their branch, with their branches (as `origin/*`) and
    tags and no other refs: the tags, branches, stashes and config a job made in the copy go,
    and never were the user's (a worktree's would be: it shares refs and config)."""
    found = _git(root, "rev-parse", "--git-common-dir", "HEAD", "--symbolic-full-name", "HEAD")
    common_dir, head, ref = found.split("\n")[:3]
    common = Path(root, common_dir)
    if not (copy / ".git").is_dir():  # none yet, or a git worktree of an older pipedeck
        shutil.rmtree(copy, ignore_errors=True)
        _git(root, "worktree", "prune")
        _git(root, "init", "--quiet", str(copy))  # no branch, so no upstream to push to
        alternates = copy / ".git" / "objects" / "info" / "alternates"
        alternates.write_text(f"{(common / 'objects').resolve()}\n")
    # its config anew (a job's `git config user.name` was the job's), no reflogs (of shared
    # objects); `git remote get-url origin` says what it says in the user's checkout
    url = _git(root, "config", "--get", "remote.origin.url", ok=(0, 1)).strip()
    config = [_CONFIG]
    if url:
        quoted = url.replace("\\", "\\\\").replace('"', '\\"')
        config.append(f'[remote "origin"]\n\turl = "{quoted}"\n\tfetch = {_FETCH}\n')
    (copy / ".git" / "config").write_text("".join(config))
    shallow = copy / ".git" / "shallow"  # a shallow clone's: where its history stops
    if (common / "shallow").is_file():
        shutil.copyfile(common / "shallow", shallow)
    else:
        shallow.unlink(missing_ok=True)
    wanted = {}
    for line in _git(root, "for-each-ref", "--format=%(objectname) %(refname)").splitlines():
        sha, name = line.split(" ", 1)
        if name.startswith("refs/heads/"):
            wanted["refs/remotes/origin/" + name.removeprefix("refs/heads/")] = sha
        elif name.startswith("refs/tags/"):
            wanted[name] = sha
    have = dict(
        line.split(" ", 1)[::-1]
        for line in _git(copy, "for-each-ref", "--format=%(objectname) %(refname)").splitlines()
    )
    changes = [f"update {name} {sha}" for name, sha in wanted.items() if have.get(name) != sha]
    changes += [f"delete {name}" for name in have if name not in wanted]
    if changes:  # the user's refs; a job's branches, tags and stashes go
        _git(copy, "update-ref", "--stdin", stdin="\n".join(changes) + "\n")
    if ref.startswith("refs/heads/"):  # as actions/checkout, on the branch pushed
        _git(copy, "checkout", "--quiet", "--force", "-B", ref.removeprefix("refs/heads/"), head)
    else:
        _git(copy, "checkout", "--quiet", "--force", "--detach", head)
    excluded = [f"--exclude={name}/" for name in KEEP]
    _git(copy, "clean", "-ffdx", *excluded)  # what the last run left, not its venvs


def _git(cwd: Path, *args: str, ok: tuple[int, ...] = (0,), stdin: str | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, errors="surrogateescape",
        input=stdin,
    )  # fmt: skip
    if done.returncode not in ok:
        detail = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        raise ValueError(f"--workspace copy: git {args[0]}: {detail[0]}")
    return done.stdout


# ignored folders kept in a copy from run to run (virtual environments, tools' caches): the
# rest of what the last run left, build output above all, goes, as from a fresh checkout
KEEP = (
    ".tox", ".nox", ".venv", "venv", "node_modules", "__pycache__", ".mypy_cache",
    ".pytest_cache", ".ruff_cache", ".hypothesis",
)  # fmt: skip


def _sync(root: Path, copy: Path, here: Path) -> None:
    try:
        _reset(root, copy)
    except ValueError:  # broken (the user's history rewritten and pruned...): made anew
        shutil.rmtree(copy, ignore_errors=True)
        _reset(root, copy)
    changed = _git(
        root, "ls-files", "-z", "--modified", "--others", "--exclude-standard",
        "--", ".", ":(exclude).pipedeck",
    )  # fmt: skip
    for name in filter(None, changed.split("\0")):
        source, target = root / name, here / name
        if source.is_symlink() or source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
        elif not source.exists():  # deleted in the working tree
            target.unlink(missing_ok=True)
