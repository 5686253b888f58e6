"""The log view reads only what it shows, over a real LogStore."""

from __future__ import annotations

import re
from pathlib import Path

from textual.app import App, ComposeResult
from textual.geometry import Offset
from textual.selection import Selection

from engine.logs import LogReader, LogStore
from tests.tui.conftest import log_of, shown, until
from tui.widgets.log_view import LogSource, LogView

LINES = 100_000


class CountingReader(LogReader):
    """A real LogReader that counts how many lines it was asked for."""

    served = 0

    def lines(self, start: int, stop: int) -> list[tuple[str, str]]:
        got = super().lines(start, stop)
        CountingReader.served += len(got)
        return got


class OneLog(App[None]):
    def __init__(self, source: LogSource) -> None:
        super().__init__()
        self.source = source
        self.animation_level = "none"  # `home` jumps: no frames in between

    def compose(self) -> ComposeResult:
        yield LogView()

    def on_mount(self) -> None:
        self.query_one(LogView).show(self.source)


def big_log(tmp_path: Path) -> LogSource:
    store = LogStore(tmp_path / "logs")
    writer = store.writer("run", "big", 1)
    writer.feed("stdout", b"".join(b"line %d\n" % i for i in range(1, LINES + 1)))
    writer.finish()
    folder = tmp_path / "logs" / "run" / "big"
    return LogSource("big", 1, lambda: CountingReader(folder / "1.log", folder / "1.idx"))


async def test_only_visible_lines_are_read(tmp_path: Path) -> None:
    CountingReader.served = 0
    app = OneLog(big_log(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        view = app.query_one(LogView)
        assert view.line_count == LINES
        assert shown(view)[-1] == f"line {LINES}"
        assert CountingReader.served <= 3 * 64  # a few blocks around the screen
        view.focus()
        await pilot.press("home")
        await pilot.pause()
        assert shown(view)[0] == "line 1"
        assert CountingReader.served <= 5 * 64


async def test_search_scans_the_whole_log_in_a_thread(tmp_path: Path) -> None:
    app = OneLog(big_log(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        view = app.query_one(LogView)
        view.start_search(re.compile(r"^line 9999\d$"))
        while view.search is None or view.search.scanned < LINES:
            await pilot.pause(0.05)
        assert view.search.matches == [i - 1 for i in range(99990, 100000)]
        assert shown(view)[view.search.hit - view.scroll_offset.y] == "line 99990"


async def test_an_unterminated_line_shows_live_and_then_completes(make_app):
    app = make_app(
        "version: 1\nname: dots\nstages:\n  dots:\n    run: |\n"
        "      echo collected 3 items\n"
        "      printf 'tests/test_a.py ..'\n"
        "      until test -f go; do sleep 0.02; done\n"
        "      printf '.  [100%%]\\n'\n"
        "      echo done\n"
    )
    async with app.run_test(size=(100, 30)) as pilot:
        view = log_of(app)
        await until(pilot, lambda: shown(view)[-1:] == ["tests/test_a.py .."], "the live dots")
        assert view.line_count == 2 and shown(view)[0] == "collected 3 items"
        (app.run_screen.run.pipeline.workspace / "go").write_text("")
        await until(pilot, lambda: shown(view)[-2:] == ["tests/test_a.py ...  [100%]", "done"],
                    "the completed line")  # fmt: skip
        assert view.line_count == 3


def test_the_unterminated_line_is_masked_and_holds_back_what_could_start_a_secret(tmp_path):
    store = LogStore(tmp_path, secrets=["hunter22"])
    writer = store.writer("run", "stage", 1)
    writer.feed("stdout", b"done\npassword: hunter22 and hun")
    # the last 7 bytes (the secret's length - 1: `and hun` could begin it) are held back
    assert store.partial("run", "stage", 1) == ("stdout", "password: *** ")
    writer.feed("stderr", b"progress 50%")
    assert store.partial("run", "stage", 1) == ("stderr", "progr")
    writer.finish()
    assert store.partial("run", "stage", 1) is None


async def test_the_mouse_selects_log_text_and_M_lets_the_terminal_have_it(make_app):
    app = make_app(
        "version: 1\nname: sel\nstages:\n  talk:\n    run: |\n"
        "      echo alpha one\n      echo beta two\n      echo gamma three\n"
    )
    async with app.run_test(size=(100, 30)) as pilot:
        view = log_of(app)
        await until(pilot, lambda: view.line_count == 3, "three lines")
        await pilot.pause(0.1)
        # drag from `one` on the first line to `two` on the second (+1: the border)
        await pilot.mouse_down(view, offset=(7, 1))
        await pilot.hover(view, offset=(9, 2))
        await pilot.mouse_up(view, offset=(9, 2))
        await pilot.pause(0.1)
        assert app.screen.get_selected_text() == "one\nbeta two"
        chosen = view.render_line(1)
        assert any(seg.style and seg.style.bgcolor for seg in chosen if "beta" in seg.text)
        assert view.get_selection(Selection(Offset(0, 2), Offset(5, 2))) == ("gamma", "\n")
        assert app.run_screen.mouse_captured
        await pilot.press("M")
        assert not app.run_screen.mouse_captured
        assert any("mouse off" in n.message for n in app._notifications)
        await pilot.press("M")
        assert app.run_screen.mouse_captured
