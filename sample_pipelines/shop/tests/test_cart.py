import unittest

from shop import Cart


class CartTest(unittest.TestCase):
    def test_total_sums_quantities(self) -> None:
        cart = Cart()
        cart.add("tea", 450, 2)
        cart.add("cake", 300)
        self.assertEqual(cart.total(), 1200)

    def test_rejects_negative_price(self) -> None:
        with self.assertRaises(ValueError):
            Cart().add("tea", -1)


if __name__ == "__main__":
    unittest.main()
