"""Failure first: a run that ends failed selects its first failure and opens its log at the first
error line; `e` steps through the error lines."""

from __future__ import annotations

from engine.events import FAILED
from tests.tui.conftest import log_of, status, tree_of, until

PYTEST_LIKE = """\
version: 1
name: ff
stages:
  fine:
    run: echo fine
  unit:
    run: |
      for i in $(seq 1 60); do echo "tests/test_$i.py ."; done
      echo "    def test_total():"
      echo ">       assert total() == 42"
      echo "E       assert 41 == 42"
      echo "tests/test_cart.py:12: AssertionError"
      echo "FAILED tests/test_cart.py::test_total - assert 41 == 42"
      touch unit-done
      exit 1
  later:
    run: |
      until test -f unit-done; do sleep 0.02; done
      echo "Traceback (most recent call last):"
      exit 2
"""


async def test_a_failed_run_opens_the_first_failure_at_its_first_error_and_e_steps(make_app):
    app = make_app(PYTEST_LIKE)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "later") == FAILED, "the run to fail")
        view = log_of(app)
        await until(pilot, lambda: tree_of(app).selected_ids == ["unit"], "unit selected")
        await until(pilot, lambda: view.search and view.search.hit is not None, "the first error")
        assert view.search.label == "errors"
        assert view.search.hit == 62  # `E       assert 41 == 42` (line 63)
        assert "errors 1/2" in str(view.border_subtitle)  # the E line and the FAILED line
        top = view.scroll_offset.y
        assert top <= 62 < top + view.scrollable_content_region.height
        await pilot.press("e")
        assert view.search.hit == 64
        await pilot.press("e")
        assert view.search.hit == 62  # around again
        assert app.focused is tree_of(app)


async def test_a_failure_without_error_lines_opens_at_the_end(make_app):
    app = make_app("version: 1\nname: plain\nstages:\n  quiet:\n    run: seq 1 300; exit 1\n")
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "quiet") == FAILED, "the failure")
        view = log_of(app)
        await until(pilot, lambda: view.search and view.search.scanned == 300, "the scan")
        assert view.search.matches == []
        assert view.follow and view.scroll_offset.y == view.max_scroll_y


async def test_allowed_failures_are_not_opened_first(make_app):
    app = make_app(
        "version: 1\nname: allowed\nstages:\n  flaky:\n    allow_failure: true\n    run: exit 1\n"
        "  real:\n    needs: [flaky]\n    run: |\n      echo 'error: it broke'\n      exit 1\n"
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "real") == FAILED, "the failure")
        await until(pilot, lambda: tree_of(app).selected_ids == ["real"], "real selected")
        view = log_of(app)
        await until(pilot, lambda: view.search and view.search.hit == 0, "its error line")
