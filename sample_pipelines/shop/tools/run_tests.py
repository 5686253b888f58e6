"""Runs the unit tests or the doctests of the shop package."""

import doctest
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path("src").resolve()))
import shop.cart

if sys.argv[1] == "doctest":
    result = doctest.testmod(shop.cart, verbose=False)
    print(f"doctest: {result.attempted} examples, {result.failed} failed")
    sys.exit(1 if result.failed else 0)
suite = unittest.defaultTestLoader.discover("tests")
outcome = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
sys.exit(0 if outcome.wasSuccessful() else 1)
