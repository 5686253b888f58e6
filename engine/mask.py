"""Secret masking: every non-empty secret value becomes `***` in logs, events and files.

A value of several lines (a PEM key) is masked whole and line by line, as GitHub Actions does:
a stage printing it one line per write has each line masked as it completes (the log writer
masks whole lines), whatever the reads look like. Lines of such a value shorter than
`MIN_LINE` characters (a base64 tail such as `==`) are not masked on their own.

A secret of 1-3 characters is still masked, everywhere: "a secret is never shown" holds for
every value, and an unmasked short secret would be trivially recognisable in a log. The price is
that every occurrence of those characters in every log becomes `***`, so `warn_short` says so
once per secret, naming it, and suggests a longer value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

MASK = "***"
MIN_LINE = 4  # lines of a multi-line secret shorter than this are not masked on their own
SHORT = 3  # secrets of at most this many characters get a warning
_warned: set[str] = set()


def _pieces(value: str) -> set[str]:
    """The texts that mask a secret: the value, and each long enough line of a multi-line one."""
    pieces = {value}
    if "\n" in value or "\r" in value:
        lines = [line.strip() for line in value.splitlines() if line.strip()]
        pieces |= {line for line in lines if len(line) >= MIN_LINE or len(lines) == 1}
    return pieces


class Masker:
    """Replaces secret values, longest first, so a secret containing another is masked whole.

    Values are replaced with `bytes.replace`/`str.replace` (C speed); with no secrets both
    methods return their argument unchanged.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        pieces = set().union(*(_pieces(s) for s in secrets if s))
        self._texts = sorted(pieces, key=len, reverse=True)
        self._bytes = [s.encode() for s in self._texts]
        self.longest = max((len(b) for b in self._bytes if b"\n" not in b), default=0)
        """Length in bytes of the longest secret line (0 without secrets)."""

    def __bool__(self) -> bool:
        return bool(self._bytes)

    def mask(self, data: bytes) -> bytes:
        """`data` with every secret replaced by `***`."""
        for secret in self._bytes:
            if secret in data:
                data = data.replace(secret, b"***")
        return data

    def mask_text(self, text: str) -> str:
        """`text` with every secret replaced by `***`."""
        for secret in self._texts:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


def warn_short(secrets: Mapping[str, str], warn: Callable[[str], None]) -> None:
    """Warn, once per process and secret, about each secret of 1-3 characters (named, never
    shown): it is masked everywhere it appears, which can garble every log."""
    for name, value in sorted(secrets.items()):
        if value and len(value) <= SHORT and name not in _warned:
            _warned.add(name)
            warn(f"secret {name} is only {len(value)} character(s) long: every occurrence of "
                 "it in every log is masked as ***; use a longer value")  # fmt: skip
