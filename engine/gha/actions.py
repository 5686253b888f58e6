"""`uses:` steps: the common actions done natively, local composite and node actions.

Natively: actions/checkout (the workspace is the checkout; `path:` gets a copy),
actions/setup-python and actions/setup-node (an installed interpreter that satisfies the version),
actions/cache (a local cache under .pipedeck/gha/cache), actions/upload-artifact and
download-artifact (under the run's .pipedeck/gha/RUN_ID/artifacts).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.gha import expr

if TYPE_CHECKING:
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
    native = {
        "actions/checkout": checkout,
        "actions/setup-python": setup_python,
        "actions/setup-node": setup_node,
        "actions/cache": cache,
        "actions/upload-artifact": upload_artifact,
        "actions/download-artifact": download_artifact,
    }.get(name)
    if native is not None:
        return native(runner, with_)
    if uses.startswith("./"):
        return local_action(runner, runner.workspace / uses, with_, env, timeout)
    raise ValueError(f"{uses}: not available here")


def _ok(message: str, **outputs: str) -> Result:
    print(message, flush=True)
    return "success", dict(outputs), 0


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
    return _parse(done.stdout + done.stderr)


def find_interpreter(
    spec: str, names: tuple[str, ...], extra: tuple[str, ...], cache: Path | None = None
) -> tuple[str | None, list[str]]:
    """The newest interpreter satisfying `spec`, and every version found (for the message)."""
    found = [(v, p) for p in _candidates(names, extra) if (v := _version_of(p, cache))]
    found.sort(reverse=True)
    versions = sorted({".".join(map(str, v)) for v, _ in found})
    for version, path in found:
        if satisfies(version, spec):
            return path, versions
    return None, versions


def _shim(runner: JobRunner, kind: str, program: str, names: tuple[str, ...]) -> Path:
    """A directory on PATH where each of `names` runs `program`."""
    folder = runner.tool_cache / kind / hashlib.sha256(program.encode()).hexdigest()[:12] / "bin"
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


def setup_python(runner: JobRunner, with_: Mapping[str, str]) -> Result:
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
        return _fail(f"actions/setup-python: {spec} is not an installed CPython here")
    program: str | None = None
    versions: list[str] = []
    for one in specs:
        program, versions = find_interpreter(
            one,
            ("python3", "python3.[0-9]", "python3.[0-9][0-9]"),
            (
                "~/.pyenv/versions/*/bin/python3",
                "~/.local/share/uv/python/*/bin/python3",
                "/opt/python*/bin/python3",
            ),
            runner.tool_cache / "versions.json",
        )
        if program is None:
            kind = " (a free-threaded build: not searched here)" * one.endswith("t")
            return _fail(
                f"actions/setup-python: no installed Python satisfies {one!r}{kind}; "
                f"installed: {', '.join(versions) or 'none'}"
            )
    assert program is not None
    runner.path_add.append(str(Path(program).parent))  # where pip puts console scripts
    folder = _shim(runner, "python", program, ("python", "python3"))
    runner.path_add.append(str(folder))
    version = ".".join(map(str, _version_of(program)))
    runner.env_ctx["pythonLocation"] = str(Path(program).parent.parent)
    return _ok(
        f"actions/setup-python: using Python {version} at {program}",
        **{"python-version": version, "python-path": program, "cache-hit": "false"},
    )


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
        runner.tool_cache / "versions.json",
    )
    if program is None:
        return _fail(
            f"actions/setup-node: no installed Node.js satisfies {spec!r}; "
            f"installed: {', '.join(versions) or 'none'}"
        )
    runner.path_add.append(str(Path(program).parent))
    version = ".".join(map(str, _version_of(program)))
    return _ok(
        f"actions/setup-node: using Node.js {version} at {program}",
        **{"node-version": f"v{version}"},
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
    folder = runner.workspace / ".pipedeck" / "gha" / "cache"
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
    name = hashlib.sha256(key.encode()).hexdigest()[:24] + ".tar"
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
    if not found:
        if with_.get("if-no-files-found", "warn") == "error":
            return _fail(f"actions/upload-artifact: no files for {with_.get('path')!r}")
        return _ok(f"##[warning]actions/upload-artifact: no files for {with_.get('path')!r}")
    target = _artifacts(runner) / name
    root = Path(os.path.commonpath([p if p.is_dir() else p.parent for p in found]))
    count = 0
    for path in found:
        files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
        for file in files:
            dest = target / file.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, dest)
            count += 1
    return _ok(
        f"actions/upload-artifact: {count} file(s) as {name!r}",
        **{"artifact-id": name, "artifact-url": target.as_uri()},
    )


def download_artifact(runner: JobRunner, with_: Mapping[str, str]) -> Result:
    names = [with_["name"]] if with_.get("name") else None
    root = _artifacts(runner)
    available = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    wanted = names if names is not None else available
    dest = runner.workspace / with_.get("path", "")
    for name in wanted:
        if name not in available:
            return _fail(
                f"actions/download-artifact: no artifact {name!r} in this run "
                f"(uploaded: {', '.join(available) or 'none'})"
            )
        target = dest if names is not None else dest / name
        shutil.copytree(root / name, target, dirs_exist_ok=True)
    return _ok(
        f"actions/download-artifact: {', '.join(wanted) or 'nothing'} to {dest}",
        **{"download-path": str(dest)},
    )


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
    for step in steps:
        ctx = runner.contexts({"inputs": dict(inputs), "steps": own})
        if not expr.condition(
            step.get("if"),
            expr.Context(ctx.values, expr.Status(failed=outcome != "success"), ctx.workspace),
        ):
            continue
        step_env = {**env}
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
