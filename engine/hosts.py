"""Executors by host and the slots that bound how many stages run at once on each host."""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Callable, Mapping

from engine.executors.base import Executor, host_slots
from engine.spec import LOCAL, Pipeline

HostListener = Callable[[str, str, str | None, dict[str, object] | None], None]
"""Called with (host, state, reason, synced) when an SSH host's connection state changes
(`synced`: what a workspace sync did, see `engine.events.HostStatus`)."""


class Hosts:
    """Executors by host, made on first use, and the slots bounding each host's stages.

    `--jobs` bounds local stages; a remote host's `slots` (at most REMOTE_STAGE_LIMIT) its own.
    This is the one place that limits how many stages run at once on a host.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        jobs: int | None = None,
        executors: Mapping[str, Executor] | None = None,
    ) -> None:
        """`executors` replaces the made ones for some hosts (a test's fake executor)."""
        self.pipeline = pipeline
        self.listener: HostListener | None = None  # the run executing now
        self._executors: dict[str, Executor] = dict(executors or {})
        self._slots: dict[str, asyncio.Semaphore] = {
            LOCAL: asyncio.Semaphore(jobs or os.cpu_count() or 1)
        }

    def slots(self, host: str) -> asyncio.Semaphore:
        """The semaphore a stage on `host` holds while it runs."""
        if host not in self._slots:
            spec = self.pipeline.hosts.get(host)
            if spec is not None and self._slurm(host):  # jobs hold no SSH channel
                self._slots[host] = asyncio.Semaphore(spec.slots)
            else:
                self._slots[host] = asyncio.Semaphore(host_slots(spec.slots if spec else None))
        return self._slots[host]

    def executor(self, host: str) -> Executor:
        """The executor of `host`, made on first use."""
        if host not in self._executors:
            if host == LOCAL:
                from engine.executors.local import LocalExecutor

                self._executors[host] = LocalExecutor(self.pipeline.workspace)
            elif self._slurm(host):
                from engine.executors.slurm import SlurmExecutor

                self._executors[host] = SlurmExecutor(self.pipeline, host, self._host_state)
            else:
                from engine.executors.ssh import SshExecutor

                self._executors[host] = SshExecutor(self.pipeline, host, self._host_state)
        return self._executors[host]

    async def load(self, host: str) -> None:
        """Import a remote host's executor module in a worker thread, not on the event loop
        (asyncssh alone takes ~150 ms): call before the first `executor(host)`."""
        if host not in self._executors and host != LOCAL:
            spec = self.pipeline.hosts.get(host)
            slurm = self._slurm(host)
            modules = ["engine.executors.slurm"] if slurm else []
            if not slurm or (spec is not None and spec.address):  # SSH (a login node too)
                modules.append("engine.executors.ssh")
            await asyncio.to_thread(lambda: [importlib.import_module(m) for m in modules])

    def _slurm(self, host: str) -> bool:
        spec = self.pipeline.hosts.get(host)
        return spec is not None and spec.executor == "slurm"

    def _host_state(
        self,
        host: str,
        state: str,
        reason: str | None = None,
        synced: dict[str, object] | None = None,
    ) -> None:
        if self.listener is not None:
            self.listener(host, state, reason, synced)

    async def close(self) -> None:
        """Close every executor (kills what still runs, drops SSH connections)."""
        executors, self._executors = list(self._executors.values()), {}
        for executor in executors:
            await executor.close()
