"""End to end: sample_pipelines/dev.yaml headless, and in the real TUI in tmux (services, `r` on
a service, `t` for a shell, `i` typing into a tty stage)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, pipedeck_bin
from tests.e2e.test_tui_tmux import Tmux, marked, tmux  # noqa: F401 (fixture)
from tests.ssh.conftest import USER, Sshd, sshd  # noqa: F401 (fixture)

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dev_copy(tmp_path: Path, extra: str = "") -> tuple[Path, int, str]:
    """sample_pipelines/dev.yaml and its scripts in tmp_path, on a free port, marked."""
    port = free_port()
    mark = uuid.uuid4().hex
    shutil.copytree(SAMPLES / "dev", tmp_path / "dev")
    text = (SAMPLES / "dev.yaml").read_text().replace("18765", str(port))
    text = text.replace("  SPOOL: .spool\n", f'  SPOOL: .spool\n  E2E_MARK: "{mark}"\n')
    path = tmp_path / "dev.yaml"
    path.write_text(text + extra)
    return path, port, mark


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_dev_sample_headless_runs_its_tests_against_the_services_then_stops_them(
    tmp_path: Path,
) -> None:
    path, port, mark = dev_copy(tmp_path)
    done = subprocess.run(
        [pipedeck_bin(), "run", str(path), "--color", "never"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.splitlines()
    assert "[test] ok test_a_job_is_done_by_the_worker" in out
    assert f"[api] ● ready (http: http://127.0.0.1:{port}/health)" in out
    assert out.index("[worker] ● ready (log: ^worker ready)") < out.index(
        next(line for line in out if line.startswith("[test] ▶ running"))
    )
    assert any(line.startswith("[api] succeeded") for line in out)
    assert any(line.startswith("[worker] succeeded") for line in out)
    assert not listening(port)
    assert marked(mark) == []


TTY_STAGE = """\
  ask:
    tty: true
    run: |
      echo 'your name?'
      read -r name
      echo "hello $name from a terminal"
"""


def test_dev_sample_in_the_tui_restart_shell_and_typing(tmux: Tmux, tmp_path: Path) -> None:  # noqa: F811
    path, port, mark = dev_copy(tmp_path, TTY_STAGE)
    # SHELL=/bin/sh: `t` opens it; no rc file of the machine's (a slow ~/.bashrc) gets in the way
    command = f"SHELL=/bin/sh {pipedeck_bin()} ui {path}; echo PIPEDECK-EXIT=$?; sleep 60"
    size = ("-x", "160", "-y", "48", "-c", str(tmp_path))
    tmux("new-session", "-d", "-s", tmux.session, *size, command)

    def row(screen: str, stage: str) -> str:
        """The stage's row of the tree (the left pane)."""
        lefts = (line.split("││")[0] for line in screen.splitlines())
        return next((left for left in lefts if left[2:].startswith(f" {stage} ")), "")

    tmux.wait(lambda s: "✔ test" in s and "◉ api" in s and "◉ worker" in s, "services and tests")
    assert row(tmux.screen(), "api").rstrip(" │").endswith("ready")
    assert listening(port)  # the TUI keeps services running after the tests passed

    # r on the api service: it restarts, and the test reruns once it is ready again
    tmux.wait(lambda s: "◉ api" in s, "api ready")
    tmux.keys("j")  # lint -> api
    tmux.wait(lambda s: "api listening" in s, "the api's log")
    tmux.keys("r")
    tmux.wait(lambda s: "2/3" in row(s, "api") and "◉ api" in s, "api restarted and ready")
    tmux.wait(lambda s: "✔ test" in s and "#2" in row(s, "test"), "the test rerun")

    # t on the test stage: a shell in its directory with its environment, then back
    tmux.keys("j", "j")  # worker -> test
    tmux.wait(lambda s: "ok test_health" in s, "the test's log")
    tmux.keys("t")
    tmux.wait(lambda s: "a shell for test" in s, "the shell")
    tmux.keys('echo "in $(pwd) port $API_PORT stage $PIPEDECK_STAGE"', "Enter")
    tmux.wait(lambda s: f"in {tmp_path / 'dev'} port {port} stage test" in s, "the shell's echo")
    tmux.keys("exit", "Enter")
    tmux.wait(lambda s: "✔ test" in s and "◉ api" in s, "the TUI back")

    # i on the tty stage: keys go to it until Esc
    tmux.keys("j")  # test -> ask
    tmux.wait(lambda s: "your name?" in s, "the prompt")
    tmux.keys("i")
    tmux.wait(lambda s: "typing into ask" in s, "typing mode")
    tmux.keys("b", "o", "b", "Enter")
    tmux.wait(lambda s: "hello bob from a terminal" in s, "the answer")
    tmux.keys("Escape")
    tmux.wait(lambda s: "✔ ask" in s and "typing into" not in s, "back to the tree")

    tmux.keys("q")
    tmux.wait(lambda s: "Cancel it and quit?" in s, "the confirmation")
    tmux.keys("y")
    tmux.wait(lambda s: "PIPEDECK-EXIT=" in s, "pipedeck to exit")
    assert not listening(port)
    assert marked(mark) == []


@pytest.mark.ssh
def test_t_on_a_remote_stage_opens_a_shell_in_its_remote_workdir_with_a_pty(
    tmux: Tmux,  # noqa: F811
    sshd: Sshd,  # noqa: F811
    tmp_path: Path,
) -> None:
    workdir = sshd.root / "e2e-shell" / "box"
    path = tmp_path / "pipedeck.yaml"
    path.write_text(
        # SHELL=/bin/sh: the remote shell `t` opens, without the login's rc files
        f"version: 1\nenv: {{GREETING: hello, SHELL: /bin/sh}}\nhosts:\n  box:\n"
        "    address: 127.0.0.2\n"
        f"    port: {sshd.port}\n    user: {USER}\n    identity_file: {sshd.client_key}\n"
        f"    known_hosts: {sshd.known_hosts}\n    workdir: {workdir}\n"
        "stages:\n  build:\n    host: box\n    run: echo built\n"
    )
    command = f"{pipedeck_bin()} ui {path}; echo PIPEDECK-EXIT=$?; sleep 60"
    tmux("new-session", "-d", "-s", tmux.session, "-x", "160", "-y", "48", command)
    tmux.wait(lambda s: "✔ build" in s, "the remote stage", timeout=400)
    tmux.keys("t")
    tmux.wait(lambda s: "a shell for build" in s, "the shell", timeout=60)
    tmux.wait(lambda s: s.rstrip().endswith(("#", "$")), "the remote prompt", timeout=400)
    # a PTY: `tty` names a terminal; the remote shell is in the workdir with the stage's env
    tmux.keys('echo "$GREETING $PIPEDECK_STAGE in $(pwd) on $(tty)"', "Enter")
    tmux.wait(lambda s: f"hello build in {workdir} on /dev/pts/" in s, "the echo", timeout=400)
    tmux.keys("exit", "Enter")
    tmux.wait(lambda s: "✔ build" in s and "a shell for" not in s, "the TUI back")
    tmux.keys("q")
    tmux.wait(lambda s: "PIPEDECK-EXIT=0" in s, "pipedeck to exit")
