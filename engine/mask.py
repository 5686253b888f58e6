"""Secret masking: every non-empty secret value becomes `***` in logs, events and files."""

from __future__ import annotations

from collections.abc import Iterable

MASK = "***"


class Masker:
    """Replaces secret values, longest first, so a secret containing another is masked whole.

    Values are replaced with `bytes.replace`/`str.replace` (C speed); with no secrets both
    methods return their argument unchanged.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self._texts = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._bytes = [s.encode() for s in self._texts]
        self.longest = len(self._bytes[0]) if self._bytes else 0
        """Length in bytes of the longest secret (0 without secrets)."""

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
