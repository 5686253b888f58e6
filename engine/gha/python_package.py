"""`hynek/build-and-inspect-python-package` done natively (pytest's and attrs' CI build their
package with it, and every test job downloads what it uploads): as the action does, the sdist and
wheel are built with PyPA's `build` (SOURCE_DATE_EPOCH from the last commit), uploaded as the
artifact `Packages`, checked with `check-wheel-contents` and `twine check --strict`, and the
sdist's PKG-INFO gives the outputs (name, version, the Python versions its classifiers name).
The tools are installed from the package index into a venv of the job in the tool cache."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from engine.gha.actions import _fail, _ok, find_python, job_venv, upload_artifact

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from engine.gha.actions import Result
    from engine.gha.runner import JobRunner

NAME = "hynek/build-and-inspect-python-package"
TOOLS = ("build", "twine", "check-wheel-contents")
_CLASSIFIER_RE = re.compile(r"(?m)^Classifier: Programming Language :: Python :: (\d+\.\d+)\s*$")


def build_and_inspect(runner: JobRunner, with_: Mapping[str, str]) -> Result:
    skip_wheel = with_.get("skip-wheel", "false").lower() == "true"
    suffix = with_.get("upload-name-suffix", "")
    project = runner.workspace / with_.get("path", ".")
    if not project.is_dir():
        return _fail(f"{NAME}: path {with_.get('path')!r} is not a folder of the workspace")
    python, versions = find_python(runner, "3")
    if python is None:
        return _fail(f"{NAME}: no installed Python 3; installed: {', '.join(versions) or 'none'}")
    venv, why = job_venv(runner, python, "baipp", NAME)
    if venv is None:
        return _fail(f"{NAME}: cannot make the tools' venv ({why})")
    tools = venv / "bin"
    if not (tools / "check-wheel-contents").exists():
        argv = [str(tools / "python"), "-m", "pip", "install", "--quiet", *TOOLS]
        if _step(runner, argv, runner.workspace)[0] != "success":
            return _fail(f"{NAME}: could not install {', '.join(TOOLS)}")
    dist = runner.temp / "baipp" / "dist"
    if dist.exists():
        import shutil

        shutil.rmtree(dist)
    argv = [str(tools / "python"), "-m", "build", "--outdir", str(dist)]
    outcome, _, code = _step(runner, [*argv, *(["--sdist"] * skip_wheel)], project)
    if outcome != "success":
        return outcome, {}, code
    built = sorted(dist.iterdir())
    print("\n".join(f"{p.name} ({p.stat().st_size} bytes)" for p in built), flush=True)
    uploaded = upload_artifact(runner, {"name": f"Packages{suffix}", "path": f"{dist}/*"})
    if uploaded[0] != "success":
        return uploaded
    wheels = [str(p) for p in built if p.suffix == ".whl"]
    for check in (
        [str(tools / "check-wheel-contents"), *wheels] if wheels else [],
        [str(tools / "python"), "-m", "twine", "check", "--strict", *map(str, built)],
    ):
        if check and (result := _step(runner, check, project))[0] != "success":
            return result
    metadata = _pkg_info(next((p for p in built if p.name.endswith(".tar.gz")), None))
    pythons = _CLASSIFIER_RE.findall(metadata)
    return _ok(
        f"{NAME}: built {', '.join(p.name for p in built)} as 'Packages{suffix}'",
        **{
            "dist": str(dist),
            "artifact-name": f"Packages{suffix}",
            "package_name": _field(metadata, "Name"),
            "package_version": _field(metadata, "Version"),
            "supported_python_classifiers_json_array": json.dumps(pythons),
            "supported_python_classifiers_json_job_matrix_value": json.dumps(
                {"python-version": pythons}
            ),
        },
    )


def _step(runner: JobRunner, argv: list[str], cwd: Path) -> Result:
    """Run one of the action's commands as a step's process (output shown, cancellable)."""
    print(f"[command]{' '.join(argv)}", flush=True)
    env = dict(runner.env_ctx)
    done = subprocess.run(
        ["git", "log", "-1", "--pretty=%ct"], cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode == 0 and done.stdout.strip():  # not in a checkout: the build's own time
        env["SOURCE_DATE_EPOCH"] = done.stdout.strip()
    return runner.process(argv, env, cwd, None)


def _pkg_info(sdist: Path | None) -> str:
    """The sdist's PKG-INFO (top folder), or "" without one."""
    if sdist is None:
        return ""
    import tarfile

    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            if member.name.count("/") == 1 and member.name.endswith("/PKG-INFO"):
                handle = archive.extractfile(member)
                return handle.read().decode("utf-8", "replace") if handle else ""
    return ""


def _field(metadata: str, name: str) -> str:
    match = re.search(rf"(?m)^{name}: (.*)$", metadata)
    return match[1].strip() if match else ""
