"""The pipeline model: frozen dataclasses (named tuples for the small values: cheaper to
define) made by the loader and read by everything else."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

LOCAL = "local"
MAX_FILE_BYTES = 5 * 1024 * 1024  # a pipeline file or a `.env` above it is refused

WHEN_VALUES = ("on_success", "on_failure", "always", "manual")
PROBE_KINDS = ("http", "tcp", "log", "run")  # a service's readiness probe (SPEC §10)
RESTART_VALUES = ("never", "on_failure")

# What `color: true` puts in every stage's environment: the variables common tools read to colour
# their output without a terminal (node/chalk, rich and many CLIs; BSD/Go tools and CMake; pytest
# and tox; cargo; mypy). A stage's or the pipeline's own `env` overrides them.
COLOR_ENV = {
    "FORCE_COLOR": "1",
    "CLICOLOR_FORCE": "1",
    "PY_COLORS": "1",
    "CARGO_TERM_COLOR": "always",
    "MYPY_FORCE_COLOR": "1",
}


@dataclass(frozen=True)
class SlurmOptions:
    """A Slurm host's `slurm:` section (SPEC §12); `env` is for the Slurm commands themselves."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


class Resources(NamedTuple):
    """A stage's `resources:`: what its Slurm job asks for (SPEC §12)."""

    cpus: int | None = None
    memory: str | None = None  # Slurm's --mem syntax: 512M, 32G
    gpus: int | None = None
    time: float | None = None  # seconds


@dataclass(frozen=True)
class Host:
    """A remote build box (SPEC §4)."""

    name: str
    address: str
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts; "accept-new": trust first-seen keys
    workdir: str | None = None
    slots: int = 4
    executor: str = "ssh"  # "ssh", or "slurm": stages become Slurm jobs (SPEC §12)
    slurm: SlurmOptions | None = None  # `slurm:`, for executor slurm
    sync_exclude: tuple[str, ...] = ()  # `sync: {exclude: [...]}`


@dataclass(frozen=True)
class WatchConfig:
    """The `watch:` section (SPEC §5)."""

    paths: tuple[str, ...] = (".",)
    ignore: tuple[str, ...] = ()
    debounce: float = 0.1


class Probe(NamedTuple):
    """A service's readiness probe (`ready:`): `kind` is one of PROBE_KINDS, `target` its
    URL, `HOST:PORT`, regex or command; tried every `interval` seconds for up to `timeout`."""

    kind: str
    target: str
    interval: float = 0.5
    timeout: float = 60.0


@dataclass(frozen=True)
class Stage:
    """One runnable stage instance; a matrix stage becomes one Stage per combination.

    `id` is unique (`test[python=3.11]`); `name` is the stage's key in the file (`test`).
    `needs` holds instance ids, already expanded. `env` is the full stage environment
    (pipeline env, stage env, MATRIX_* values) without secrets or PIPEDECK_* variables.
    """

    id: str
    name: str
    run: str
    needs: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = "."  # relative to the workspace
    shell: tuple[str, ...] = ()  # empty: bash -e -o pipefail -c, or sh -e -c without bash
    timeout: float | None = None
    kill_grace: float = 10.0
    retries: int = 0
    when: str = "on_success"
    allow_failure: bool = False
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    host: str = LOCAL
    matrix: Mapping[str, str] = field(default_factory=dict)
    metrics: str | None = None
    steps: bool = False  # a GitHub Actions job: its output carries step markers (SPEC §11)
    resources: Resources = field(default_factory=Resources)
    service: bool = False
    ready: Probe | None = None  # a service without a probe is ready once started
    restart: str = "never"
    tty: bool = False
    max_parallel: int = 0  # at most this many instances of `name` at once (0: no limit)

    @property
    def is_remote(self) -> bool:
        """True when the stage runs on an SSH host."""
        return self.host != LOCAL


@dataclass(frozen=True)
class Pipeline:
    """A loaded, valid pipeline. `stages` is in topological order, keyed by instance id."""

    path: Path  # the pipeline file, absolute
    name: str
    stages: Mapping[str, Stage]
    groups: Mapping[str, tuple[str, ...]]  # stage name -> its instance ids (one unless matrix)
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)  # name -> value (may be empty)
    hosts: Mapping[str, Host] = field(default_factory=dict)
    watch: WatchConfig = field(default_factory=WatchConfig)
    color: bool = False  # `color: true`: stages get COLOR_ENV
    root: Path | None = None  # the workspace when it is not the file's directory (a workflow)

    @property
    def workspace(self) -> Path:
        """The directory holding the pipeline file (a workflow's repository root); stage
        `cwd`s are relative to it."""
        return self.root or self.path.parent

    @property
    def state_dir(self) -> Path:
        """`.pipedeck/` beside the pipeline file: history, logs, artifacts."""
        return self.workspace / ".pipedeck"

    @property
    def uses_remote(self) -> bool:
        """True when any stage runs on an SSH host."""
        return any(s.is_remote for s in self.stages.values())
