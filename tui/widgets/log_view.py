"""A Line-API log view over a stage's stored log (toolong's `log_lines.py` pattern).

Only the lines on screen are read from the `LogReader` and rendered, through LRU caches; the log
is never held whole in memory. New output is pulled by `poll()`, which the screen calls from a
timer, never once per line. Search scans the log in a worker thread with its own reader.

A reader with `folds` (a GitHub Actions job's, `tui.widgets.steps.JobReader`) shows its log with
some groups folded: line numbers here are the folded log's; search hits are the whole log's
(`_shown_line`/`_stored_line` translate); `z` folds and unfolds the group at the top of the
screen (its end found in a worker thread, as search is).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple, Protocol, runtime_checkable

from rich._wrap import divide_line  # where `Text.wrap` breaks a line: its rows' offsets
from rich.cells import cell_len
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import work
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Offset, Size
from textual.markup import escape
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.selection import Selection
from textual.strip import Strip
from textual.worker import get_current_worker

from tui.widgets.groups import ESCAPES, GROUP, Folds, group_around, group_stop

_SPECIAL = re.compile(r"[\x00-\x1f\x7f]")  # escapes, \r, tabs: lines that need parsing
_SCAN_CHUNK = 20_000  # lines per read while searching
_BLOCK = 64  # lines per read while rendering
SELECT_LIMIT = 100_000  # lines a mouse selection copies at most


class Row(NamedTuple):
    """A wrapped row on screen."""

    line: int
    start: int  # the offset of its first character in the line
    strip: Strip
    more: bool  # the line goes on in the next row


class LineReader(Protocol):
    """What the view needs of `engine.logs.LogReader`."""

    def __len__(self) -> int: ...
    def lines(self, start: int, stop: int) -> list[tuple[str, str]]: ...


@runtime_checkable
class FoldingReader(LineReader, Protocol):
    """A reader that folds groups (`tui.widgets.steps.JobReader`): `len` and `lines` are the
    folded log's, `raw` and `stored_len` the whole log's."""

    folds: Folds

    def raw(self, start: int, stop: int) -> list[str]: ...
    def stored_len(self) -> int: ...


@dataclass(frozen=True)
class LogSource:
    """One attempt's log: `open()` gives a fresh reader (each thread uses its own)."""

    stage_id: str
    attempt: int
    open: Callable[[], LineReader] = field(compare=False)
    run_id: str = ""
    partial: Callable[[], tuple[str, str] | None] | None = field(default=None, compare=False)
    """The unterminated line being written (shown live after the stored ones), if any."""
    step: int | None = None
    """The step of a GitHub Actions job whose lines it shows (None: the whole log)."""


def last_state(line: str) -> str:
    """What a terminal shows for a line with `\\r` progress updates: its last state."""
    line = line.rstrip("\r")
    return line.rsplit("\r", 1)[-1] if "\r" in line else line


def plain(line: str) -> str:
    """The line as displayed, without ANSI escapes: what search and copy see."""
    line = last_state(line)
    return ESCAPES.sub("", line) if "\x1b" in line else line


def _shown(line: str) -> str:
    """The line's text as drawn (tabs expanded): what mouse selection offsets count in."""
    text = plain(line)
    return text.expandtabs(8) if "\t" in text else text


ERRORS = re.compile(
    r"^Traceback \(most recent call last\)"  # Python
    r"|^FAILED\b|^E {3}"  # pytest's summary and assertion lines
    r"|^\w+(?:\.\w+)*(?:Error|Exception):"  # an exception's last line
    r"|\b[Ee]rror(?:\[\w+\])?:|\bERROR\b"  # compilers, linters, loggers
)
"""Lines that say something failed: what `e` jumps to and failure-first opens at."""


@dataclass
class Search:
    """A regex search over one log: the (sorted) indices of matching lines, scanned so far.

    `label` names it in the status line instead of the pattern; `from_start` makes the first
    hit the log's first match (else the first at or below the top of the screen), and the end
    of the log when nothing matches."""

    pattern: re.Pattern[str]
    matches: list[int] = field(default_factory=list)
    scanned: int = 0
    current: int | None = None  # index into `matches`
    label: str = ""
    from_start: bool = False

    @property
    def hit(self) -> int | None:
        """The line number of the current hit."""
        return None if self.current is None else self.matches[self.current]


class LogView(ScrollView, can_focus=True):
    """Shows one stage's log; follows new output; searches, wraps, copies; the mouse selects
    text (wrapped or not)."""

    ALLOW_SELECT = True

    DEFAULT_CSS = """
    LogView {
        border: round $foreground 30%;
        border-title-color: $text;
        border-subtitle-color: $text-muted;
        background: $surface;
        scrollbar-size-vertical: 1;
    }
    LogView:focus { border: round $border; }
    LogView > .log-view--stderr { color: $text-error; }
    LogView > .log-view--match { background: $warning 40%; }
    LogView > .log-view--hit { background: $accent; color: $text; text-style: bold; }
    LogView > .log-view--placeholder { color: $text-muted; text-style: italic; }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "log-view--stderr",
        "log-view--match",
        "log-view--hit",
        "log-view--placeholder",
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "scroll_down", "Down", show=False),
        Binding("k", "scroll_up", "Up", show=False),
        Binding("end", "follow_end", "End", show=False),
        Binding("z", "toggle_group", "Fold", show=False),  # where the screen has no `z` (history)
        Binding("enter", "screen.toggle_focus", "Tree", show=False),
    ]

    follow: reactive[bool] = reactive(True)
    wrap: reactive[bool] = reactive(False)

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.stage_id: str | None = None  # set by the screen: whose log this pane shows
        self.source: LogSource | None = None
        self.placeholder = ""
        self.search: Search | None = None
        self._reader: LineReader | None = None
        self._count = 0  # lines shown: the stored ones and the unterminated one
        self._stored = 0  # lines in the store
        self._tail: tuple[str, str] | None = None  # the unterminated line, shown last
        self._max_width = 0
        self._gen = 0  # bumps when rendering inputs change (search, theme)
        self._lines: LRUCache[int, tuple[str, str]] = LRUCache(2048)
        self._texts: LRUCache[tuple[int, int], Text] = LRUCache(1024)
        self._strips: LRUCache[tuple[int, int], Strip] = LRUCache(1024)
        self._styles: dict[str, Style] = {}
        self._wrapped: LRUCache[tuple[int, int, int], list[tuple[int, Strip]]] = LRUCache(1024)
        self._rows: tuple[tuple[object, ...], list[Row]] | None = None
        self._anchor_top = 0  # first line shown by the last bottom-anchored (wrapped) render
        self._auto_scroll = False
        self._folds: dict[LogSource, Folds] = {}  # each log's folded groups, for the view's life

    # -- source -------------------------------------------------------------------------------

    def show(self, source: LogSource | None, placeholder: str = "") -> None:
        """Switch to another log (or none, showing `placeholder`); follow is turned back on."""
        same = source == self.source
        self.placeholder = placeholder
        if not same:
            self.source, self._reader, self._count, self._max_width = source, None, 0, 0
            self._stored, self._tail = 0, None
            self.search = None
            self._lines.clear()
            self._invalidate()
            self.follow = True
        self.poll()
        self.refresh()
        self._status_changed()

    def poll(self) -> None:
        """Pull the log's new length; scroll to the end when following. Cheap when unchanged."""
        if self.source is None:
            self._resize(0)
            return
        try:
            if self._reader is None:
                self._reader = self.source.open()
                if isinstance(self._reader, FoldingReader):
                    self._reader.folds = self._folds.setdefault(self.source, Folds())
            stored = len(self._reader)
        except OSError as error:  # not created yet, or unreadable: say so, try again later
            self.placeholder = f"log not readable: {error.strerror or error}"
            return
        tail = self.source.partial() if self.source.partial is not None else None
        if tail != self._tail or stored != self._stored:
            if self._tail is not None:
                self._forget(self._stored)  # the old unterminated line's row
            self._stored, self._tail = stored, tail
        count = stored + (tail is not None)
        if count != self._count:
            self._resize(count)
            if self.search is not None:
                self._scan()
            self._status_changed()
        if self.follow:
            self._scroll_end()

    def _forget(self, index: int) -> None:
        """Drop what the caches hold for one line (the unterminated one changed)."""
        self._lines.discard(index)
        self._texts.discard((index, self._gen))
        self._strips.discard((index, self._gen))
        self._wrapped.clear()
        self._rows = None
        self.refresh()

    @property
    def line_count(self) -> int:
        """Lines known in the current log."""
        return self._count

    def _resize(self, count: int) -> None:
        grew = count > self._count
        self._count = count
        if not grew:
            self._lines.clear()
            self._invalidate()
        self._set_virtual_size()
        self._rows = None
        self.refresh()

    def _set_virtual_size(self) -> None:
        if self.wrap:
            region = self.scrollable_content_region
            self.virtual_size = Size(region.width, self._count + max(0, region.height - 1))
        else:
            self.virtual_size = Size(self._max_width, self._count)

    def _invalidate(self) -> None:
        self._gen += 1
        self._texts.clear()
        self._strips.clear()
        self._wrapped.clear()
        self._rows = None

    def on_resize(self) -> None:
        self._wrapped.clear()
        self._rows = None
        self._set_virtual_size()
        if self.follow:
            self.call_after_refresh(self._scroll_end)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._invalidate()

    # -- reading and rendering ----------------------------------------------------------------

    def _line(self, index: int) -> tuple[str, str]:
        if self._tail is not None and index == self._stored:
            return self._tail
        cached = self._lines.get(index)
        if cached is not None:
            return cached
        assert self._reader is not None
        start = index - index % _BLOCK
        stop = min(self._stored, start + _BLOCK)
        for offset, item in enumerate(self._reader.lines(start, stop)):
            self._lines[start + offset] = item
        return self._lines.get(index) or ("stdout", "")

    def _text(self, index: int) -> Text:
        key = (index, self._gen)
        text = self._texts.get(key)
        if text is None:
            stream, raw = self._line(index)
            line = last_state(raw)
            base = self._style("log-view--stderr") if stream == "stderr" else ""
            text = (
                Text.from_ansi(line, style=base, end="")
                if "\x1b" in line
                else Text(line, base, end="")
            )
            if "\t" in line:
                text.expand_tabs(8)
            gutter = self._gutter(index)
            if gutter is not None:
                text.stylize(gutter[1], 0, gutter[0])
            self._highlight(index, text)
            self._texts[key] = text
        return text

    def _gutter(self, index: int) -> tuple[int, Style] | None:
        """(cells, style) of the line's prefix when the reader colours one (the merged log's
        stage names): plain text in the store, coloured here without parsing escapes."""
        gutter = getattr(self._reader, "gutter", 0)
        if not gutter or index >= self._stored:
            return None
        colour = self._reader.gutter_colour(index)  # type: ignore[union-attr]
        return gutter, Style(color=Color.from_ansi(colour))

    def _highlight(self, index: int, text: Text) -> None:
        search = self.search
        if search is None:
            return
        hit = search.hit is not None and search.hit == self._stored_line(index)
        component = "log-view--hit" if hit else "log-view--match"
        style = self._style(component)
        for match in search.pattern.finditer(text.plain):
            if match.end() > match.start():
                text.stylize(style, match.start(), match.end())

    def _style(self, component: str = "") -> Style:
        """The widget's style, or a component's; cached until the styles change."""
        style = self._styles.get(component)
        if style is None:
            style = self._styles[component] = (
                self.get_component_rich_style(component) if component else self.rich_style
            )
        return style

    def _render(self, text: Text) -> Strip:
        """A Strip of `text` over the widget's style (`Text.render` leaves text.style out)."""
        strip = Strip(text.render(self.app.console), text.cell_len)
        base = self._style()
        return strip.apply_style(base + text.style if isinstance(text.style, Style) else base)

    def _strip(self, index: int) -> Strip:
        key = (index, self._gen)
        strip = self._strips.get(key)
        if strip is None:
            stream, raw = self._line(index)
            if self.search is None and not _SPECIAL.search(raw):  # plain text: no Text needed
                style = (
                    self._style() + self._style("log-view--stderr")
                    if stream == "stderr"
                    else (self._style())
                )
                gutter = self._gutter(index)
                segments = (
                    [Segment(raw[: gutter[0]], style + gutter[1]), Segment(raw[gutter[0] :], style)]
                    if gutter is not None
                    else [Segment(raw, style)]
                )
                strip = Strip(segments, cell_len(raw))
            else:
                strip = self._render(self._text(index))
            self._strips[key] = strip
            if strip.cell_length > self._max_width:
                self._max_width = strip.cell_length
                self.call_later(self._set_virtual_size)
        return strip

    def _wrapped_rows(self, index: int, width: int) -> list[tuple[int, Strip]]:
        """Line `index` wrapped at `width` (as `Text.wrap` with fold does it): each row with
        the offset of its first character in the line."""
        key = (index, width, self._gen)
        rows = self._wrapped.get(key)
        if rows is None:
            text = self._text(index)
            breaks = divide_line(text.plain, width, fold=True)
            rows = []
            for start, piece in zip([0, *breaks], text.divide(breaks), strict=True):
                piece.rstrip_end(width)
                rows.append((start, self._render(piece)))
            self._wrapped[key] = rows
        return rows

    def _wrapped_screen(self, width: int, height: int) -> list[Row]:
        key = (self.scroll_offset.y, width, height, self._count, self._gen, self.follow)
        if self._rows is not None and self._rows[0] == key:
            return self._rows[1]
        rows: list[Row] = []
        if self.follow:  # bottom-anchored: the last lines, wrapped, fill the screen
            index = self._count - 1
            while index >= 0 and len(rows) < height:
                rows[:0] = self._line_rows(index, width)
                index -= 1
            self._anchor_top = index + 1
            rows = rows[-height:]
        else:
            index = self.scroll_offset.y
            while index < self._count and len(rows) < height:
                rows.extend(self._line_rows(index, width))
                index += 1
        self._rows = (key, rows)
        return rows

    def _line_rows(self, index: int, width: int) -> list[Row]:
        pieces = self._wrapped_rows(index, width)
        last = len(pieces) - 1
        return [Row(index, start, strip, n < last) for n, (start, strip) in enumerate(pieces)]

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        style = self._style()
        if self.source is None or self._count == 0:
            if y == 0 and self.placeholder:
                text = Text(
                    " " + self.placeholder,
                    self._style("log-view--placeholder"),
                    no_wrap=True,
                    end="",
                )
                return self._render(text).crop_extend(0, width, style)
            return Strip.blank(width, style)
        if self.wrap:
            rows = self._wrapped_screen(width, self.scrollable_content_region.height)
            if y >= len(rows):
                return Strip.blank(width, style)
            row = rows[y]
            strip = self._selected(row.strip, row.line, row.start)
            strip = strip.apply_offsets(row.start, row.line)
            pad = width - strip.cell_length
            if row.more and pad > 0 and strip.cell_length:
                # past the end of a row that the next one continues: the row's last character
                # (the selection ends after the character under the mouse), not the next row's
                end = Style.from_meta({"offset": (row.start + strip.cell_length - 1, row.line)})
                strip = Strip.join([strip, Strip([Segment(" ", style + end)] * pad, pad)])
            return strip.crop_extend(0, width, style)
        index = self.scroll_offset.y + y
        if index >= self._count:
            return Strip.blank(width, style)
        x = self.scroll_offset.x
        strip = self._selected(self._strip(index), index, 0)
        return strip.crop_extend(x, x + width, style).apply_offsets(x, index)

    def _selected(self, strip: Strip, index: int, start: int) -> Strip:
        """`strip` (line `index` from its character `start` on) with the part of it that the
        mouse selected in the screen's selection style."""
        selection = self.text_selection
        span = selection.get_span(index) if selection is not None else None
        if span is None:
            return strip
        length = strip.cell_length
        first = max(0, span[0] - start)
        last = length if span[1] == -1 else min(length, span[1] - start)
        if first >= last:
            return strip
        chosen = self.screen.get_component_rich_style("screen--selection")
        part = strip.crop(first, last)  # over the line's own colours, as a Text span would be
        part = Strip(Segment.apply_style(list(part), post_style=chosen), part.cell_length)
        return Strip.join([strip.crop(0, first), part, strip.crop(last, length)])

    # -- mouse selection ------------------------------------------------------------------------

    def get_selection(self, selection: Selection) -> tuple[str, str] | None:
        """The text under the mouse selection (lines read from the store, at most
        `SELECT_LIMIT`): offsets are (character in the line as drawn, line), wrapped or not."""
        if self._reader is None:
            return None
        first = selection.start.y if selection.start is not None else 0
        last = selection.end.y if selection.end is not None else self._count - 1
        last = min(last, first + SELECT_LIMIT - 1, self._count - 1)
        lines = [_shown(self._line(i)[1]) for i in range(first, last + 1)]
        shifted = Selection(
            None if selection.start is None else selection.start - Offset(0, first),
            None if selection.end is None else selection.end - Offset(0, first),
        )
        return shifted.extract("\n".join(lines)), "\n"

    def selection_updated(self, selection: Selection | None) -> None:
        self.refresh()

    # -- follow, wrap, scrolling --------------------------------------------------------------

    def _scroll_end(self) -> None:
        self._auto_scroll = True
        try:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)
        finally:
            self._auto_scroll = False

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        # Up, and no longer at the end (a resize clamping to the end is not the user leaving it).
        scrolled_up = new_value < old_value and new_value < self.max_scroll_y
        if scrolled_up and not self._auto_scroll and self.follow:
            self.follow = False

    def watch_follow(self, follow: bool) -> None:
        if follow:
            self._scroll_end()
        elif self.wrap:  # keep the screen where the bottom-anchored render left it
            self._auto_scroll = True
            try:
                self.scroll_to(y=self._anchor_top, animate=False, immediate=True, force=True)
            finally:
                self._auto_scroll = False
        self._rows = None
        self.refresh()
        self._status_changed()

    def watch_wrap(self, wrap: bool) -> None:
        self.styles.overflow_x = "hidden" if wrap else "auto"
        self._rows = None
        self._set_virtual_size()
        if self.follow:
            self._scroll_end()
        self.refresh()
        self._status_changed()

    def action_follow_end(self) -> None:
        """Jump to the end and follow new output."""
        self.follow = True
        self._scroll_end()

    def go_to(self, index: int) -> None:
        """Show line `index` a third of the way down the screen; stops following."""
        self.follow = False
        top = max(0, index - self.scrollable_content_region.height // 3)
        self._auto_scroll = True
        try:
            self.scroll_to(y=top, animate=False, immediate=True, force=True)
        finally:
            self._auto_scroll = False
        self.refresh()

    # -- search -------------------------------------------------------------------------------

    def start_search(
        self, pattern: re.Pattern[str] | None, *, label: str = "", from_start: bool = False
    ) -> None:
        """Search for `pattern` (None clears the search); see `Search` for the options."""
        self.search = (
            None if pattern is None else Search(pattern, label=label, from_start=from_start)
        )
        self._invalidate()
        self.refresh()
        if self.search is not None:
            self._scan()
        self._status_changed()

    def next_match(self, step: int = 1) -> bool:
        """Move to the next (`step=1`) or previous (`step=-1`) hit; False when there is none."""
        search = self.search
        if search is None or not search.matches:
            return False
        if search.current is None and search.from_start:
            search.current = 0 if step > 0 else len(search.matches) - 1
        elif search.current is None:
            top = self._stored_line(self.scroll_offset.y)
            after = [i for i, line in enumerate(search.matches) if line >= top]
            search.current = (
                after[0]
                if after and step > 0
                else ((after[0] - 1) % len(search.matches) if after else len(search.matches) - 1)
            )
        else:
            search.current = (search.current + step) % len(search.matches)
        hit = search.matches[search.current]
        self._reveal(hit)
        self._invalidate()
        self.go_to(self._shown_line(hit))
        self._status_changed()
        return True

    def _scan(self) -> None:
        search, source = self.search, self.source
        stored = self._stored_count()
        if search is not None and source is not None and search.scanned < stored:
            self._scan_worker(search, source, stored)

    @work(thread=True, exclusive=True, group="log-search", exit_on_error=False)
    def _scan_worker(self, search: Search, source: LogSource, stop: int) -> None:
        worker = get_current_worker()
        reader = source.open()
        start = search.scanned
        while start < stop and not worker.is_cancelled:
            end = min(stop, start + _SCAN_CHUNK)
            found = [
                start + i
                for i, (_, text) in enumerate(reader.lines(start, end))
                if search.pattern.search(plain(text))
            ]
            self.app.call_from_thread(self._scanned, search, start, found, end)
            start = end

    def _scanned(self, search: Search, start: int, found: list[int], upto: int) -> None:
        if search is not self.search or start != search.scanned:
            return  # a newer search, or a chunk a restarted scan reported already
        first = not search.matches and found
        search.matches.extend(found)
        search.scanned = upto
        if first:
            self.next_match()
        elif search.from_start and not search.matches and upto >= self._stored_count():
            self.action_follow_end()  # nothing matched: the end is where a failure shows
        else:
            self._invalidate()
            self.refresh()
        self._status_changed()

    # -- copy -----------------------------------------------------------------------------------

    def visible_text(self) -> str:
        """The lines on screen, as plain text."""
        if self._reader is None:
            return ""
        top = self.scroll_offset.y if not (self.wrap and self.follow) else self._anchor_top
        stop = min(self._count, top + self.scrollable_content_region.height)
        return "\n".join(plain(text) for _, text in self._reader.lines(top, stop))

    def hit_text(self) -> str | None:
        """The line of the current search hit, as plain text."""
        if self.search is None or self.search.hit is None or self._reader is None:
            return None
        at = self._shown_line(self.search.hit)
        return plain(self._reader.lines(at, at + 1)[0][1])

    def _status_changed(self) -> None:
        self.border_subtitle = escape(self.status_text()) if self.source else ""

    def status_text(self) -> str:
        """Line count and follow / wrap / search state, shown in the bottom border."""
        parts = [
            f"{self._count:,} line{'s' * (self._count != 1)}",
            "follow" if self.follow else "paused",
        ]
        if self.wrap:
            parts.append("wrap")
        if self.search is not None:
            s = self.search
            pos = f"{s.current + 1}/" if s.current is not None else ""
            more = "+" if s.scanned < self._stored_count() else ""
            parts.append(f"{s.label or f'/{s.pattern.pattern}/'} {pos}{len(s.matches)}{more}")
        return " · ".join(parts)

    # -- groups (a GitHub Actions job's log) ----------------------------------------------------

    @property
    def folds(self) -> Folds | None:
        """The current log's folded groups; None when its reader has no groups."""
        reader = self._reader
        return reader.folds if isinstance(reader, FoldingReader) else None

    def _shown_line(self, stored: int) -> int:
        """Where line `stored` of the whole log shows (search hits are the whole log's)."""
        folds = self.folds
        return stored if folds is None else folds.shown(stored)

    def _stored_line(self, shown: int) -> int:
        folds = self.folds
        return shown if folds is None else folds.stored(shown)

    def _stored_count(self) -> int:
        """Lines in the whole stored log, folded ones too."""
        folds = self.folds
        return self._stored + (0 if folds is None else folds.hidden)

    def _refolded(self) -> None:
        """The folds changed: line numbers did."""
        self._lines.clear()
        self._invalidate()
        self.poll()
        self.refresh()
        self._status_changed()

    def _reveal(self, line: int) -> None:
        """Unfold the group that hides line `line` of the whole log, if one does."""
        folds = self.folds
        header = None if folds is None else folds.holding(line)
        if folds is not None and header is not None:
            folds.unfold(header)
            self._refolded()

    def action_toggle_group(self) -> None:
        """Fold or unfold the group at the top of the screen: the first group header on it,
        else the group its top line is in."""
        reader = self._reader
        if not isinstance(reader, FoldingReader):
            self.notify("this log has no groups", severity="warning")
            return
        header = self._group_at_top(reader)
        if header is None:
            self.notify("no group on screen", severity="warning")
        elif reader.folds.inside(header) is not None:
            reader.folds.unfold(header)
            self._refolded()
        elif self.source is not None:
            self._find_group_end(self.source, header, reader.stored_len())

    @work(thread=True, exclusive=True, group="log-fold", exit_on_error=False)
    def _find_group_end(self, source: LogSource, header: int, stored: int) -> None:
        """Read the group's lines (its own reader, off the loop: a group may be a flood) to
        find where it stops, then fold it."""
        reader = source.open()
        assert isinstance(reader, FoldingReader)
        stop = group_stop(reader.raw, header, stored)
        self.app.call_from_thread(self._fold, source, header, stop)

    def _fold(self, source: LogSource, header: int, stop: tuple[int, int] | None) -> None:
        folds = self.folds
        if source != self.source or folds is None:
            return  # another log by now
        if stop is None:
            self.notify("this group has not ended yet", severity="warning")
            return
        folds.fold(header, *stop)
        self._refolded()
        if not self.follow and self._shown_line(header) < self.scroll_offset.y:
            self.go_to(self._shown_line(header))

    def _group_at_top(self, reader: FoldingReader) -> int | None:
        """The whole log's line number of the group header `z` acts on (see above)."""
        top = self._anchor_top if self.wrap and self.follow else self.scroll_offset.y
        stop = min(self._stored, top + self.scrollable_content_region.height)
        for first, end in reader.folds.runs(top, stop):
            for at, text in enumerate(reader.raw(first, end), first):
                if text.startswith(GROUP):
                    return at
        return group_around(reader.raw, reader.folds.stored(top))
