"""Resolve a stage's `host:` into SSH connection settings (SPEC §4).

Hosts declared under `hosts:` give their own settings; any setting left out (and any host name not
declared at all) is looked up by asyncssh in `~/.ssh/config`, like `ssh NAME` would.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from engine.spec import Host, Pipeline

ACCEPT_NEW = "accept-new"
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_SLOTS = 4


@dataclass(frozen=True)
class HostConfig:
    """Everything the SSH executor needs to reach one host."""

    name: str  # the name stages use in `host:`
    address: str  # given to asyncssh, which applies ~/.ssh/config `Host` blocks to it
    port: int | None  # None: ~/.ssh/config or 22
    user: str | None  # None: ~/.ssh/config or the local user
    identity_file: Path | None  # None: ~/.ssh/config, the agent and the default keys
    known_hosts: Path  # the file host keys are checked against (and written to with accept-new)
    accept_new: bool  # trust a host's first-seen key, like StrictHostKeyChecking=accept-new
    workdir: str  # the remote workspace; a relative path is relative to the remote home
    slots: int
    sync_exclude: tuple[str, ...] = ()  # globs never sent to the host

    @property
    def display_port(self) -> int:
        """The port shown in messages."""
        return self.port or 22


def default_workdir(pipeline: Pipeline) -> str:
    """`.cache/pipedeck/<name>-<hash of the local workspace>` under the remote home."""
    digest = hashlib.sha256(str(pipeline.workspace).encode()).hexdigest()[:8]
    return f".cache/pipedeck/{pipeline.name}-{digest}"


def remote_path(path: str) -> str:
    """A remote path as the shell reads it: `~/x` becomes `x` (home-relative)."""
    if path in ("~", "~/"):
        return "."
    return path[2:] if path.startswith("~/") else path


def resolve_host(pipeline: Pipeline, name: str) -> HostConfig:
    """The settings for host `name`: from `hosts:`, else just the name (for ~/.ssh/config)."""
    host = pipeline.hosts.get(name) or Host(name=name, address=name, slots=DEFAULT_SLOTS)
    accept_new = host.known_hosts == ACCEPT_NEW
    known = DEFAULT_KNOWN_HOSTS if host.known_hosts in (None, ACCEPT_NEW) else host.known_hosts
    return HostConfig(
        name=name,
        address=host.address or name,
        port=host.port,
        user=host.user,
        identity_file=Path(host.identity_file).expanduser() if host.identity_file else None,
        known_hosts=Path(str(known)).expanduser(),
        accept_new=accept_new,
        workdir=remote_path(host.workdir or default_workdir(pipeline)).rstrip("/") or "/",
        slots=max(1, host.slots),
        sync_exclude=host.sync_exclude,
    )
