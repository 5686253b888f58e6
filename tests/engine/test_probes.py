"""engine.probes against real servers: http.server, listening sockets, log lines, commands."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from engine.probes import LogMatcher, reach, wait_ready
from engine.spec import Probe


class _Handler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        if self.server.status in (301, 302):  # type: ignore[attr-defined]
            self.send_header("Location", "/elsewhere")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.status = 200  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("status", [200, 204, 302])
async def test_http_probe_passes_on_2xx_and_3xx(server: ThreadingHTTPServer, status: int) -> None:
    server.status = status  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{server.server_port}/health"
    assert await wait_ready(Probe("http", url, interval=0.05, timeout=5)) is None


async def test_http_probe_times_out_with_the_last_status(server: ThreadingHTTPServer) -> None:
    server.status = 503  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{server.server_port}/"
    assert await wait_ready(Probe("http", url, interval=0.05, timeout=0.3)) == "HTTP 503"


async def test_http_probe_reports_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    assert await wait_ready(Probe("http", url, 0.05, 0.3)) == "connection refused"


async def test_http_probe_passes_once_the_server_comes_up(server: ThreadingHTTPServer) -> None:
    """Failing tries are repeated every interval; the first 2xx ends the wait."""
    server.status = 503  # type: ignore[attr-defined]
    tries = 0
    original = _Handler.do_GET

    def counting(handler: _Handler) -> None:
        nonlocal tries
        tries += 1
        if tries == 3:
            server.status = 200  # type: ignore[attr-defined]
        original(handler)

    _Handler.do_GET = counting  # type: ignore[method-assign]
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        assert await wait_ready(Probe("http", url, 0.02, 10)) is None
    finally:
        _Handler.do_GET = original  # type: ignore[method-assign]
    assert tries == 3


async def test_tcp_probe_passes_on_a_listening_socket_and_refuses_otherwise() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert await wait_ready(Probe("tcp", f"127.0.0.1:{port}", 0.05, 5)) is None
    assert await wait_ready(Probe("tcp", f"127.0.0.1:{port}", 0.05, 0.3)) == "connection refused"


async def test_log_probe_matches_a_line_fed_later() -> None:
    matcher = LogMatcher(r"listening on \d+")
    waiter = asyncio.create_task(wait_ready(Probe("log", matcher.regex.pattern), log=matcher))
    matcher.feed(["starting", "loading config"])
    await asyncio.sleep(0)
    assert not waiter.done()
    matcher.feed(["listening on 8000"])
    assert await asyncio.wait_for(waiter, 5) is None


async def test_log_probe_times_out_with_no_line_matched() -> None:
    matcher = LogMatcher("ready")
    matcher.feed(["starting"])
    error = await wait_ready(Probe("log", "ready", timeout=0.2), log=matcher)
    assert error == "no line matched 'ready' within 0.2s"


async def test_run_probe_retries_the_command_until_it_succeeds(tmp_path: Path) -> None:
    calls: list[str] = []

    async def run(command: str) -> str | None:
        calls.append(command)
        proc = await asyncio.create_subprocess_shell(command, cwd=tmp_path)
        code = await proc.wait()
        return None if code == 0 else f"exit code {code}"

    # fails twice, then passes: the second failure creates the file the third try finds
    command = "test -e ok || { [ -e tried ] && touch ok; touch tried; exit 3; }"
    assert await wait_ready(Probe("run", command, 0.01, 10), run=run) is None
    assert len(calls) == 3
    assert await wait_ready(Probe("run", "exit 4", 0.01, 0.2), run=run) == "exit code 4"


def test_reach_points_loopback_targets_at_the_host() -> None:
    assert reach("http", "http://127.0.0.1:8000/x?y=1", "10.0.0.5") == "http://10.0.0.5:8000/x?y=1"
    assert reach("http", "http://localhost/", "box") == "http://box/"
    assert reach("http", "http://api.example:80/", "box") == "http://api.example:80/"
    assert reach("tcp", "localhost:5432", "10.0.0.5") == "10.0.0.5:5432"
    assert reach("tcp", "db:5432", "10.0.0.5") == "db:5432"
