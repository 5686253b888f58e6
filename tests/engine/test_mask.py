"""Masker: secret values become *** in bytes and text."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from engine.logs import LogStore
from engine.mask import Masker
from tests.conftest import pipedeck_bin


def test_masks_every_occurrence_in_bytes_and_text() -> None:
    masker = Masker(["hunter2"])
    assert masker.mask(b"pw=hunter2 again hunter2\n") == b"pw=*** again ***\n"
    assert masker.mask_text("pw=hunter2") == "pw=***"


def test_longest_secret_is_masked_first() -> None:
    masker = Masker(["abc", "abcdef"])
    assert masker.mask(b"x abcdef y abc") == b"x *** y ***"
    assert masker.mask_text("abcdefabc") == "******"
    assert masker.longest == 6


def test_empty_secrets_are_ignored_and_no_secrets_is_identity() -> None:
    masker = Masker(["", ""])
    data = b"nothing to hide"
    assert not masker
    assert masker.mask(data) is data
    assert masker.mask_text("same") == "same"
    assert masker.longest == 0


def test_multibyte_secret() -> None:
    assert Masker(["pässwörd"]).mask("a pässwörd b".encode()) == b"a *** b"


PEM = "-----BEGIN KEY-----\nMIIEowIBAAKCAQEAx1\nc2VjcmV0LWJvZHk=\nZg\n-----END KEY-----"


def test_a_multi_line_secret_printed_one_line_per_write_is_masked_line_by_line(tmp_path):
    """Issue 9.9: each line arrives in its own read; each is masked (short tails excepted)."""
    store = LogStore(tmp_path, secrets=[PEM])
    writer = store.writer("r1", "s", 1)
    shown = []
    for line in PEM.split("\n"):
        shown += writer.feed("stdout", line.encode())  # the line, then its newline, apart
        shown += writer.feed("stdout", b"\n")
    writer.finish()
    assert shown == ["***", "***", "***", "Zg", "***"]
    stored = store.reader("r1", "s", 1).read_bytes().decode()
    assert "MIIEow" not in stored and "c2VjcmV0" not in stored and "BEGIN" not in stored
    assert Masker([PEM]).mask_text(f"key:\n{PEM}\n") == "key:\n***\n"


def test_a_multi_line_secret_from_a_real_process_never_reaches_the_log(tmp_path: Path) -> None:
    (tmp_path / "pipedeck.yaml").write_text(
        "version: 1\nsecrets: [KEY]\nstages:\n  show:\n    run: |\n"
        "      printf '%s\\n' \"$KEY\" | while IFS= read -r line\n"
        '      do echo "$line"; sleep 0.05; done\n'
    )
    done = subprocess.run([pipedeck_bin(), "run", str(tmp_path / "pipedeck.yaml")],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KEY": PEM})  # fmt: skip
    assert done.returncode == 0, done.stderr
    (log,) = (tmp_path / ".pipedeck/logs").glob("*/show/1.log")
    for text in (done.stdout, log.read_text()):
        assert "MIIEow" not in text and "c2VjcmV0" not in text and "BEGIN KEY" not in text
        assert "***" in text and "Zg" in text  # the short tail alone is not masked


def test_a_short_secret_is_masked_and_warned_about_once_by_name(tmp_path: Path) -> None:
    (tmp_path / "pipedeck.yaml").write_text(
        "version: 1\nsecrets: [PIN, TOKEN]\nstages:\n  a:\n    run: echo pin=$PIN tok=$TOKEN\n"
        "  b:\n    needs: [a]\n    run: echo b\n"
    )
    done = subprocess.run([pipedeck_bin(), "run", str(tmp_path / "pipedeck.yaml")],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PIN": "x7", "TOKEN": "long-enough"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "PIN" in line]
    assert len(warned) == 1 and "2 character" in warned[0] and "x7" not in warned[0]
    assert "TOKEN" not in done.stderr
    assert "pin=*** tok=***" in done.stdout
