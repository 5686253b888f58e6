"""`uses:` steps: the common actions done natively, local composite and node actions.

Natively: actions/checkout (the workspace is the checkout; `path:` gets a copy),
actions/setup-python and actions/setup-node (an installed interpreter that satisfies the version),
actions/cache (a local cache under .pipedeck/gha/cache), actions/upload-artifact and
download-artifact (under the run's .pipedeck/gha/RUN_ID/artifacts).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from engine.gha import expr
from engine.gha.commands import safe_name

TYPE_CHECKING = False  # typing, tarfile, tomllib, hashlib: imported where used (a faster job start)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from engine.gha.runner import JobRunner

Result = tuple[str, dict[str, str], int | None]
_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def run_action(
    runner: JobRunner,
    uses: str,
    with_: Mapping[str, str],
    env: Mapping[str, str],
    timeout: float | None,
) -> Result:
    """Run one `uses:` step."""
    name = uses.split("@", 1)[0].lower()
    natives: dict[str, Callable[[JobRunner, Mapping[str, str]], Result]] = {
        "actions/checkout": checkout,
        "actions/setup-python": setup_python,
        "actions/setup-node": setup_node,
        "actions/cache": cache,
        "actions/upload-artifact": upload_artifact,
        "actions/download-artifact": download_artifact,
        "astral-sh/setup-uv": setup_uv,
        # setup-uv with a cache (the cache is not needed): its errors name it
        "hynek/setup-cached-uv": functools.partial(setup_uv, action="hynek/setup-cached-uv"),
    }
    native = natives.get(name)
    if name == "hynek/build-and-inspect-python-package":
        from engine.gha.python_package import build_and_inspect

        native = build_and_inspect
    elif name == "re-actors/alls-green":
        from engine.gha.alls_green import alls_green

        native = alls_green
    if native is not None:
        return native(runner, with_)
    if uses.startswith("./"):
        return local_action(runner, runner.workspace / uses, with_, env, timeout)
    raise ValueError(f"{uses}: not available here")


def _digest(text: str, length: int) -> str:
    """A short sha256 hex digest of `text` (a file name)."""
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _ok(message: str, **outputs: str) -> Result:
    print(message, flush=True)
    return "success", dict(outputs), 0


def _missing(runner: JobRunner, message: str) -> Result:
    """A failure because this machine lacks what a hosted runner would install (a Python or
    Node.js version): the job fails, but does not fail-fast its matrix (runner.missing)."""
    runner.missing.append(message)
    return _fail(message)


def _fail(message: str) -> Result:
    print(f"##[error]{message}", flush=True)
    return "failure", {}, 1


def checkout(runner: JobRunner, with_: Mapping[str, str]) -> Result:
    target = with_.get("path", "")
    if not target:
        return _ok(f"actions/checkout: the workspace {runner.workspace} is the checkout")
    dest = (runner.workspace / target).resolve()
    skip = {".git", ".pipedeck", dest.name} if dest.parent == runner.workspace else {".pipedeck"}
    shutil.copytree(
        runner.workspace,
        dest,
        ignore=lambda d, names: [n for n in names if Path(d) == runner.workspace and n in skip],
        dirs_exist_ok=True,
        symlinks=True,
    )
    return _ok(f"actions/checkout: copied the workspace to {target}")


# -- interpreters ----------------------------------------------------------------------------


def _parse(version: str) -> tuple[int, ...]:
    match = _VERSION_RE.search(version)
    if not match:
        return ()
    return tuple(int(p) for p in match.groups() if p is not None)


def satisfies(version: tuple[int, ...], spec: str) -> bool:
    """`3.12`, `3.12.1`, `3.x`, `3`, `>=3.10`, `>=3.9 <3.13`, `lts/*`-free specs."""
    spec = spec.strip().lstrip("v")
    if not spec:
        return False
    for part in spec.replace(",", " ").split():  # `>=3.9,<3.13` from requires-python too
        op = re.match(r"(>=|<=|>|<|==|=|~=|!=|\^|~)?(.*)", part)
        assert op is not None
        operator, text = op.group(1) or "", op.group(2).removesuffix("-dev")  # 3.15-dev: 3.15
        fields = text.split(".")
        wildcard = fields[-1] in ("x", "*")
        if wildcard:
            fields.pop()
        if not all(f.isdigit() for f in fields) or not (fields or wildcard):
            return False  # 3.14t (free-threaded), a typo: nothing here is known to satisfy it
        wanted = tuple(int(f) for f in fields)
        head = version[: len(wanted)]
        if operator in ("", "=", "==") and head != wanted:
            return False
        if operator in ("", "=", "==") and not wildcard and len(wanted) > 3:
            return False
        if operator == ">=" and version < wanted:
            return False
        if operator == ">" and version <= wanted + (99,) * (3 - len(wanted)):
            return False
        if operator == "<=" and head > wanted:
            return False
        if operator == "<" and version >= wanted:
            return False
        if operator == "^" and (version[:1] != wanted[:1] or version < wanted):
            return False
        if operator == "~" and (version[:2] != wanted[:2] or version < wanted):
            return False
        if operator == "~=" and (version[: len(wanted) - 1] != wanted[:-1] or version < wanted):
            return False
        if operator == "!=" and head == wanted:
            return False
    return True


def _candidates(names: tuple[str, ...], extra_globs: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    for directory in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]:
        for name in names:
            for path in glob.glob(os.path.join(directory, name)):
                if os.access(path, os.X_OK) and os.path.isfile(path):
                    found.append(path)
    for pattern in extra_globs:
        found.extend(p for p in glob.glob(os.path.expanduser(pattern)) if os.access(p, os.X_OK))
    return list(dict.fromkeys(os.path.realpath(p) for p in found))


_VERSIONS: dict[str, tuple[int, ...]] = {}


def _version_of(program: str, cache: Path | None = None) -> tuple[int, ...]:
    """The version an interpreter reports, remembered in `cache` (by path and mtime)."""
    if cache is not None and not _VERSIONS:
        with contextlib.suppress(OSError, ValueError):
            _VERSIONS.update({k: tuple(v) for k, v in json.loads(cache.read_text()).items()})
    try:
        key = f"{program}:{os.stat(program).st_mtime_ns}"
    except OSError:
        return ()
    if key not in _VERSIONS:
        _VERSIONS[key] = _probe(program)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(_VERSIONS))
    return _VERSIONS[key]


def _probe(program: str) -> tuple[int, ...]:
    try:
        done = subprocess.run(
            [program, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    if done.returncode != 0:  # a pyenv shim of a version not selected names versions, too
        return ()
    return _parse(done.stdout + done.stderr)


def find_interpreter(
    spec: str, names: tuple[str, ...], extra: tuple[str, ...], cache: Path | None = None
) -> tuple[str | None, list[str]]:
    """The newest interpreter satisfying `spec`, and every version found (for the message)."""
    found = [(v, p) for p in _candidates(names, extra) if (v := _version_of(p, cache))]
    found.sort(reverse=True)
    versions = [".".join(map(str, v)) for v in sorted({v for v, _ in found})]
    for version, path in found:
        if satisfies(version, spec):
            return path, versions
    return None, versions


def _shim(runner: JobRunner, kind: str, program: str, names: tuple[str, ...]) -> Path:
    """A directory on PATH where each of `names` runs `program`."""
    folder = runner.tool_cache / kind / _digest(program, 12) / "bin"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        link = folder / name
        if not link.exists():
            link.symlink_to(program)
    if kind == "python":
        pip = folder / "pip"
        if not pip.exists():
            pip.write_text(f'#!/bin/sh\nexec "{program}" -m pip "$@"\n')
            pip.chmod(0o755)
    return folder


def _version_in_file(path: Path) -> str:
    """The Python version a `python-version-file` asks for: `.python-version`'s first word,
    `pyproject.toml`'s `requires-python`, `.tool-versions`' `python` line."""
    text = path.read_text(errors="replace")
    if path.name == "pyproject.toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path.name}: {err}") from None
        poetry = data.get("tool", {}).get("poetry", {}).get("dependencies", {})
        return str(data.get("project", {}).get("requires-python") or poetry.get("python") or "")
    if path.name == ".tool-versions":
        found = [line.split() for line in text.splitlines()]
        return next((words[1] for words in found if words[:1] == ["python"] and words[1:]), "")
    return next(iter(text.split()), "")


def find_python(runner: JobRunner, spec: str) -> tuple[str | None, list[str]]:
    """The newest installed CPython satisfying `spec` (PATH, pyenv, uv-managed, /opt), and
    every version found."""
    return find_interpreter(
        spec,
        ("python3", "python3.[0-9]", "python3.[0-9][0-9]"),
        (
            "~/.pyenv/versions/*/bin/python3",
            "~/.local/share/uv/python/*/bin/python3",
            "/opt/python*/bin/python3",
        ),
        runner.tool_cache / "interpreters.json",  # versions.json: with failed probes
    )


def setup_python(runner: JobRunner, with_: Mapping[str, str]) -> Result:
    result = _setup_python(runner, with_)
    poetry = result[0] == "success" and with_.get("cache") == "poetry"
    if poetry and not _poetry_env_use(runner, with_):
        return _fail("actions/setup-python: cache: poetry needs poetry, not found in PATH")
    return result


def _setup_python(runner: JobRunner, with_: Mapping[str, str]) -> Result:
    spec = with_.get("python-version", "")
    version_file = with_.get("python-version-file", "")
    if not spec and version_file:
        path = runner.workspace / version_file
        if not path.is_file():
            return _fail(f"actions/setup-python: python-version-file {version_file} not found")
        spec = _version_in_file(path)
    if not spec:
        spec = "3"
    specs = [s.strip() for s in spec.splitlines() if s.strip()]
    if any(s.lower().startswith(("pypy", "graalpy")) for s in specs):
        return _missing(runner, f"actions/setup-python: {spec} is not an installed CPython here")
    program: str | None = None
    versions: list[str] = []
    for one in specs:
        program, versions = find_python(runner, one)
        if program is None:
            kind = " (a free-threaded build: not searched here)" * one.endswith("t")
            source = (
                f" (from {version_file})"
                if version_file and not with_.get("python-version")
                else ""
            )
            return _missing(
                runner,
                f"actions/setup-python: no installed Python satisfies {one!r}{source}{kind}; "
                f"installed: {', '.join(versions) or 'none'}",
            )
    assert program is not None
    version = ".".join(map(str, _version_of(program)))
    venv, why = job_venv(runner, program, version)
    pip_version = with_.get("pip-version", "").strip()
    if venv is not None:  # the job's pip installs go there, not into the user's Python
        if pip_version and not _pip_install(venv, f"pip=={pip_version}"):
            return _fail(
                f"actions/setup-python: pip-version {pip_version}: pip could not install it"
            )
        # after the venv on PATH, the interpreter itself: tools that look for a Python that
        # is not a venv's (uv making a project's `.venv`) find the one set up, as on GitHub
        runner.path_add.append(str(_shim(runner, "python", program, ("python", "python3"))))
        runner.path_add.append(str(venv / "bin"))
        runner.env_ctx["pythonLocation"] = str(venv)
        return _ok(
            f"actions/setup-python: using Python {version} at {program}, in the venv {venv}",
            **{"python-version": version, "python-path": str(venv / "bin" / "python"),
               "cache-hit": "false"},
        )  # fmt: skip
    print(f"##[warning]actions/setup-python: no venv ({why}): steps use {program} itself")
    if pip_version:
        print(f"##[warning]actions/setup-python: pip-version {pip_version}: not installed")
    runner.path_add.append(str(Path(program).parent))  # where pip puts console scripts
    runner.path_add.append(str(_shim(runner, "python", program, ("python", "python3"))))
    runner.env_ctx["pythonLocation"] = str(Path(program).parent.parent)
    return _ok(
        f"actions/setup-python: using Python {version} at {program}",
        **{"python-version": version, "python-path": program, "cache-hit": "false"},
    )


def _poetry_env_use(runner: JobRunner, with_: Mapping[str, str]) -> bool:
    """What setup-python does with `cache: poetry`: `poetry env use` the Python it set up in
    each Poetry project (the folder of a `cache-dependency-path` file, `**/poetry.lock` by
    default), so that `poetry install` makes its venv with it, not with the Python poetry runs
    on; a failure is a warning. False when poetry is not installed (GitHub fails the step)."""
    env = runner.step_env(runner.env_ctx)
    poetry = shutil.which("poetry", path=env["PATH"])
    if poetry is None:
        return False
    python = shutil.which("python", path=env["PATH"]) or "python"
    locks = _paths(runner, with_.get("cache-dependency-path") or "**/poetry.lock")
    for project in dict.fromkeys(lock.parent for lock in locks):
        print(f"actions/setup-python: poetry env use {python} (in {project})", flush=True)
        done = subprocess.run(
            [poetry, "env", "use", python],
            cwd=project,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        print(done.stdout.rstrip(), flush=True)
        if done.returncode:
            print(f"##[warning]actions/setup-python: `poetry env use` exited {done.returncode}")
    return True


def job_venv(
    runner: JobRunner, program: str, version: str, who: str = "actions/setup-python"
) -> tuple[Path | None, str]:
    """The job instance's venv of `program` in the workspace's tool cache, made on its first
    run and reused by the runs after (one per job instance, as each job on GitHub has its own
    machine: jobs running at once never pip install into the same one); (None, why) when the
    interpreter cannot make one (no `venv` module, or no `ensurepip`: Debian's python3
    without python3-venv)."""
    key = _digest(program, 12)
    venv = runner.tool_cache / "python" / safe_name(runner.instance) / f"{version}-{key}" / "venv"
    made = venv / ".pipedeck-made"
    if made.is_file() and _in_place(venv):
        return venv, ""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if made.is_file() and _in_place(venv):  # another job made it meanwhile
            return venv, ""
        shutil.rmtree(venv, ignore_errors=True)  # what an interrupted attempt left
        print(f"{who}: making the venv {venv} (once)", flush=True)
        done = subprocess.run(
            [program, "-m", "venv", str(venv)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            lines = (done.stderr or done.stdout).strip().splitlines()
            return None, lines[-1] if lines else f"venv exited with {done.returncode}"
        if not _pip_install(venv, "pip"):  # a hosted runner's Python has a recent pip
            print("##[warning]actions/setup-python: could not upgrade the venv's pip", flush=True)
        made.write_text(program + "\n")
    return venv, ""


def _in_place(venv: Path) -> bool:
    """Whether the venv's scripts run the venv's Python where it is now. A venv cannot move:
    one made at another path (the repository moved or renamed, or made through the link an
    older pipedeck put in its workspace copy) has scripts naming a Python that is not there,
    and `pip` fails with exit code 127; it is made anew."""
    try:
        with open(venv / "bin" / "pip", "rb") as script:
            head = script.read(1024)  # `#!PYTHON`, or `#!/bin/sh` and `exec PYTHON` (a long path)
    except OSError:
        return False
    return os.fsencode(venv / "bin" / "python") in head


def _pip_install(venv: Path, requirement: str) -> bool:
    """`pip install --upgrade REQUIREMENT` in the venv, its output shown; whether it worked
    (offline: it gives up after one short try)."""
    argv = [str(venv / "bin" / "python"), "-m", "pip", "install", "--upgrade", "--quiet"]
    argv += ["--disable-pip-version-check", "--retries", "0", "--timeout", "15", requirement]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, check=False)
    return done.returncode == 0


def setup_node(runner: JobRunner, with_: Mapping[str, str]) -> Result:
    spec = with_.get("node-version", "")
    if not spec and with_.get("node-version-file"):
        path = runner.workspace / with_["node-version-file"]
        spec = path.read_text().strip() if path.is_file() else ""
    spec = spec or "*"
    if spec in ("lts/*", "latest", "node", "current"):
        spec = "*"
    program, versions = find_interpreter(
        spec if spec != "*" else ">=0",
        ("node",),
        ("~/.nvm/versions/node/*/bin/node",),
        runner.tool_cache / "interpreters.json",  # versions.json: with failed probes
    )
    if program is None:
        return _missing(
            runner,
            f"actions/setup-node: no installed Node.js satisfies {spec!r}; "
            f"installed: {', '.join(versions) or 'none'}",
        )
    runner.path_add.append(str(Path(program).parent))
    version = ".".join(map(str, _version_of(program)))
    return _ok(
        f"actions/setup-node: using Node.js {version} at {program}",
        **{"node-version": f"v{version}"},
    )


def setup_uv(
    runner: JobRunner, with_: Mapping[str, str], action: str = "astral-sh/setup-uv"
) -> Result:
    """The installed uv, put on PATH; `python-version` as `UV_PYTHON` (the installed
    interpreter that satisfies it, when there is one); `activate-environment` makes (or keeps)
    `.venv` in the working directory and activates it, as on GitHub."""
    found, _ = find_interpreter(
        ">=0",
        ("uv",),
        ("~/.local/bin/uv", "~/.cargo/bin/uv"),
        runner.tool_cache / "interpreters.json",
    )
    if found is None:
        return _fail(
            f"{action}: uv is not installed here (searched PATH, ~/.local/bin, ~/.cargo/bin); "
            "install it as https://docs.astral.sh/uv/getting-started/installation/ says "
            "(`curl -LsSf https://astral.sh/uv/install.sh | sh`, or `pipx install uv`)"
        )
    version = ".".join(map(str, _version_of(found)))
    wanted = with_.get("version", "").strip()
    if wanted and wanted != "latest" and not satisfies(_version_of(found), wanted):
        print(f"##[warning]{action}: version {wanted} wanted, uv {version} used")
    runner.path_add.append(str(Path(found).parent))
    # `uv tool install` goes to the tool cache (its bin on PATH, as setup-uv puts it there),
    # never to the user's ~/.local/bin, where it would replace their own tox or ruff
    tools = runner.tool_cache / "uv-tools" / safe_name(runner.instance)
    runner.env_ctx["UV_TOOL_DIR"] = with_.get("tool-dir") or str(tools)
    runner.env_ctx["UV_TOOL_BIN_DIR"] = with_.get("tool-bin-dir") or str(tools / "bin")
    runner.path_add.append(runner.env_ctx["UV_TOOL_BIN_DIR"])
    spec = with_.get("python-version", "").strip()
    if spec:  # an installed interpreter, as setup-python finds them, rather than a download
        python, versions = find_python(runner, spec)
        if python is None:
            installed = ", ".join(versions) or "none"
            print(f"##[warning]{action}: no installed Python satisfies {spec!r} "
                  f"(installed: {installed}): uv will look for one itself")  # fmt: skip
        runner.env_ctx["UV_PYTHON"] = python or spec
    if with_.get("activate-environment", "").lower() == "true":
        venv = runner.workspace / with_.get("working-directory", "") / ".venv"
        argv = [found, "venv", "--allow-existing", "--quiet", str(venv)]
        argv += ["--python", runner.env_ctx["UV_PYTHON"]] if spec else []
        if subprocess.run(argv, cwd=runner.workspace, stdin=subprocess.DEVNULL).returncode:
            return _fail(f"{action}: `uv venv {venv}` failed")
        runner.path_add.append(str(venv / "bin"))
        runner.env_ctx["VIRTUAL_ENV"] = str(venv)
    return _ok(
        f"{action}: using uv {version} at {found}",
        **{
            "uv-version": version,
            "uv-path": found,
            "uvx-path": str(Path(found).with_name("uvx")),
            "cache-hit": "false",
        },
    )


# -- cache and artifacts ---------------------------------------------------------------------


def _paths(runner: JobRunner, text: str) -> list[Path]:
    """The files and directories a multi-line `path:` names (globs, `~`, `!` exclusions)."""
    include, exclude = [], set()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        negate = line.startswith("!")
        pattern = os.path.expanduser(line[1:] if negate else line)
        if not os.path.isabs(pattern):
            pattern = str(runner.workspace / pattern)
        matches = [Path(p) for p in glob.glob(pattern, recursive=True)]
        if negate:
            exclude.update(matches)
        else:
            include.extend(matches)
    return [p for p in dict.fromkeys(include) if p not in exclude]


def _cache_dir(runner: JobRunner) -> Path:
    folder = runner.state_root / "cache"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _cache_index(folder: Path) -> dict[str, Any]:
    try:
        index: dict[str, Any] = json.loads((folder / "index.json").read_text())
        return index
    except (OSError, ValueError):
        return {}


def cache(runner: JobRunner, with_: Mapping[str, str]) -> Result:
    key = with_.get("key", "")
    if not key or not with_.get("path"):
        return _fail("actions/cache: 'key' and 'path' are required")
    folder = _cache_dir(runner)
    index = _cache_index(folder)
    restore_keys = [k.strip() for k in with_.get("restore-keys", "").splitlines() if k.strip()]
    matched = key if key in index else None
    if matched is None:
        for prefix in restore_keys:
            hits = sorted((v["time"], k) for k, v in index.items() if k.startswith(prefix))
            if hits:
                matched = hits[-1][1]
                break
    if matched is not None:
        import tarfile

        with tarfile.open(folder / index[matched]["file"]) as archive:
            archive.extractall("/", filter="fully_trusted")
        print(f"actions/cache: restored from key {matched}", flush=True)
    else:
        print(f"actions/cache: no cache for key {key}", flush=True)
    hit = matched == key
    if not hit:
        runner.post.append(lambda: _save_cache(runner, key, with_["path"]))
    return (
        "success",
        {"cache-hit": "true" if hit else "false", "cache-matched-key": matched or ""},
        0,
    )


def _save_cache(runner: JobRunner, key: str, paths: str) -> None:
    if runner.failed:
        return
    folder = _cache_dir(runner)
    found = _paths(runner, paths)
    if not found:
        print(f"actions/cache: nothing to save for key {key}", flush=True)
        return
    name = _digest(key, 24) + ".tar"
    import tarfile

    with tarfile.open(folder / name, "w") as archive:
        for path in found:
            archive.add(path, arcname=str(path.resolve()).lstrip("/"))
    index = _cache_index(folder)
    index[key] = {"file": name, "time": time.time()}
    (folder / "index.json").write_text(json.dumps(index))
    print(f"actions/cache: saved key {key}", flush=True)


def _artifacts(runner: JobRunner) -> Path:
    return runner.state / "artifacts"


def upload_artifact(runner: JobRunner, with_: Mapping[str, str]) -> Result:
    name = with_.get("name") or "artifact"
    found = [p for p in _paths(runner, with_.get("path", "")) if p.exists()]
    root = Path(os.path.commonpath([p if p.is_dir() else p.parent for p in found] or [Path("/")]))
    files = [
        file
        for path in found
        for file in ([f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path])
    ]
    hidden = {f for f in files if any(part.startswith(".") for part in f.relative_to(root).parts)}
    why = ""
    if hidden and with_.get("include-hidden-files", "false").lower() != "true":
        files = [f for f in files if f not in hidden]  # as upload-artifact v4.4+ does
        why = f" ({len(hidden)} hidden file(s) left out: `include-hidden-files: true` keeps them)"
    if not files:
        missing = f"actions/upload-artifact: no files for {with_.get('path')!r}{why}"
        if with_.get("if-no-files-found", "warn") == "error":
            return _fail(missing)
        return _ok(f"##[warning]{missing}")
    target = _artifacts(runner) / name
    kept: dict[str, dict[str, Any]] = {}
    for file in files:
        dest = target / file.relative_to(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, dest)
        kept[dest.relative_to(target).as_posix()] = _kept(dest, runner.instance)
    _record_upload(runner.state / UPLOADS, name, kept)
    return _ok(
        f"actions/upload-artifact: {len(kept)} file(s) as {name!r}",
        **{"artifact-id": name, "artifact-url": target.as_uri()},
    )


UPLOADS = "uploads"  # in a run's state folder: a manifest per uploaded artifact (NAME.json)


def _kept(file: Path, job: str) -> dict[str, Any]:
    """What the manifest says of an uploaded file: its sha256, size and mtime, the job."""
    import hashlib

    with open(file, "rb") as data:
        digest = hashlib.file_digest(data, "sha256").hexdigest()
    st = file.stat()
    return {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "job": job}


def _record_upload(folder: Path, name: str, files: Mapping[str, Any]) -> None:
    """Add an upload's files to its artifact's manifest (jobs may upload to one name)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / f"{safe_name(name)}.json"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            body = json.loads(manifest.read_text())
        except (OSError, ValueError):
            body = {"name": name, "files": {}}
        body["files"].update(files)
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=1))
        tmp.replace(manifest)


def uploaded(state_dir: Path, run_id: str) -> list[tuple[Path, dict[str, Any]]]:
    """The artifacts that `actions/upload-artifact` kept in a run: (its folder, its manifest:
    `name` and `files`, each file's sha256, size, mtime_ns and job)."""
    run = state_dir / "gha" / run_id
    found = []
    for manifest in sorted((run / UPLOADS).glob("*.json")):
        try:
            body = json.loads(manifest.read_text())
            found.append((run / "artifacts" / body["name"], body))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half-written: not an artifact
    return found


def download_artifact(runner: JobRunner, with_: Mapping[str, str]) -> Result:
    """By `name` into `path`; else every artifact (or those matching `pattern`) into
    `path/NAME`, or all into `path` with `merge-multiple`."""
    import fnmatch

    root = _artifacts(runner)
    available = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    name, pattern = with_.get("name", ""), with_.get("pattern", "")
    wanted = [name] if name else [a for a in available if fnmatch.fnmatchcase(a, pattern or "*")]
    merge = bool(name) or with_.get("merge-multiple", "").lower() == "true"
    dest = runner.workspace / with_.get("path", "")
    for one in wanted:
        if one not in available:
            return _fail(
                f"actions/download-artifact: no artifact {one!r} in this run "
                f"(uploaded: {', '.join(available) or 'none'}){_not_run_here(runner)}"
            )
        shutil.copytree(root / one, dest if merge else dest / one, dirs_exist_ok=True)
    if pattern and not wanted:
        print(f"##[warning]actions/download-artifact: no artifact matches {pattern!r}")
    return _ok(
        f"actions/download-artifact: {', '.join(wanted) or 'nothing'} to {dest}",
        **{"download-path": str(dest)},
    )


def _not_run_here(runner: JobRunner) -> str:
    """The steps of this run's jobs that were skipped as they cannot run here (one of them may
    have made what is missing), as the end of a message."""
    folder = runner.state / "jobs"
    skipped = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text())
            skipped += [f"{data['instance']}: {step}" for step in data.get("unavailable", [])]
    if not skipped:
        return ""
    return "; steps that could not run here, which may have made it: " + "; ".join(skipped)


# -- local actions ---------------------------------------------------------------------------


def local_action(
    runner: JobRunner,
    folder: Path,
    with_: Mapping[str, str],
    env: Mapping[str, str],
    timeout: float | None,
) -> Result:
    """A composite or node action from the repository (`uses: ./path`)."""
    try:
        import yaml  # present wherever pipedeck is installed; maybe not on an SSH host
    except ImportError:
        raise ValueError(
            f"{folder.name}: reading action.yml needs PyYAML for this python"
        ) from None
    for name in ("action.yml", "action.yaml"):
        if (folder / name).is_file():
            meta = yaml.safe_load((folder / name).read_text()) or {}
            break
    else:
        raise ValueError(f"{folder}: no action.yml")
    inputs = {}
    for key, spec in (meta.get("inputs") or {}).items():
        default = spec.get("default", "") if isinstance(spec, dict) else ""
        inputs[key] = with_.get(key, expr.to_str(default))
    runs = meta.get("runs") or {}
    using = str(runs.get("using", ""))
    if using == "composite":
        return _composite(runner, runs.get("steps") or [], inputs, meta.get("outputs") or {}, env)
    if using.startswith("node"):
        if shutil.which("node") is None:
            raise ValueError(f"{folder.name}: a {using} action needs node, which is not installed")
        action_env = {
            **env,
            **{f"INPUT_{k.upper().replace(' ', '_')}": v for k, v in inputs.items()},
        }
        return runner.process(
            ["node", str(folder / runs["main"])], action_env, runner.workspace, timeout
        )
    raise ValueError(f"{folder.name}: actions using {using!r} cannot run here")


def _composite(
    runner: JobRunner,
    steps: list[Any],
    inputs: Mapping[str, str],
    outputs: Mapping[str, Any],
    env: Mapping[str, str],
) -> Result:
    """A composite action's steps, in order, with their own `steps` and `inputs` contexts."""
    own: dict[str, Any] = {}
    outcome: str = "success"
    before = dict(runner.env_ctx)
    for step in steps:
        ctx = runner.contexts({"inputs": dict(inputs), "steps": own})
        if not expr.condition(
            step.get("if"),
            expr.Context(ctx.values, expr.Status(failed=outcome != "success"), ctx.workspace),
        ):
            continue
        # what the action's earlier steps set (GITHUB_ENV, setup-uv's UV_TOOL_BIN_DIR...)
        step_env = {**env, **{k: v for k, v in runner.env_ctx.items() if before.get(k) != v}}
        for key, value in (step.get("env") or {}).items():
            step_env[key] = expr.to_str(expr.interpolate(str(value), ctx))
        if "run" in step:
            script = expr.to_str(expr.interpolate(str(step["run"]), ctx))
            result, outs, _ = runner.script(
                script, step.get("shell"), step.get("working-directory"), step_env, None
            )
        else:
            with_ = {
                k: expr.to_str(expr.interpolate(str(v), ctx))
                for k, v in (step.get("with") or {}).items()
            }
            result, outs, _ = run_action(runner, str(step["uses"]), with_, step_env, None)
        if "id" in step:
            own[str(step["id"])] = {"outputs": outs, "outcome": result, "conclusion": result}
        if result != "success" and not step.get("continue-on-error"):
            outcome = result
    ctx = runner.contexts({"inputs": dict(inputs), "steps": own})
    values = {
        name: expr.to_str(expr.interpolate(str(spec.get("value", "")), ctx))
        for name, spec in outputs.items()
        if isinstance(spec, dict)
    }
    return outcome, values, 0 if outcome == "success" else 1
