"""Readiness probes of services (SPEC §10): `http`, `tcp`, `log` and `run`.

`wait_ready` tries a probe every `interval` seconds until it passes (returns None) or `timeout`
runs out (returns the last error: "connection refused", "HTTP 503", "no line matched"...).
`http` and `tcp` connect from here; `log` matches the lines the service prints, fed to it by
whoever reads the output (`LogMatcher.feed`); `run` runs a command through a callable the caller
provides (the stage's executor, so on an SSH host it runs there).
"""

from __future__ import annotations

import asyncio
import http.client
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

from engine.spec import Probe

RunCommand = Callable[[str], Awaitable[str | None]]
"""Runs a probe command where the service runs; returns None on exit 0, else the error."""

_LOCAL_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class LogMatcher:
    """Matches a `log` probe's regex against the lines a service prints."""

    def __init__(self, pattern: str) -> None:
        self.regex = re.compile(pattern)
        self.matched = asyncio.Event()

    def feed(self, lines: Iterable[str]) -> None:
        """Look at new output lines; sets `matched` at the first one the regex finds."""
        if not self.matched.is_set() and any(self.regex.search(line) for line in lines):
            self.matched.set()


def reach(kind: str, target: str, address: str) -> str:
    """An http/tcp target as seen from here: a loopback host name becomes `address`, so the
    probe of a service on an SSH host reaches that host."""
    if kind == "tcp":
        host, _, port = target.rpartition(":")
        return f"{address}:{port}" if host in _LOCAL_NAMES else target
    parts = urlsplit(target)
    if parts.hostname not in _LOCAL_NAMES:
        return target
    netloc = address + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _error(exc: BaseException) -> str:
    """A short lower-case description of a connection error."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def _http_get(url: str, timeout: float) -> str | None:
    """GET `url` (blocking; run in a thread): None for 2xx/3xx, else the error."""
    parts = urlsplit(url)
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False  # readiness, not trust: self-signed dev certs are fine
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(parts.netloc, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(parts.netloc, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("GET", path, headers={"User-Agent": "pipedeck-probe"})
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return _error(exc)
    finally:
        conn.close()
    return None if 200 <= status < 400 else f"HTTP {status}"


async def check_http(url: str, timeout: float) -> str | None:
    """One HTTP try: None when the answer is 2xx or 3xx."""
    return await asyncio.to_thread(_http_get, url, timeout)


async def check_tcp(target: str, timeout: float) -> str | None:
    """One TCP try: None when `HOST:PORT` accepts a connection."""
    host, _, port = target.rpartition(":")
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    except (OSError, TimeoutError, ValueError) as exc:
        return _error(exc)
    writer.close()
    return None


async def wait_ready(
    probe: Probe,
    *,
    address: str = "127.0.0.1",
    log: LogMatcher | None = None,
    run: RunCommand | None = None,
) -> str | None:
    """Try `probe` until it passes (None) or its timeout ends (the last error).

    `address` is where http/tcp probes of loopback names go; `log` is fed by the caller with the
    service's output for a `log` probe; `run` runs a `run` probe's command.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + probe.timeout
    if probe.kind == "log":
        matcher = log or LogMatcher(probe.target)
        try:
            async with asyncio.timeout_at(deadline):
                await matcher.matched.wait()
        except TimeoutError:
            return f"no line matched {probe.target!r} within {probe.timeout:g}s"
        return None
    target = reach(probe.kind, probe.target, address)
    last = "not tried"
    while (left := deadline - loop.time()) > 0:
        try:
            async with asyncio.timeout(left):
                if probe.kind == "http":
                    error = await check_http(target, left)
                elif probe.kind == "tcp":
                    error = await check_tcp(target, left)
                else:
                    if run is None:
                        raise ValueError("a run probe needs a way to run its command")
                    error = await run(probe.target)
        except TimeoutError:
            error = last if last != "not tried" else "timed out"
        if error is None:
            return None
        last = error
        left = deadline - loop.time()
        if left > 0:
            await asyncio.sleep(min(probe.interval, left))  # the probe's pace, not a sync
    return last
