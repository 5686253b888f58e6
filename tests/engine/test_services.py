"""Service stages in the scheduler with real servers: ready, needs, failures, restarts, stop."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.events import StageStatus
from engine.loader import load
from engine.run import Run
from tests.conftest import Recorder, marked_pids
from tests.ssh.conftest import USER, Sshd, sshd  # noqa: F401 (the sshd fixture)
from tests.waiting import until

Write = Callable[..., Path]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def execute(path: Path, recorder: Recorder, **options: object) -> tuple[Run, int]:
    async def go() -> tuple[Run, int]:
        run = Run(load(path), **options)  # type: ignore[arg-type]
        run.subscribe(recorder)
        return run, await run.execute()

    return asyncio.run(go())


def when(recorder: Recorder, stage: str, status: str) -> float:
    """When `stage` first reached `status`."""
    return next(
        e.ts
        for e in recorder.events
        if isinstance(e, StageStatus) and (e.stage, e.status) == (stage, status)
    )


def test_http_service_is_ready_before_its_tests_and_stopped_after(
    write_pipeline: Write, recorder: Recorder
) -> None:
    port = free_port()
    path = write_pipeline(f"""
        version: 1
        stages:
          api:
            service: true
            kill_grace: 5s
            run: exec {PY} -m http.server {port} --bind 127.0.0.1
            ready: {{http: "http://127.0.0.1:{port}/", interval: 50ms, timeout: 20s}}
          test:
            needs: [api]
            run: {PY} -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/').status)"
    """)
    run, code = execute(path, recorder, jobs=1)  # a service holds no --jobs slot
    assert code == 0
    assert recorder.statuses("api") == ["queued", "running", "ready", "succeeded"]
    assert recorder.final("api").reason == "stopped: the other stages ended"
    assert recorder.lines("test") == ["200"]
    assert when(recorder, "api", "ready") <= when(recorder, "test", "running")
    assert when(recorder, "test", "succeeded") <= when(recorder, "api", "succeeded")
    assert marked_pids(run.run_id) == []
    assert run.status == "succeeded"


def test_probe_timeout_fails_with_the_last_error_and_kills_the_service(
    write_pipeline: Write, recorder: Recorder
) -> None:
    path = write_pipeline(f"""
        version: 1
        stages:
          db:
            service: true
            kill_grace: 1s
            run: sleep 60
            ready: {{tcp: "127.0.0.1:{free_port()}", interval: 20ms, timeout: 300ms}}
          test: {{needs: [db], run: echo never}}
    """)
    run, code = execute(path, recorder)
    assert code == 1
    final = recorder.final("db")
    assert (final.status, final.reason) == ("failed", "not ready: connection refused")
    assert recorder.final("test").status == "skipped"
    assert marked_pids(run.run_id) == []


def test_http_probe_error_names_the_status(write_pipeline: Write, recorder: Recorder) -> None:
    port = free_port()
    server = (
        "import http.server as h\n"
        "class H(h.BaseHTTPRequestHandler):\n"
        "    def do_GET(self): self.send_response(503); self.end_headers()\n"
        f"h.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    )
    (
        path := write_pipeline(f"""
        version: 1
        stages:
          api:
            service: true
            kill_grace: 1s
            run: exec {PY} server.py
            ready: {{http: "http://127.0.0.1:{port}/", interval: 20ms, timeout: 2s}}
    """)
    ).with_name("server.py").write_text(server)
    execute(path, recorder)
    assert recorder.final("api").reason == "not ready: HTTP 503"


def test_a_service_that_exits_on_its_own_fails_with_its_exit_code(
    write_pipeline: Write, recorder: Recorder
) -> None:
    """Before ready (no line matched yet), and after ready (its dependent made it exit; kept
    running as in the TUI, so that the end of the other stages does not stop it first)."""
    path = write_pipeline("""
        version: 1
        stages:
          early:
            service: true
            run: echo starting; exit 3
            ready: {log: "listening"}
          late:
            service: true
            run: |
              echo listening on 1234
              while [ ! -e done ]; do sleep 0.02; done
              exit 0
            ready: {log: "listening on \\\\d+"}
          user: {needs: [late], run: touch done}
    """)

    async def go() -> int:
        run = Run(load(path))
        run.services.keep_running = True
        run.subscribe(recorder)
        return await asyncio.wait_for(run.execute(), 20)

    assert asyncio.run(go()) == 1
    early, late = recorder.final("early"), recorder.final("late")
    assert (early.status, early.exit_code) == ("failed", 3)
    assert early.reason == "the service exited on its own (exit code 3)"
    assert recorder.statuses("late") == ["queued", "running", "ready", "failed"]
    assert (late.exit_code, late.reason) == (0, "the service exited on its own (exit code 0)")
    assert recorder.final("user").status == "succeeded"


@pytest.mark.parametrize(("restart", "attempts"), [("on_failure", 3), ("never", 1)])
def test_restart_on_failure_uses_retries_as_the_limit(
    write_pipeline: Write, recorder: Recorder, restart: str, attempts: int
) -> None:
    path = write_pipeline(f"""
        version: 1
        stages:
          flaky:
            service: true
            restart: {restart}
            retries: 3
            run: |
              echo "attempt $PIPEDECK_ATTEMPT"
              [ "$PIPEDECK_ATTEMPT" -ge 3 ] || exit 7
              echo up; exec sleep 60
            ready: {{log: "^up$", timeout: 20s}}
            kill_grace: 1s
          after: {{needs: [flaky], run: echo after}}
    """)
    run, code = execute(path, recorder)
    final = recorder.final("flaky")
    assert final.attempt == attempts
    if restart == "on_failure":
        assert code == 0
        assert recorder.statuses("flaky") == [
            *["queued", "running", "failed", "running", "failed", "running"],
            *["ready", "succeeded"],
        ]
        assert recorder.lines("after") == ["after"]
    else:
        assert code == 1
        assert (final.status, final.exit_code) == ("failed", 7)
        assert recorder.final("after").status == "skipped"
    assert marked_pids(run.run_id) == []


def test_run_probe_and_a_service_without_a_probe(write_pipeline: Write, recorder: Recorder) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          made:
            service: true
            run: sleep 0.1; touch made.flag; exec sleep 60
            ready: {run: "test -e made.flag", interval: 20ms}
            kill_grace: 1s
          plain: {service: true, run: exec sleep 60, kill_grace: 1s}
          check: {needs: [made, plain], run: ls made.flag}
    """)
    run, code = execute(path, recorder)
    assert code == 0
    assert recorder.lines("check") == ["made.flag"]
    assert recorder.final("plain").status == "succeeded"
    assert marked_pids(run.run_id) == []


def test_kept_services_restart_on_rerun_and_their_dependents_follow_once_ready(
    write_pipeline: Write, recorder: Recorder
) -> None:
    """TUI and watch mode: services keep running; a rerun of one (what a change to its
    inputs does) restarts it and reruns what needs it after it is ready again."""
    path = write_pipeline("""
        version: 1
        stages:
          api:
            service: true
            kill_grace: 1s
            run: echo "serving $PIPEDECK_ATTEMPT"; exec sleep 60
            ready: {log: "serving"}
          test: {needs: [api], run: echo tested}
    """)

    async def go() -> tuple[Run, int]:
        run = Run(load(path))
        run.services.keep_running = True
        run.subscribe(recorder)
        task = asyncio.create_task(run.execute())
        await until(lambda: recorder.statuses("test")[-1:] == ["succeeded"])
        assert run.states["api"].status == "ready"  # still up, the run still going
        assert not task.done()
        run.rerun("api")
        await until(lambda: recorder.statuses("test").count("succeeded") == 2)
        run.cancel_all()
        return run, await asyncio.wait_for(task, 20)

    run, code = asyncio.run(go())
    assert code == 130 and run.status == "cancelled"  # cancelled by a person
    assert recorder.lines("api") == ["serving 1", "serving 2"]
    second_ready = [
        e.ts for e in recorder.events if isinstance(e, StageStatus) and e.status == "ready"
    ][1]
    test_runs = [
        e.ts
        for e in recorder.events
        if isinstance(e, StageStatus) and (e.stage, e.status) == ("test", "running")
    ]
    assert test_runs[1] >= second_ready
    assert recorder.final("api").status == "cancelled"
    assert marked_pids(run.run_id) == []


@pytest.mark.ssh
def test_remote_service_probes_reach_the_host_and_run_there(
    sshd: Sshd,  # noqa: F811
    tmp_path: Path,
    recorder: Recorder,
) -> None:
    port = free_port()
    workdir = sshd.root / "services" / "box"
    path = tmp_path / "pipedeck.yaml"
    path.write_text(
        f"version: 1\nhosts:\n  box:\n    address: 127.0.0.2\n    port: {sshd.port}\n"
        f"    user: {USER}\n    identity_file: {sshd.client_key}\n"
        f"    known_hosts: {sshd.known_hosts}\n    workdir: {workdir}\n"
        "stages:\n"
        "  api:\n    host: box\n    service: true\n    kill_grace: 2s\n"
        f"    run: touch started; exec {PY} -m http.server {port} --bind 127.0.0.2\n"
        f'    ready: {{http: "http://localhost:{port}/", interval: 50ms, timeout: 30s}}\n'
        "  marker:\n    host: box\n    service: true\n    kill_grace: 2s\n"
        "    run: exec sleep 60\n"
        '    ready: {run: "test -e started", interval: 50ms, timeout: 30s}\n'
        "  test:\n    needs: [api, marker]\n"
        f'    run: {PY} -c "import urllib.request as u; '
        f"print(u.urlopen('http://127.0.0.2:{port}/').status)\"\n"
    )
    run, code = execute(path, recorder)
    assert code == 0, [e for e in recorder.events if isinstance(e, StageStatus)]
    assert marked_pids(run.run_id) == []
    assert recorder.lines("test") == ["200"]
    assert not (tmp_path / "started").exists()  # the run probe found the remote file
    assert recorder.final("api").status == "succeeded"
    with socket.socket() as sock:  # the remote service was stopped
        assert sock.connect_ex(("127.0.0.2", port)) != 0


def test_graph_marks_services(write_pipeline: Write) -> None:
    from engine.graph import render

    pipeline = load(
        write_pipeline("""
        version: 1
        stages:
          api: {service: true, run: serve, ready: {tcp: "127.0.0.1:1"}}
          test: {needs: [api], run: check}
    """)
    )
    assert render(pipeline).splitlines()[1:] == ["api   service, ready: tcp", "test  needs: api"]
    assert '  "api" [style="rounded,dashed"];' in render(pipeline, "dot").splitlines()
    assert render(pipeline, "mermaid").splitlines()[-1] == "  class s0 service"
