"""`tty: true` stages under a real pseudo-terminal: size, raw bytes in the log, keystrokes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.loader import load
from engine.ptyproc import TERMINALS
from engine.run import Run
from tests.conftest import Recorder, marked_pids
from tests.ssh.conftest import USER, Sshd, sshd  # noqa: F401 (the sshd fixture)
from tests.waiting import until

Write = Callable[..., Path]


def test_tty_stage_sees_a_terminal_of_the_set_size_and_its_log_keeps_the_bytes(
    write_pipeline: Write, recorder: Recorder
) -> None:
    path = write_pipeline(r"""
        version: 1
        stages:
          term:
            tty: true
            run: |
              test -t 0 && test -t 1 && test -t 2 && echo all three are terminals
              stty size
              printf '\033[31mred\033[0m 50%%\r100%%\n'
          plain: {run: 'test -t 1 || echo no terminal'}
    """)
    TERMINALS.resize_all(100, 30)

    async def go() -> Run:
        run = Run(load(path))
        run.subscribe(recorder)
        assert await run.execute() == 0
        return run

    try:
        run = asyncio.run(go())
    finally:
        TERMINALS.resize_all(120, 40)
    assert recorder.lines("term") == [
        "all three are terminals\r",
        "30 100\r",
        "\x1b[31mred\x1b[0m 50%\r100%\r",
    ]
    assert recorder.lines("plain") == ["no terminal"]
    log = (run.pipeline.state_dir / "logs" / run.run_id / "term" / "1.log").read_bytes()
    assert log == b"all three are terminals\r\n30 100\r\n\x1b[31mred\x1b[0m 50%\r100%\r\n"


def test_keystrokes_reach_the_stage_and_ctrl_c_interrupts_it(
    write_pipeline: Write, recorder: Recorder
) -> None:
    path = write_pipeline("""
        version: 1
        stages:
          ask:
            tty: true
            run: |
              trap 'echo interrupted; exit 5' INT
              printf 'name? \\n'
              read -r name
              echo "hello $name"
              while :; do sleep 0.05; done
    """)

    async def go() -> Run:
        run = Run(load(path))
        run.subscribe(recorder)
        task = asyncio.create_task(run.execute())
        await until(lambda: "name? \r" in recorder.lines("ask"))
        terminal = TERMINALS.find(run.run_id, "ask")
        assert terminal is not None
        terminal.write(b"bob\r")
        await until(lambda: "hello bob\r" in recorder.lines("ask"))
        terminal.write(b"\x03")
        assert await asyncio.wait_for(task, 15) == 1
        assert TERMINALS.find(run.run_id, "ask") is None
        return run

    run = asyncio.run(go())
    # the terminal echoes what was typed, as a terminal does; ^C is the echo of Ctrl-C
    assert recorder.lines("ask") == ["name? \r", "bob\r", "hello bob\r", "^Cinterrupted\r"]
    assert (recorder.final("ask").status, recorder.final("ask").exit_code) == ("failed", 5)
    assert marked_pids(run.run_id) == []


@pytest.mark.ssh
def test_remote_tty_stage_gets_a_pty_and_keystrokes(
    sshd: Sshd,  # noqa: F811
    tmp_path: Path,
    recorder: Recorder,
) -> None:
    path = tmp_path / "pipedeck.yaml"
    path.write_text(
        f"version: 1\nsecrets: [TOKEN]\nhosts:\n  box:\n    address: 127.0.0.2\n"
        f"    port: {sshd.port}\n    user: {USER}\n    identity_file: {sshd.client_key}\n"
        f"    known_hosts: {sshd.known_hosts}\n    workdir: {sshd.root / 'tty' / 'box'}\n"
        "stages:\n  ask:\n    host: box\n    tty: true\n    run: |\n"
        "      test -t 0 && test -t 1 && echo a terminal\n"
        "      stty size\n"
        "      echo 'name?'\n"
        "      read -r name\n"
        '      echo "hello $name"\n'
    )
    TERMINALS.resize_all(100, 30)

    async def go() -> int:
        run = Run(load(path, environ={"TOKEN": "s3cret-value"}))
        run.subscribe(recorder)
        task = asyncio.create_task(run.execute())
        try:
            await until(lambda: "name?\r" in recorder.lines("ask"))
            terminal = TERMINALS.find(run.run_id, "ask")
            assert terminal is not None
            terminal.write(b"bob\r")
            return await asyncio.wait_for(task, 30)
        finally:
            await run.close()

    try:
        assert asyncio.run(go()) == 0
    finally:
        TERMINALS.resize_all(120, 40)
    assert recorder.lines("ask") == ["a terminal\r", "30 100\r", "name?\r", "bob\r", "hello bob\r"]
