"""Masker: secret values become *** in bytes and text."""

from __future__ import annotations

from engine.mask import Masker


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
