"""The log view reads only what it shows, over a real LogStore."""

from __future__ import annotations

import asyncio
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
    app = OneLog(await asyncio.to_thread(big_log, tmp_path))  # writing it: off the loop
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
    app = OneLog(await asyncio.to_thread(big_log, tmp_path))  # writing it: off the loop
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


def selected(view: LogView, y: int) -> str:
    """The text of row `y` drawn in the selection's colours."""
    chosen = view.screen.get_component_rich_style("screen--selection")
    return "".join(
        seg.text for seg in view.render_line(y) if seg.style and seg.style.bgcolor == chosen.bgcolor
    )


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
        assert selected(view, 1) == "beta two"
        assert view.get_selection(Selection(Offset(0, 2), Offset(5, 2))) == ("gamma", "\n")
        assert app.run_screen.mouse_captured
        await pilot.press("M")
        assert not app.run_screen.mouse_captured
        assert any("mouse off" in n.message for n in app._notifications)
        await pilot.press("M")
        assert app.run_screen.mouse_captured


WORDS = " ".join(f"w{i:02d}" for i in range(40))  # 159 characters: three rows in the pane


async def test_the_mouse_selects_across_wrapped_rows(make_app):
    app = make_app(
        "version: 1\nname: sel\nstages:\n  talk:\n    run: |\n"
        f"      echo alpha\n      echo '{WORDS}'\n      echo omega end\n"
    )
    async with app.run_test(size=(100, 30)) as pilot:
        view = log_of(app)
        await until(pilot, lambda: view.line_count == 3, "three lines")
        await pilot.press("w")
        await until(pilot, lambda: len(shown(view)) > 3, "the long line wrapped")
        rows = shown(view)
        assert rows[0] == "alpha" and rows[-1] == "omega end"

        def at(word: str, end: bool = False) -> tuple[int, int]:
            """Where `word` (its last character with `end`) is drawn, as an offset in the view
            (+1: the border)."""
            y = next(y for y, row in enumerate(rows) if word in row)
            return rows[y].index(word) + (len(word) - 1 if end else 0) + 1, y + 1

        async def drag(start: tuple[int, int], stop: tuple[int, int]) -> str | None:
            await pilot.mouse_down(view, offset=start)
            await pilot.hover(view, offset=stop)
            await pilot.mouse_up(view, offset=stop)
            await pilot.pause(0.1)
            return app.screen.get_selected_text()

        assert at("w05")[1] < at("w30")[1] < at("omega")[1]  # on three different rows
        assert (
            await drag(at("w05"), at("w30", end=True))
            == WORDS[WORDS.index("w05") : WORDS.index("w30") + 3]
        )
        middle = at("w20")[1] - 1
        assert selected(view, middle).rstrip() == rows[middle]  # all of the middle row
        assert selected(view, at("w30")[1] - 1) == "w30"
        assert (
            await drag(at("w20"), at("omega", end=True)) == WORDS[WORDS.index("w20") :] + "\nomega"
        )
        assert await drag(at("alpha"), (view.size.width - 3, at("w05")[1])) == "alpha\n" + rows[1]


async def test_the_line_count_in_the_border_says_line_for_one(make_app):
    app = make_app("version: 1\nname: one\nstages:\n  talk:\n    run: |\n      echo only\n")
    async with app.run_test(size=(100, 30)) as pilot:
        view = log_of(app)
        await until(pilot, lambda: view.line_count == 1, "the line")
        await until(pilot, lambda: "1 line ·" in str(view.border_subtitle), "'1 line'")
