"""Load a GitHub Actions workflow: YAML nodes (with marks) -> the engine's `Pipeline`.

Jobs become stages, matrix combinations stage instances (`test[python=3.12,os=ubuntu-latest]`),
`needs` the same needs. Each stage's command runs `engine.gha.runner` on the job's resolved
description (JSON in a here-document), which runs the steps. What cannot run here is a warning
(an error with `strict`), and the job or step is skipped at run time with the reason.

The YAML machinery and the FILE:LINE:COL problems are `engine.loader`'s; key text is read from
the source, so `on:` is the string "on", not YAML 1.1's `True`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

import engine
from engine import graph
from engine.gha import expr
from engine.gha.commands import safe_name
from engine.gha.context import github_context, label_arch, runner_arch
from engine.gha.matrix import expand_matrix, instance_id
from engine.gha.options import workflow_root
from engine.loader import (
    BOOL,
    FLOAT,
    INT,
    MAX_INSTANCES,
    NULL,
    ConfigError,
    Problem,
    _Checker,
    _describe,
    _did_you_mean,
    _read,
    _scalar,
)
from engine.schema import Key
from engine.spec import LOCAL, Host, Pipeline, Stage

_ANY = Key("any", "")
TOP_KEYS = dict.fromkeys(
    ("name", "run-name", "on", "env", "defaults", "jobs", "concurrency", "permissions"), _ANY
)
JOB_KEYS = dict.fromkeys(
    (
        "name",
        "needs",
        "runs-on",
        "if",
        "strategy",
        "env",
        "defaults",
        "steps",
        "outputs",
        "timeout-minutes",
        "continue-on-error",
        "services",
        "container",
        "concurrency",
        "permissions",
        "environment",
        "uses",
        "with",
        "secrets",
    ),
    _ANY,
)
STEP_KEYS = dict.fromkeys(
    (
        "id",
        "name",
        "if",
        "uses",
        "run",
        "shell",
        "with",
        "env",
        "working-directory",
        "continue-on-error",
        "timeout-minutes",
    ),
    _ANY,
)
STRATEGY_KEYS = dict.fromkeys(("matrix", "fail-fast", "max-parallel"), _ANY)
# What each key's value may be: map(ping), list, str(ing), num(ber), bool(ean); a string holding
# `${{ }}` is always allowed where a number or boolean is expected.
_MAP, _LIST, _STR, _NUM, _BOOL = "a mapping", "a list", "a string", "a number", "true or false"
TOP_KINDS = {"env": (_MAP,), "defaults": (_MAP,), "name": (_STR,), "run-name": (_STR,)}
JOB_KINDS = {
    "name": (_STR,),
    "needs": (_STR, _LIST),
    "runs-on": (_STR, _LIST, _MAP),
    "if": (_STR, _BOOL, _NUM),
    "strategy": (_MAP,),
    "env": (_MAP,),
    "defaults": (_MAP,),
    "steps": (_LIST,),
    "outputs": (_MAP,),
    "timeout-minutes": (_NUM,),
    "continue-on-error": (_BOOL,),
    "services": (_MAP,),
    "container": (_STR, _MAP),
    "uses": (_STR,),
    "with": (_MAP,),
    "secrets": (_STR, _MAP),
}
STEP_KINDS = {
    "id": (_STR,),
    "name": (_STR,),
    "if": (_STR, _BOOL, _NUM),
    "uses": (_STR,),
    "run": (_STR,),
    "shell": (_STR,),
    "with": (_MAP,),
    "env": (_MAP,),
    "working-directory": (_STR,),
    "continue-on-error": (_BOOL,),
    "timeout-minutes": (_NUM,),
}
# A job's grace between pipedeck's SIGTERM and SIGKILL: the runner gives the running step
# STEP_GRACE (5 s) to end, then runs its always()/cancelled() steps in what is left.
JOB_KILL_GRACE = 15.0
NOTED_KEYS = ("concurrency", "permissions", "environment")
NATIVE_ACTIONS = (
    "actions/checkout",
    "actions/setup-python",
    "actions/setup-node",
    "actions/cache",
    "actions/upload-artifact",
    "actions/download-artifact",
    "astral-sh/setup-uv",
    "hynek/setup-cached-uv",
    "hynek/build-and-inspect-python-package",
    "re-actors/alls-green",
)
RUNNER_MODULES = (  # what `engine.gha.runner` imports, shipped to SSH hosts
    "__init__.py",
    "artifacts.py",  # PIPEDECK_KEEP_RUNS, with what it imports
    "errors.py",
    "events.py",
    "fserrors.py",
    "globs.py",
    "logs.py",
    "mask.py",
    "status.py",
    "gha/__init__.py",
    "gha/actions.py",
    "gha/alls_green.py",
    "gha/commands.py",
    "gha/context.py",
    "gha/expr.py",
    "gha/matrix.py",
    "gha/python_package.py",
    "gha/runner.py",
)
DEFAULT_TIMEOUT_MINUTES = 360
MAX_MATRIX = 256  # GitHub's limit of jobs one matrix makes
MAX_CALL_DEPTH = 4  # reusable workflows calling reusable workflows, as GitHub's limit
_JOB_ID_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_LOST_ZERO_RE = re.compile(r"[0-9]+\.[0-9]*[1-9]0+")  # 3.10: read as 3.1
_SKIP_LABELS = (("macos", "macOS"), ("windows", "Windows"))


def _unavailable(label: str) -> str:
    """Why a job with this runs-on label cannot run on this machine, or ""."""
    for prefix, system in _SKIP_LABELS:
        if label.lower().startswith(prefix):
            return f"runs-on {label}: a {system} runner is not available here"
    wanted, here = label_arch(label), runner_arch()
    if wanted and wanted != here:
        return f"runs-on {label}: an {wanted} runner is not available here (this one is {here})"
    return ""


@dataclass(frozen=True)
class Options:
    """What the command line adds: the event, inputs, runner label -> host, strictness."""

    event: str = "push"
    event_file: str | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    runners: Mapping[str, str] = field(default_factory=dict)
    strict: bool = False
    # where local jobs run: "copy" (of the repository, engine.gha.workspace) or "here" (in
    # the working tree); None: a copy in a git checkout with a commit, else here
    workspace: str | None = None


@dataclass(frozen=True)
class Workflow:
    """A loaded workflow: the pipeline, and warnings/notes about what runs differently here."""

    pipeline: Pipeline
    warnings: tuple[Problem, ...] = ()


def load_workflow(
    path: str | os.PathLike[str],
    options: Options | None = None,
    environ: Mapping[str, str] | None = None,
) -> Workflow:
    """Load and check a workflow file, or raise `ConfigError` with every problem."""
    options = options or Options()
    file = os.fspath(path)
    text = _read(file)
    checker = _WorkflowChecker(file, text, options)
    root = checker.compose()
    pipeline = None
    if root is not None:
        pipeline = checker.pipeline_of(root, Path(os.path.abspath(file)), environ)
    if options.strict:
        checker.problems.extend(w for w in checker.warnings if w.message.startswith("warning"))
    if checker.problems or pipeline is None:
        raise ConfigError(checker.problems)
    return Workflow(pipeline, tuple(sorted(set(checker.warnings))))


def _package_root(module: Any) -> str:
    """The directory a package is imported from (its `sys.path` entry)."""
    return str(Path(module.__file__).resolve().parent.parent)


# The local job runner's start: `-S` skips `site` (a third of the interpreter's start-up, with
# the .pth files of editable installs); its path is only pipedeck's and PyYAML's (composite
# actions). Imported, not run with `-m`: a main module is compiled anew on every start.
_RUNNER_PATH = sorted({_package_root(engine), _package_root(yaml)})
_LOCAL_START = shlex.quote(
    f"import sys; sys.path[:0] = {json.dumps(_RUNNER_PATH)}; "
    "from engine.gha.runner import main; sys.exit(main())"
)


_JOB_DOC = "<<'PIPEDECK_GHA_JOB'\n"


def runner_command(job: Mapping[str, Any], remote: bool = False) -> str:
    """The stage command: the job runner reading the job's description from a here-document.
    On an SSH host the runner's code travels with it (a zip of its modules, unpacked once into
    the remote workspace's .pipedeck/), run by that host's `python3`."""
    data = json.dumps(job, ensure_ascii=True, separators=(",", ":"))
    job_doc = f"{_JOB_DOC}{data}\nPIPEDECK_GHA_JOB\n"
    if not remote:
        return f"exec '{sys.executable}' -S -c {_LOCAL_START} {job_doc}"
    name, code = runner_zip()
    target = f".pipedeck/gha/{name}"
    return (
        f"if [ ! -f {target} ]; then mkdir -p .pipedeck/gha && "
        f"base64 -d > {target}.$$ <<'PIPEDECK_GHA_CODE' && mv {target}.$$ {target}\n"
        f"{code}\nPIPEDECK_GHA_CODE\nfi\n"
        f"python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); "
        f"from engine.gha.runner import main; sys.exit(main())' {target} {job_doc}"
    )


def job_description(command: str) -> dict[str, Any] | None:
    """The job description in a stage command made by `runner_command`; None in any other
    command (a stage of a pipedeck file that prints step markers itself)."""
    _, found, tail = command.rpartition(_JOB_DOC)
    if not found:
        return None
    job: dict[str, Any] = json.loads(tail.partition("\nPIPEDECK_GHA_JOB\n")[0])
    return job


@lru_cache(maxsize=1)
def runner_zip() -> tuple[str, str]:
    """(file name, base64 text) of a zip of the modules the job runner imports."""
    import base64  # only for SSH hosts: not on the local start's path
    import hashlib
    import io
    import zipfile

    package = Path(__file__).resolve().parent.parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for module in RUNNER_MODULES:
            info = zipfile.ZipInfo(f"engine/{module}", date_time=(2020, 1, 1, 0, 0, 0))
            archive.writestr(info, (package / module).read_bytes(), zipfile.ZIP_DEFLATED)
    data = buffer.getvalue()
    name = f"runner-{hashlib.sha256(data).hexdigest()[:16]}.zip"
    return name, base64.encodebytes(data).decode()


class _WorkflowChecker(_Checker):
    """engine.loader's checker, walking a workflow instead of a pipeline file."""

    def __init__(self, file: str, text: str, options: Options) -> None:
        super().__init__(file, text)
        self.options = options
        self.workspace = options.workspace or "here"  # decided when the workflow is read
        self.warnings: list[Problem] = []
        self.secret_names: set[str] = set()
        self.repo_root = Path(file).parent
        self.static: Mapping[str, Any] = {}
        self.top: dict[str, Any] = {}
        self.depth = 0  # of reusable workflow calls
        self.root_hosts: dict[str, Host] | None = None  # of a pipedeck.yaml beside .github

    def warn(self, node: Node, message: str, note: bool = False) -> None:
        mark = node.start_mark
        kind = "note" if note else "warning"
        self.warnings.append(
            Problem(self.file, mark.line + 1, mark.column + 1, f"{kind}: {message}")
        )

    # -- plain values

    def plain(self, node: Node) -> Any:
        """The node as Python data: typed scalars, lists, dicts (merge keys applied)."""
        if isinstance(node, ScalarNode):
            if node.tag == NULL:
                return None
            if node.tag == FLOAT and _LOST_ZERO_RE.fullmatch(node.value):
                self.warn(
                    node,
                    f"{node.value} is the number {float(node.value):g} (YAML reads it so, as GitHub"
                    f" does): write '{node.value}' if the text is meant, a Python version say",
                    note=True,  # not something that cannot run here: --strict leaves it be
                )
            if node.tag in (BOOL, INT, FLOAT):
                value = _scalar(node)
                return float(value) if isinstance(value, int) and node.tag == INT else value
            return node.value
        if isinstance(node, SequenceNode):
            return [self.plain(item) for item in node.value]
        items = self.entries(node, "value") or {}
        return {k: self.plain(v) for k, (_, v) in items.items()}

    def kind(self, node: Node, kinds: tuple[str, ...], path: str) -> bool:
        """Whether a value is of one of `kinds`; reports it when not."""
        if isinstance(node, MappingNode):
            ok = _MAP in kinds
        elif isinstance(node, SequenceNode):
            ok = _LIST in kinds
        elif node.tag == BOOL:
            ok = _BOOL in kinds
        elif node.tag in (INT, FLOAT):
            ok = _NUM in kinds or _STR in kinds
        elif node.tag == NULL:
            ok = False
        else:
            ok = _STR in kinds or ("${{" in node.value and (_NUM in kinds or _BOOL in kinds))
        if not ok:
            self.report(node, f"{path}: expected {' or '.join(kinds)}, got {_describe(node)}")
        return ok

    def check_expressions(self, node: Node, path: str, condition: bool = False) -> None:
        """Report each bad `${{ }}` or unknown context in the strings under `node`."""
        if isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                self.check_expressions(item, f"{path}[{i}]")
            return
        if isinstance(node, MappingNode):
            for key, value in node.value:
                self.check_expressions(value, f"{path}.{key.value}")
            return
        if not isinstance(node, ScalarNode) or node.tag != "tag:yaml.org,2002:str":
            return
        text = node.value
        if not condition and "${{" not in text:
            return
        try:
            if condition:
                tree = expr.condition_tree(text)
                trees = [tree] if tree[0] != "interp" else []
                if tree[0] == "interp":
                    trees = [p.tree for p in expr.pieces(text.strip()) if p.tree is not None]
            else:
                trees = [p.tree for p in expr.pieces(text) if p.tree is not None]
        except expr.ExprError as err:
            self.report_at(node, err.pos, f"{path}: bad expression: {err.message}")
            return
        for tree in trees:
            for name, pos in expr.references(tree):
                if name.lower() not in expr.CONTEXTS:
                    self.report_at(
                        node,
                        pos,
                        f"{path}: unknown context {name!r}"
                        + _did_you_mean(name.lower(), expr.CONTEXTS),
                    )
            if "secrets" in text.lower():
                self.collect_secrets(tree)

    def collect_secrets(self, tree: expr.Node) -> None:
        if tree[0] == "prop" and tree[1][0] == "ctx" and tree[1][1].lower() == "secrets":
            self.secret_names.add(tree[2])
        for child in expr._children(tree):
            self.collect_secrets(child)

    def report_at(self, node: ScalarNode, offset: int, message: str) -> None:
        """A problem at a character of a scalar (exact for one-line plain and quoted ones)."""
        mark = node.start_mark
        one_line = "\n" not in self.text[mark.index : node.end_mark.index]
        if one_line and node.style in (None, "", "'", '"'):
            self.report_index(mark.index + offset + (1 if node.style else 0), message)
        else:
            self.report(node, message)

    # -- the workflow

    def pipeline_of(
        self, root: Node, path: Path, environ: Mapping[str, str] | None
    ) -> Pipeline | None:
        self.repo_root = workflow_root(path.parent)
        top = self.section(root, TOP_KEYS, "", "the workflow")
        if top is None:
            return None
        github = github_context(self.repo_root, self.options.event, self.options.event_file)
        github["workflow"] = self.plain(top["name"]) if "name" in top else path.name
        committed = github["sha"] != "0" * 40  # a git checkout with a commit
        self.workspace = self.options.workspace or ("copy" if committed else "here")
        inputs = _inputs(self.plain(top["on"]) if "on" in top else None, self.options.inputs)
        if github["event_name"] == "workflow_dispatch" and inputs:
            # as GitHub's dispatch payload has them: strings ("true", "3"), unless --event-file
            github["event"].setdefault("inputs", {k: expr.to_str(v) for k, v in inputs.items()})
        self.static = {"github": github, "inputs": inputs, "vars": {}, "env": {}}
        raw = self.read_jobs(root, top)
        if raw is None or self.problems:
            return None
        workflow = {
            "file": str(path),
            "env": self.plain(top["env"]) if "env" in top else {},
            "defaults": _run_defaults(self.plain(top["defaults"]) if "defaults" in top else {}),
            "github": github,
            "inputs": inputs,
            "secrets": sorted(self.secret_names),
        }
        stages, groups, hosts = self.stages(_expand_calls(raw), workflow)
        if self.problems:
            return None
        stages = _share_results(stages)
        secrets = self.secret_values(sorted(self.secret_names), environ)
        return Pipeline(
            path=path,
            name=str(github["workflow"]),
            stages=stages,
            groups=groups,
            env={},
            secrets=secrets,
            hosts=hosts,
            root=self.repo_root,
        )

    def read_jobs(
        self, root: Node, top: Mapping[str, Node] | None = None
    ) -> dict[str, dict[str, Any]] | None:
        """The checked jobs of a workflow (of a called one too), by id."""
        top = top if top is not None else self.section(root, TOP_KEYS, "", "the workflow")
        if top is None:
            return None
        if "jobs" not in top:
            self.report(root, "a workflow needs 'jobs:'")
            return None
        for key in ("env", "defaults", "run-name", "name"):
            if key in top and self.kind(top[key], TOP_KINDS[key], key):
                self.check_expressions(top[key], key)
        for key in NOTED_KEYS:
            if key in top:
                self.warn(top[key], f"{key}: accepted and ignored here", note=True)
        jobs = self.entries(top["jobs"], "jobs")
        if not jobs:
            if jobs is not None:
                self.report(top["jobs"], "jobs: a workflow needs at least one job")
            return None
        self.top = {k: self.plain(v) for k, v in top.items() if k in ("on", "env", "defaults")}
        raw: dict[str, dict[str, Any]] = {}
        needs_nodes: dict[str, dict[str, Node]] = {}
        for job_id, (key_node, job_node) in jobs.items():
            if not _JOB_ID_RE.fullmatch(job_id):
                self.report(
                    key_node,
                    f"jobs: job id {job_id!r} must start with a letter or '_' and contain "
                    "only letters, digits, '-' and '_'",
                )
                continue
            job = self.job(job_id, key_node, job_node, self.static)
            if job is not None:
                raw[job_id], needs_nodes[job_id] = job
        self.check_needs_of(raw, needs_nodes, set(jobs))
        return raw

    def secret_values(self, names: list[str], environ: Mapping[str, str] | None) -> dict[str, str]:
        environ = os.environ if environ is None else environ
        missing = [n for n in names if n not in environ]
        dotenv = self.dotenv(self.repo_root / ".env") if missing else {}
        return {n: environ.get(n, dotenv.get(n, "")) for n in names}

    def job(
        self, job_id: str, key_node: Node, node: Node, static: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Node]] | None:
        path = f"jobs.{job_id}"
        nodes = self.section(node, JOB_KEYS, path, f"job {job_id!r}", at=key_node)
        if nodes is None:
            return None
        job: dict[str, Any] = {"id": job_id, "node": key_node, "skip": None}
        for key, value in list(nodes.items()):
            if key in JOB_KINDS and not self.kind(value, JOB_KINDS[key], f"{path}.{key}"):
                del nodes[key]
                continue
            self.check_expressions(value, f"{path}.{key}", condition=key == "if")
        needs_node = nodes.get("needs")
        needs: dict[str, Node] = {}
        if needs_node is not None:
            items = needs_node.value if isinstance(needs_node, SequenceNode) else [needs_node]
            for item in items:
                name = self.string(item, f"{path}.needs")
                if name is not None:
                    needs[name] = item
        job["needs"] = list(needs)
        if "uses" in nodes:
            self.reusable(job, nodes, path)
        elif "steps" not in nodes:
            self.report(key_node, f"job {job_id!r} needs 'steps:' (or 'uses:')")
            return None
        else:
            job["steps"] = self.steps(nodes["steps"], f"{path}.steps", job)
        for key in ("services", "container"):
            if key in nodes:
                reason = f"{key}: needs Docker, which pipedeck does not use"
                self.warn(nodes[key], f"{path}.{key}: {reason}; the job is skipped")
                job["skip"] = job["skip"] or reason
        for key in NOTED_KEYS:
            if key in nodes:
                self.warn(nodes[key], f"{path}.{key}: accepted and ignored here", note=True)
        for key in ("name", "if", "runs-on", "timeout-minutes", "continue-on-error"):
            if key in nodes:
                job[key] = self.plain(nodes[key])
        job["env"] = self.plain(nodes["env"]) if "env" in nodes else {}
        job["outputs"] = self.plain(nodes["outputs"]) if "outputs" in nodes else {}
        job["defaults"] = _run_defaults(
            self.plain(nodes["defaults"]) if "defaults" in nodes else {}
        )
        job["runs_on_node"] = nodes.get("runs-on", key_node)
        if "runs-on" not in nodes and "uses" not in nodes:
            self.report(key_node, f"job {job_id!r} is missing the required key 'runs-on'")
        self.strategy(job, nodes.get("strategy"), path, static)
        return job, needs

    def reusable(self, job: dict[str, Any], nodes: Mapping[str, Node], path: str) -> None:
        """`jobs.<id>.uses`: a local reusable workflow is read, its jobs run as this job's."""
        job["steps"] = []
        job["runs-on"] = "ubuntu-latest"
        uses = self.string(nodes["uses"], f"{path}.uses")
        if uses is None:
            return
        called = self.repo_root / uses.split("@", 1)[0] if uses.startswith("./") else None
        if called is None or not called.is_file() or self.depth >= MAX_CALL_DEPTH:
            reason = (
                "a reusable workflow from another repository is not on disk"
                if called is None
                else f"{uses} not found"
                if not called.is_file()
                else f"reusable workflows nested deeper than {MAX_CALL_DEPTH}"
            )
            self.warn(nodes["uses"], f"{path}.uses: {reason}; the job is skipped")
            job["skip"] = reason
            return
        sub = _WorkflowChecker(str(called), _read(str(called)), self.options)
        sub.repo_root, sub.static, sub.depth = self.repo_root, self.static, self.depth + 1
        root = sub.compose()
        inner = sub.read_jobs(root) if root is not None else None
        self.problems.extend(sub.problems)
        self.warnings.extend(sub.warnings)
        self.secret_names |= sub.secret_names
        if inner is None:
            return
        call = sub.top.get("on") if isinstance(sub.top.get("on"), Mapping) else {}
        spec = call.get("workflow_call") if isinstance(call, Mapping) else None
        spec = spec if isinstance(spec, Mapping) else {}
        outputs = spec.get("outputs")
        outputs = outputs if isinstance(outputs, Mapping) else {}
        job["called"] = {
            "jobs": inner,
            "env": sub.top.get("env") or {},
            "defaults": _run_defaults(sub.top.get("defaults") or {}),
            "inputs": _inputs({"workflow_call": spec}, {}),
            "with": self.plain(nodes["with"]) if "with" in nodes else {},
            "outputs": {
                k: v.get("value", "") for k, v in outputs.items() if isinstance(v, Mapping)
            },
        }

    def steps(self, node: Node, path: str, job: dict[str, Any]) -> list[dict[str, Any]]:
        if not isinstance(node, SequenceNode):
            self.report(node, f"{path}: expected a list of steps, got {_describe(node)}")
            return []
        out = []
        ids: set[str] = set()
        for i, item in enumerate(node.value):
            where = f"{path}[{i}]"
            nodes = self.section(item, STEP_KEYS, "", f"step {i + 1} of job {job['id']!r}")
            if nodes is None:
                continue
            for key, value in list(nodes.items()):
                if not self.kind(value, STEP_KINDS[key], f"{where}.{key}"):
                    del nodes[key]
                    continue
                self.check_expressions(value, f"{where}.{key}", condition=key == "if")
            step = {k: self.plain(v) for k, v in nodes.items()}
            if ("run" in step) == ("uses" in step):
                self.report(item, f"{where}: a step needs exactly one of 'run' and 'uses'")
                continue
            if "id" in step:
                if step["id"] in ids:
                    self.report(nodes["id"], f"{where}.id: duplicate step id {step['id']!r}")
                ids.add(str(step["id"]))
            if "uses" in step:
                step["skip"] = self.action_skip(str(step["uses"]), nodes["uses"], where)
            out.append(step)
        return out

    def action_skip(self, uses: str, node: Node, path: str) -> str | None:
        """Why a `uses:` cannot run here (None when it can), warned at its position."""
        name = uses.split("@", 1)[0].lower()
        if uses.startswith("docker://"):
            reason = "Docker actions need Docker, which pipedeck does not use"
        elif uses.startswith("./"):
            action_dir = self.repo_root / uses
            if (
                not (action_dir / "action.yml").is_file()
                and not (action_dir / "action.yaml").is_file()
            ):
                reason = f"local action {uses} has no action.yml"
            else:
                return None
        elif name in NATIVE_ACTIONS:
            return None
        else:
            native = ", ".join(NATIVE_ACTIONS)
            reason = f"remote action {uses} is not on disk (only {native} run natively)"
        self.warn(node, f"{path}.uses: {reason}; the step is skipped")
        return reason

    def strategy(
        self, job: dict[str, Any], node: Node | None, path: str, static: Mapping[str, Any]
    ) -> None:
        job["fail-fast"], job["max-parallel"], job["combos"], job["matrix_expr"] = (
            True,
            0,
            [{}],
            None,
        )
        if node is None:
            return
        nodes = self.section(node, STRATEGY_KEYS, f"{path}.strategy", f"{path}.strategy")
        if not nodes:
            return
        if "fail-fast" in nodes:
            value = self.plain(nodes["fail-fast"])
            job["fail-fast"] = value if isinstance(value, bool) else str(value)
        if "max-parallel" in nodes:
            value = self.plain(nodes["max-parallel"])
            job["max-parallel"] = int(value) if isinstance(value, float) else 0
        if "matrix" not in nodes:
            return
        matrix = self.plain(nodes["matrix"])
        if _mentions(matrix, "needs") or _mentions(matrix, "matrix"):
            job["matrix_expr"] = matrix  # expanded by the runner, once `needs` is known
            job["combos"] = [{}]
            return
        try:
            matrix = expr.interpolate_all(matrix, expr.Context(static))
        except expr.ExprError as err:
            self.report(nodes["matrix"], f"{path}.strategy.matrix: {err}")
            return
        if not isinstance(matrix, Mapping):
            self.report(nodes["matrix"], f"{path}.strategy.matrix: expected a mapping")
            return
        for axis, values in matrix.items():
            if axis not in ("include", "exclude") and (not isinstance(values, list) or not values):
                self.report(
                    nodes["matrix"],
                    f"{path}.strategy.matrix.{axis}: expected a non-empty list of values",
                )
                return
        try:
            combos = expand_matrix(matrix)
        except ValueError as err:
            self.report(nodes["matrix"], f"{path}.strategy.matrix.{err}")
            return
        if not combos:
            self.report(nodes["matrix"], f"{path}.strategy.matrix: no combination is left")
            return
        if len(combos) > MAX_MATRIX:
            self.report(
                nodes["matrix"],
                f"{path}.strategy.matrix: {len(combos)} jobs; GitHub allows at most {MAX_MATRIX}",
            )
            return
        job["combos"] = combos

    def check_needs_of(
        self,
        raw: Mapping[str, dict[str, Any]],
        needs: Mapping[str, dict[str, Node]],
        known: set[str],
    ) -> None:
        edges: dict[str, list[str]] = {}
        for job_id in raw:
            edges[job_id] = []
            for dep, node in needs[job_id].items():
                if dep in raw:
                    edges[job_id].append(dep)
                elif dep not in known:
                    self.report(
                        node,
                        f"jobs.{job_id}.needs: unknown job {dep!r}" + _did_you_mean(dep, known),
                    )
        while True:
            try:
                graph.topo_order(edges)
                return
            except graph.CycleError as err:
                first, second = err.cycle[0], err.cycle[1 % len(err.cycle)]
                self.report(needs[first][second], f"{err} (each job needs the next)")
                edges[first].remove(second)

    def stages(
        self, raw: Mapping[str, dict[str, Any]], workflow: Mapping[str, Any]
    ) -> tuple[dict[str, Stage], dict[str, tuple[str, ...]], dict[str, Host]]:
        total = sum(len(job["combos"]) for job in raw.values())
        if total > MAX_INSTANCES:
            self.report(next(iter(raw.values()))["node"], f"jobs: {total} job instances")
            return {}, {}, {}
        groups = {
            job_id: [instance_id(job_id, combo) for combo in job["combos"]]
            for job_id, job in raw.items()
        }
        instances: dict[str, Stage] = {}
        hosts: dict[str, Host] = {}
        for job_id, job in raw.items():
            needs = tuple(sid for dep in job["needs"] for sid in groups.get(dep, ()))
            total = len(job["combos"])
            for index, (sid, combo) in enumerate(zip(groups[job_id], job["combos"], strict=True)):
                stage = self.stage(job, sid, combo, needs, workflow, index, total)
                if stage.host != LOCAL:
                    hosts[stage.host] = self.host(stage.host, job["runs_on_node"])
                instances[sid] = stage
        order = graph.topo_order({sid: s.needs for sid, s in instances.items()})
        return (
            {sid: instances[sid] for sid in order},
            {n: tuple(groups[n]) for n in dict.fromkeys(instances[s].name for s in order)},
            hosts,
        )

    def host(self, name: str, node: Node) -> Host:
        """A `--runner` host: from the `hosts:` of a pipedeck.yaml at the repository root, or
        from ~/.ssh/config; an unknown one is a problem at the job's `runs-on`."""
        if self.root_hosts is None:
            self.root_hosts = {}
            root_file = self.repo_root / "pipedeck.yaml"
            if root_file.is_file():
                from engine.loader import load

                try:
                    self.root_hosts = dict(load(root_file).hosts)
                except ConfigError as err:
                    self.problems.extend(err.problems)
        if name in self.root_hosts:
            return self.root_hosts[name]
        if not self.in_ssh_config(name):
            self.report(
                node,
                f"--runner: unknown host {name!r}: not in the hosts: of "
                f"{self.repo_root / 'pipedeck.yaml'} and no Host entry in ~/.ssh/config",
            )
        return Host(name, name)

    def stage(
        self,
        job: Mapping[str, Any],
        sid: str,
        combo: Mapping[str, Any],
        needs: tuple[str, ...],
        workflow: Mapping[str, Any],
        index: int,
        total: int,
    ) -> Stage:
        path = f"jobs.{job['id']}"
        ctx = expr.Context(
            {"github": workflow["github"], "inputs": workflow["inputs"], "matrix": combo}
        )
        skip = job["skip"]
        host = LOCAL
        runs_on = job.get("runs-on", "ubuntu-latest")
        try:
            labels = _labels(expr.interpolate_all(runs_on, ctx))
        except expr.ExprError:
            labels = []  # names `needs`: known at run time only
        mapped = [self.options.runners[lb] for lb in labels if lb in self.options.runners]
        if mapped:
            host = mapped[0]
        else:
            for label in labels:
                reason = _unavailable(label)
                if reason:
                    skip = skip or reason
                    self.warn(
                        job["runs_on_node"],
                        f"{path}.runs-on: {reason} (map it with --runner {label}=HOST); "
                        "the job is skipped",
                    )
        timeout = _static(job.get("timeout-minutes", DEFAULT_TIMEOUT_MINUTES), ctx)
        continue_on_error = _static(job.get("continue-on-error", False), ctx)
        description = {
            "workflow": workflow,
            "job": job["id"],
            "instance": sid,
            "name": job.get("name"),
            "needs": job["needs"],
            "if": job.get("if"),
            "env": job["env"],
            "defaults": job["defaults"],
            "steps": job["steps"],
            "outputs": job["outputs"],
            "matrix": combo,
            "matrix_expr": job["matrix_expr"],
            "strategy": {
                "fail-fast": job["fail-fast"],
                "max-parallel": job["max-parallel"] or total,
                "job-index": index,
                "job-total": total,
            },
            "continue-on-error": continue_on_error,
            "timeout-minutes": timeout,
            "call": job.get("call"),
            "aggregate": job.get("aggregate"),
            "skip": skip,
            "runs-on": labels,
            "workspace": self.workspace if host == LOCAL else "here",  # remote: a copy already
        }
        # GitHub's `if:` means `success() && ...` (a need skipped or failed: skipped) unless it
        # uses a status function: then the job starts whatever its needs ended as
        uses_status = not _only_on_success(job.get("if"))
        return Stage(
            id=sid,
            name=job["id"],
            run=runner_command(description, remote=host != LOCAL),
            needs=needs,
            env={},
            timeout=float(timeout) * 60 if isinstance(timeout, float) else None,
            kill_grace=JOB_KILL_GRACE,
            when="always" if uses_status or job.get("aggregate") else "on_success",
            allow_failure=continue_on_error is True,
            host=host,
            matrix={k: expr.to_str(v) for k, v in combo.items()},
            steps=True,
            max_parallel=job["max-parallel"] if 0 < job["max-parallel"] < total else 0,
        )


def _expand_calls(raw: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Jobs calling a local reusable workflow become its jobs (`caller/inner`, needing what the
    caller needs) and the caller a job without steps that needs them all and makes the outputs
    `on.workflow_call.outputs` names from their `jobs` context."""
    out: dict[str, dict[str, Any]] = {}
    for job_id, job in raw.items():
        called = job.pop("called", None)
        if called is None:
            out[job_id] = job
            continue
        inner = _expand_calls(called["jobs"])
        alias = {name: f"{job_id}/{name}" for name in inner}
        for name, sub in inner.items():
            sub = dict(sub)
            sub["id"] = alias[name]
            sub["needs"] = [alias[n] for n in sub["needs"] if n in alias] or list(job["needs"])
            sub["env"] = {**called["env"], **sub["env"]}
            sub["defaults"] = {**called["defaults"], **sub["defaults"]}
            sub["call"] = {
                "with": called["with"],
                "inputs": called["inputs"],
                "needs": list(job["needs"]),
            }
            out[alias[name]] = sub
        job["needs"] = list(alias.values())
        job["outputs"] = called["outputs"]
        job["aggregate"] = alias
        out[job_id] = job
    return out


def _share_results(stages: Mapping[str, Stage]) -> dict[str, Stage]:
    """Jobs on an SSH host, and the jobs they need, declare their result file (outputs and
    result, `.pipedeck/gha/RUN/jobs/JOB.json`) as an output: the executor brings a remote
    job's back for the local jobs that need it, and sends a needed job's to the host."""
    shared = {sid for sid, stage in stages.items() if stage.is_remote}
    shared |= {need for sid in shared for need in stages[sid].needs}
    return {
        sid: replace(stage, outputs=(f".pipedeck/gha/*/jobs/{safe_name(sid)}.json",))
        if sid in shared
        else stage
        for sid, stage in stages.items()
    }


def _static(value: Any, ctx: expr.Context) -> Any:
    """A value whose expression can be known when the file is loaded (matrix, github, inputs);
    otherwise the text, for the runner to evaluate."""
    if not isinstance(value, str) or "${{" not in value or _mentions(value, "needs"):
        return value
    try:
        value = expr.interpolate(value, ctx)
    except expr.ExprError:
        return value
    return expr.to_number(value) if isinstance(value, str) and value.strip().isdigit() else value


def _only_on_success(condition: Any) -> bool:
    if not isinstance(condition, str):
        return True
    try:
        return expr.only_on_success(condition)
    except expr.ExprError:
        return True  # reported where the file is checked


def _mentions(value: Any, context: str) -> bool:
    """True when a string in `value` holds an expression naming `context`."""
    if isinstance(value, str):
        return "${{" in value and re.search(rf"\b{context}\b", value) is not None
    if isinstance(value, Mapping):
        return any(_mentions(v, context) for v in value.values())
    if isinstance(value, list):
        return any(_mentions(v, context) for v in value)
    return False


def _labels(runs_on: Any) -> list[str]:
    if isinstance(runs_on, Mapping):
        runs_on = runs_on.get("labels") or runs_on.get("group") or []
    if isinstance(runs_on, list):
        return [expr.to_str(label) for label in runs_on]
    return [expr.to_str(runs_on)]


def _run_defaults(defaults: Any) -> dict[str, Any]:
    run = defaults.get("run") if isinstance(defaults, Mapping) else None
    return dict(run) if isinstance(run, Mapping) else {}


def _inputs(on: Any, given: Mapping[str, str]) -> dict[str, Any]:
    """The `inputs` context: workflow_dispatch / workflow_call defaults, typed, then `--input`."""
    inputs: dict[str, Any] = {}
    if isinstance(on, Mapping):
        for trigger in ("workflow_dispatch", "workflow_call"):
            spec = on.get(trigger)
            declared = spec.get("inputs") if isinstance(spec, Mapping) else None
            for name, item in (declared or {}).items():
                item = item if isinstance(item, Mapping) else {}
                inputs.setdefault(name, _typed(item.get("type"), item.get("default")))
    for name, value in given.items():
        kind = None
        if isinstance(on, Mapping):
            for trigger in ("workflow_dispatch", "workflow_call"):
                spec = on.get(trigger)
                declared = (spec.get("inputs") if isinstance(spec, Mapping) else None) or {}
                if isinstance(declared.get(name), Mapping):
                    kind = declared[name].get("type")
        inputs[name] = _typed(kind, value)
    return inputs


def _typed(kind: Any, value: Any) -> Any:
    if kind == "boolean":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if kind == "number" and value is not None:
        number = expr.to_number(value)
        return None if number != number else number
    return "" if value is None else value
