"""A tiny shop: prices and carts, the package the ci.yaml sample builds."""

from shop.cart import Cart, total

__all__ = ["Cart", "total"]
__version__ = "0.1.0"
