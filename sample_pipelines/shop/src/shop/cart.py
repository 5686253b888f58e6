"""A shopping cart with integer cents."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Cart:
    """Items in cents, by name.

    >>> cart = Cart()
    >>> cart.add("tea", 450, 2)
    >>> cart.total()
    900
    """

    items: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add(self, name: str, cents: int, quantity: int = 1) -> None:
        """Add `quantity` of `name` at `cents` each."""
        if cents < 0 or quantity < 1:
            raise ValueError("price must be >= 0 and quantity >= 1")
        _, held = self.items.get(name, (cents, 0))
        self.items[name] = (cents, held + quantity)

    def total(self) -> int:
        """The cart's total in cents."""
        return total(self.items.values())


def total(lines: object) -> int:
    """Sum (cents, quantity) pairs.

    >>> total([(100, 2), (5, 1)])
    205
    """
    return sum(cents * quantity for cents, quantity in lines)  # type: ignore[attr-defined]
