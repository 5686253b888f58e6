"""`.env` files: python-dotenv's syntax, every problem as FILE:LINE:COL, never a hang."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from engine.envfile import parse
from tests.conftest import pipedeck_bin

PIPELINE = "version: 1\nsecrets: [TOKEN]\nstages:\n  s:\n    run: echo $TOKEN | wc -c\n"


def validate(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pipedeck.yaml").write_text(PIPELINE)
    env = {k: v for k, v in os.environ.items() if k != "TOKEN"}
    return subprocess.run([pipedeck_bin(), "validate", str(tmp_path / "pipedeck.yaml")],
                          capture_output=True, text=True, timeout=30, env=env)  # fmt: skip


def test_values_quotes_comments_and_multi_line_values() -> None:
    text = textwrap.dedent("""\
        # a comment
        A=1
        export B="two words"
        C='single'
        D=abc # inline comment
        KEY="-----BEGIN KEY-----
        body
        -----END KEY-----"
        E="tab\\there"
        """)
    values, problems = parse(text)
    assert problems == []
    assert values == {"A": "1", "B": "two words", "C": "single", "D": "abc",
                      "KEY": "-----BEGIN KEY-----\nbody\n-----END KEY-----",
                      "E": "tab\there"}  # fmt: skip


@pytest.mark.parametrize(
    ("content", "where"),
    [
        (b"A=1\nB=x\x00y\n", ":2:4: contains a NUL byte"),
        (b"A=1\nB='no end\nC=3\n", ":2:1: unterminated ' quote"),
        (b"A=1\n  not a line\n", ":2:3: expected KEY=VALUE"),
        (b"A=1\n1BAD=2\n", ":2:1: expected KEY=VALUE"),
        (b"A=\xff\n", ":1:3: is not UTF-8 text"),
    ],
)
def test_a_bad_dotenv_is_a_file_line_col_error(tmp_path: Path, content: bytes, where: str):
    (tmp_path / ".env").write_bytes(content)
    done = validate(tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{tmp_path / '.env'}{where}" in done.stderr, done.stderr


def test_a_dotenv_directory_is_reported(tmp_path: Path) -> None:
    (tmp_path / ".env").mkdir()
    done = validate(tmp_path)
    assert done.returncode == 2
    assert f"{tmp_path / '.env'}:1:1: is a directory, not a file" in done.stderr


def test_a_dotenv_fifo_is_reported_without_waiting_on_it(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / ".env")
    done = validate(tmp_path)  # opening the FIFO would block until the 30 s timeout
    assert done.returncode == 2
    assert f"{tmp_path / '.env'}:1:1: is not a regular file" in done.stderr


def test_a_good_dotenv_gives_the_secret(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text('TOKEN="abc"\n')
    assert validate(tmp_path).returncode == 0
