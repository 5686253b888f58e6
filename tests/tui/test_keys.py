"""Pilot tests: every key of SPEC §9 (and the extra ones) on real runs of real pipelines."""

from __future__ import annotations

import asyncio
import re
from contextlib import suppress

from textual import events
from textual.widgets import Input

from engine.events import CANCELLED, FAILED, PENDING, RUNNING, SUCCEEDED, WAITING
from tests.conftest import marked_pids
from tests.tui.conftest import label, log_of, screen_of, shown, status, tree_of, until
from tui.screens.help import ConfirmScreen, HelpScreen
from tui.widgets.keybar import KeyBar

SLOW = """\
version: 1
name: slow
stages:
  first:
    run: echo first
  slow:
    needs: [first]
    run: |
      echo started
      sleep 60
  after:
    needs: [slow]
    run: echo after
"""

FAILING = """\
version: 1
name: failing
stages:
  ok:
    run: echo fine
  bad:
    run: |
      echo "attempt $PIPEDECK_ATTEMPT"
      test -f go
  next:
    needs: [bad]
    run: echo next
"""


WATCHED = """\
version: 1
name: watched
stages:
  other:
    inputs: ["docs/**"]
    run: echo other
  use:
    inputs: ["src/**"]
    run: cat src/a.txt 2>/dev/null || echo none
"""


def many_lines(count: int, extra: str = "") -> str:
    return f"""\
version: 1
name: lines
stages:
  talk:
    run: |
      for i in $(seq 1 {count}); do echo "line $i"; done
      {extra}
"""


async def test_tree_lists_stages_in_topological_order_with_matrix_instances(make_app):
    app = make_app(start=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        tree = tree_of(app)
        top = [node.data for node in tree.root.children]
        assert top == ["build", "test", "deploy"]
        assert [n.data for n in tree.node_for("test").children] == ["test[py=a]", "test[py=b]"]
        assert label(app, "test[py=a]").split()[:2] == ["·", "py=a"]


async def test_s_starts_a_run_opened_with_no_start(make_app):
    app = make_app(start=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.2)
        assert status(app, "build") == PENDING and not app.run_screen.run.running
        assert "not started" in str(app.run_screen.query_one("RunHeader").render())
        for sid in ("build", "test[py=a]"):  # with or without needs: only s starts it
            tree_of(app).select_stage(sid)
            await pilot.pause()
            assert [row.strip() for row in shown(log_of(app))] == [
                f"{sid} is pending: press s to start the run"
            ]
        await pilot.press("s")
        await until(pilot, lambda: status(app, "deploy") == WAITING, "the run")
        assert status(app, "build") == SUCCEEDED
        assert app.run_screen.check_action("start", ()) is False


async def test_up_down_and_j_k_select_stages(make_app):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: not app.run_screen.run.running, "the run to stop")
        assert log_of(app).stage_id == "build"
        await pilot.press("down")
        assert log_of(app).stage_id in ("test[py=a]", "test[py=b]")  # the matrix stage
        await pilot.press("j")
        assert log_of(app).stage_id == "test[py=a]"
        await pilot.press("j")
        assert log_of(app).stage_id == "test[py=b]"
        await pilot.press("k", "up", "up")
        assert log_of(app).stage_id == "build"
        await pilot.press("down", "down", "down", "down")
        assert log_of(app).stage_id == "deploy"


async def test_log_shows_selected_stage_output_with_stderr_tinted(make_app):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: shown(log_of(app)) == ["building", "oops"], "build's log")
        view = log_of(app)
        stdout, stderr = view.render_line(0), view.render_line(1)
        colour = {seg.style.color for seg in stderr if seg.text.strip() and seg.style}
        assert colour and colour != {seg.style.color for seg in stdout if seg.text.strip()}


async def test_enter_and_tab_move_focus_between_tree_and_log(make_app):
    app = make_app(start=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert app.focused is tree_of(app)
        await pilot.press("enter")
        assert app.focused is log_of(app)
        await pilot.press("enter")
        assert app.focused is tree_of(app)
        await pilot.press("tab")
        assert app.focused is log_of(app)
        await pilot.press("tab")
        assert app.focused is tree_of(app)


async def test_manual_stage_waits_with_hint_and_a_approves_it(make_app):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: "press a" in label(app, "deploy"), "the approval hint")
        assert status(app, "deploy") == WAITING
        tree_of(app).select_stage("deploy")
        await pilot.pause()
        assert "press a" in shown(log_of(app))[0]
        await pilot.press("a")
        await until(pilot, lambda: status(app, "deploy") == SUCCEEDED, "deploy to run")
        await until(pilot, lambda: shown(log_of(app)) == ["deployed"], "deploy's log")
        assert "press a" not in label(app, "deploy")


def header_elapsed(app) -> tuple[str, float]:
    """The run status and elapsed seconds the header shows (under a minute)."""
    header = str(app.run_screen.query_one("RunHeader").render())
    found = re.search(r"  ([a-z ]+?) ([\d.]+)s", header)
    return (found[1], float(found[2])) if found else (header, 0.0)


GATED = """\
version: 1
name: gated
stages:
  work:
    run: until test -f go; do sleep 0.05; done
  deploy:
    needs: [work]
    when: manual
    run: echo deployed
"""


async def test_header_elapsed_is_the_wall_time_from_the_first_start_across_approvals(
    make_app, tmp_path
):
    (tmp_path / "go").write_text("")
    app = make_app(GATED)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "deploy") == WAITING, "deploy to wait")
        # the clock goes on while a stage waits for approval
        await until(
            pilot,
            lambda: (
                header_elapsed(app)[0] == "waiting for approval" and header_elapsed(app)[1] >= 1.0
            ),
            "the waiting run's clock to pass 1s",
        )
        tree_of(app).select_stage("deploy")
        await pilot.press("a")
        await until(pilot, lambda: status(app, "deploy") == SUCCEEDED, "deploy to run")
        await until(pilot, lambda: header_elapsed(app)[0] == "succeeded", "the run to end")
        assert header_elapsed(app)[1] >= 1.0  # not restarted from zero by the approval
        (tmp_path / "go").unlink()
        tree_of(app).select_stage("work")
        await pilot.press("r")  # a rerun: still the same run's wall time
        await until(pilot, lambda: header_elapsed(app)[0] == "running", "the rerun")
        assert header_elapsed(app)[1] >= 1.0
        (tmp_path / "go").write_text("")
        await until(pilot, lambda: status(app, "deploy") == WAITING, "deploy's new approval")
        tree_of(app).select_stage("deploy")
        await pilot.press("a")
        await until(pilot, lambda: header_elapsed(app)[0] == "succeeded", "the rerun to end")
        assert header_elapsed(app)[1] >= 1.0


async def test_r_reruns_selected_stage_and_downstream_as_new_attempts(make_app):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "test[py=b]") == SUCCEEDED, "the first run")
        await until(pilot, lambda: not app.run_screen.run.running, "the run to stop")
        await pilot.press("down", "down")  # test[py=a]
        await pilot.press("r")
        views = app.run_screen.views
        await until(
            pilot,
            lambda: views["test[py=a]"].attempt == 2 and views["test[py=a]"].status == SUCCEEDED,
            "the rerun",
        )
        assert views["build"].attempt == 1  # upstream is not rerun
        assert views["test[py=b]"].attempt == 1  # nor a sibling instance
        await until(pilot, lambda: "attempt 2" in str(log_of(app).border_title), "the title")
        assert "#2" in label(app, "test[py=a]")


async def test_R_reruns_failed_stages(make_app):
    app = make_app(FAILING)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "bad") == FAILED, "bad to fail")
        await until(pilot, lambda: app.run_screen.exit_code == 1, "the run's exit code")
        await pilot.press("c")  # `ok` is selected and done: nothing to cancel
        assert "already finished" in list(app._notifications)[-1].message
        (app.run_screen.run.pipeline.workspace / "go").write_text("")
        await pilot.press("R")
        await until(pilot, lambda: status(app, "next") == SUCCEEDED, "the rerun to pass")
        assert app.run_screen.views["bad"].attempt == 2
        assert app.run_screen.views["ok"].attempt == 1
        await until(pilot, lambda: app.run_screen.exit_code == 0, "exit code 0")
        await pilot.press("R")
        assert "no failed stage" in list(app._notifications)[-1].message


async def test_c_cancels_the_selected_stage_and_nothing_is_left(make_app):
    app = make_app(SLOW)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "slow") == RUNNING, "slow to start")
        tree_of(app).select_stage("slow")
        await until(pilot, lambda: shown(log_of(app)) == ["started"], "slow's log")
        await pilot.press("c")
        await until(pilot, lambda: status(app, "slow") == CANCELLED, "slow to be cancelled")
        await until(pilot, lambda: not app.run_screen.run.running, "the run to stop")
        assert status(app, "first") == SUCCEEDED
        assert not marked_pids(app.run_screen.run.run_id)
        await until(pilot, lambda: "cancelled" in str(log_of(app).border_title), "the title")


async def test_C_cancels_the_whole_run(make_app):
    app = make_app(SLOW)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "slow") == RUNNING, "slow to start")
        await pilot.press("C")
        await until(pilot, lambda: not app.run_screen.run.running, "the run to stop")
        assert status(app, "slow") == CANCELLED
        assert status(app, "after") in (CANCELLED, PENDING, "skipped")
        assert not marked_pids(app.run_screen.run.run_id)
        header = app.run_screen.query_one("RunHeader")
        await until(pilot, lambda: "cancelled" in str(header.render()), "the header")


async def test_f_toggles_follow_and_scrolling_up_stops_it(make_app):
    app = make_app(many_lines(200))
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: log_of(app).line_count == 200, "200 lines")
        view = log_of(app)
        await until(pilot, lambda: shown(view)[-1] == "line 200", "the end to show")
        assert view.follow
        await pilot.press("f")
        assert not view.follow
        await pilot.press("f")
        assert view.follow and shown(view)[-1] == "line 200"
        await pilot.press("enter", "pageup")
        await pilot.pause()
        assert not view.follow and shown(view)[-1] != "line 200"
        await pilot.press("end")
        await pilot.pause()
        assert view.follow and shown(view)[-1] == "line 200"


async def test_follow_keeps_up_with_new_output(make_app):
    app = make_app(many_lines(3, "sleep 0.3; echo late"))
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: shown(log_of(app))[-1:] == ["late"], "the late line")


async def test_slash_searches_with_n_and_N_and_a_match_count(make_app):
    app = make_app(many_lines(300))
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: log_of(app).line_count == 300, "300 lines")
        view = log_of(app)
        await pilot.press("slash")
        assert app.focused is app.run_screen.query_one("#search", Input)
        top = view.scroll_offset.y
        await pilot.press(*"line [0-9]*7$", "enter")
        await until(pilot, lambda: view.search and view.search.scanned == 300, "the scan")
        assert view.search.matches == list(range(6, 300, 10))  # line 7 is index 6
        first = view.search.hit  # the first match at or below the top of the screen
        assert first == min(m for m in view.search.matches if m >= top)
        position = view.search.matches.index(first) + 1
        assert f"{position}/30" in str(view.border_subtitle)
        assert not view.follow
        assert view.scroll_offset.y <= first < view.scroll_offset.y + 10
        await pilot.press("n")
        assert view.search.hit == (first + 10 if first < 290 else 6)
        await pilot.press("N", "N")
        assert view.search.hit == first - 10
        row = view.scroll_offset.y
        hit_row = view.render_line(view.search.hit - row)
        assert any(seg.style and seg.style.bgcolor for seg in hit_row if "7" in seg.text)
        await pilot.press("escape")
        assert view.search is None


async def test_keys_typed_right_after_slash_go_to_the_search_box(make_app):
    """Issue 9 item 6: `/rcnerror` arriving at once (fast typing) searches; nothing reruns."""
    app = make_app(FAILING)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "bad") == FAILED, "bad to fail")
        tree_of(app).select_stage("bad")
        await pilot.pause()
        for char in "/rcnerror":  # queued back to back, as the terminal driver posts them
            key = "slash" if char == "/" else char
            app.post_message(events.Key(key, char))
        await pilot.pause(0.2)
        search = app.run_screen.query_one("#search", Input)
        assert search.value == "rcnerror"
        assert app.focused is search
        assert screen_of(app).views["bad"].attempt == 1  # `r` did not rerun it
        assert not any("no search" in n.message for n in app._notifications)
        await pilot.press("enter")
        assert app.focused is tree_of(app)  # back where `/` was pressed: j/k select stages
        assert log_of(app).search.pattern.pattern == "rcnerror"


async def test_a_paste_starting_with_slash_is_a_search(make_app):
    app = make_app(many_lines(3))
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: log_of(app).line_count == 3, "3 lines")
        app.post_message(events.Paste("/line 2"))
        await pilot.pause()
        assert app.run_screen.query_one("#search", Input).value == "line 2"
        await pilot.press("enter")
        await until(pilot, lambda: log_of(app).search.matches == [1], "the match")


async def test_search_covers_output_that_arrives_later(make_app):
    app = make_app(
        many_lines(
            0, "echo hit one; until test -f go; do sleep 0.05; done; echo miss; echo hit two"
        )
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: log_of(app).line_count == 1, "the first line")
        await pilot.press("slash", *"^hit", "enter")
        view = log_of(app)
        await until(pilot, lambda: view.search.matches == [0], "the first match")
        (app.run_screen.run.pipeline.workspace / "go").write_text("")
        await until(pilot, lambda: view.search.matches == [0, 2], "the later match")
        assert "/^hit/" in str(view.border_subtitle)


async def test_invalid_regex_is_a_notification(make_app):
    app = make_app(many_lines(3))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("slash", "(", "enter")
        await pilot.pause()
        assert any("regular expression" in n.message for n in app._notifications)
        assert log_of(app).search is None


async def test_w_toggles_wrap(make_app):
    app = make_app(many_lines(1, "printf 'x%.0s' $(seq 1 300); echo"))
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: log_of(app).line_count == 2, "two lines")
        view = log_of(app)
        assert len(shown(view)) == 2
        await pilot.press("w")
        await pilot.pause()
        assert view.wrap
        rows = shown(view)
        assert len(rows) > 3 and "".join(rows[1:]) == "x" * 300
        await pilot.press("w")
        await pilot.pause()
        assert len(shown(view)) == 2


async def test_carriage_return_shows_last_state_and_ansi_colours_render(make_app):
    app = make_app(many_lines(0, r"printf 'one 10%%\rone 100%%\n\033[31mred\033[0m\n'"))
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: log_of(app).line_count == 2, "two lines")
        view = log_of(app)
        await until(pilot, lambda: shown(view) == ["one 100%", "red"], "the rendered lines")
        red = [seg for seg in view.render_line(1) if seg.text == "red"]
        assert red and red[0].style.color.number == 1  # ANSI red


async def test_p_pins_a_second_log_pane(make_app):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: not app.run_screen.run.running, "the run to stop")
        await pilot.press("p")
        pinned = log_of(app, "pinned")
        assert pinned.display and pinned.stage_id == "build"
        await pilot.pause()
        assert pinned.follow  # becoming visible does not count as scrolling up
        await pilot.press("down", "down")
        await until(pilot, lambda: shown(log_of(app)) == ["test a"], "test a's log")
        assert shown(pinned) == ["building", "oops"]
        await pilot.press("up", "up", "p")
        assert not pinned.display


async def test_y_copies_visible_lines_and_Y_the_search_hit(make_app):
    app = make_app(many_lines(5))
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: log_of(app).line_count == 5, "five lines")
        await pilot.press("y")
        assert app.clipboard == "\n".join(f"line {i}" for i in range(1, 6))
        await pilot.press("slash", *"ne 4", "enter")
        await until(pilot, lambda: log_of(app).search.hit is not None, "a hit")
        await pilot.press("Y")
        assert app.clipboard == "line 4"


async def test_W_toggles_watch_mode_and_a_change_reruns_what_it_affects(make_app, tmp_path):
    (tmp_path / "src").mkdir()
    app = make_app(WATCHED)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: status(app, "use") == SUCCEEDED, "the first run")
        first = app.run_screen.run
        header = app.run_screen.query_one("RunHeader")
        await pilot.press("W")
        await until(pilot, lambda: "watching" in str(header.render()), "the watch banner")
        assert app.run_screen.watching
        for _ in range(20):  # the watcher starts in the background: write until it reacts
            (tmp_path / "src" / "a.txt").write_text("changed")
            with suppress(AssertionError):
                await until(pilot, lambda: app.run_screen.run is not first, "a new run", 1.0)
                break
        assert app.run_screen.run is not first
        await until(
            pilot,
            lambda: (
                status(app, "use") == SUCCEEDED
                and app.run_screen.views["use"].attempt >= 1
                and not app.run_screen.run.running
            ),
            "the rerun",
        )
        await until(pilot, lambda: "src/a.txt" in str(header.render()), "the change's name")
        assert app.run_screen.run.states["other"].status == SUCCEEDED  # carried, not rerun
        tree_of(app).select_stage("use")
        await until(pilot, lambda: shown(log_of(app)) == ["changed"], "the rerun's log")
        await pilot.press("W")
        await until(pilot, lambda: "watch paused" in str(header.render()), "the paused banner")
        assert not app.run_screen.watching
        await pilot.press("q")  # no run is active: quits at once, stopping the watcher
        await until(pilot, lambda: app.return_code is not None, "the app to exit")


async def test_watch_flag_adopts_the_first_run_then_watches(make_app):
    app = make_app(WATCHED, watch=True)
    async with app.run_test(size=(120, 30)) as pilot:
        header = app.run_screen.query_one("RunHeader")
        await until(pilot, lambda: "watching" in str(header.render()), "the watch banner")
        first = app.run_screen.run
        session = app.run_screen.session
        await until(pilot, lambda: session.current is first, "the session to adopt the run")
        await until(pilot, lambda: status(app, "use") == SUCCEEDED, "the first run")
        assert app.run_screen.run is first  # no second run without a change


async def test_running_stage_duration_ticks(make_app):
    app = make_app(SLOW)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "slow") == RUNNING, "slow to start")
        await until(pilot, lambda: "s" in label(app, "slow").split()[-1], "a duration")
        first = label(app, "slow")
        await until(pilot, lambda: label(app, "slow") != first, "the duration to tick")
        assert label(app, "slow").split()[:2] == ["▶", "slow"]


async def test_h_opens_history(make_app):
    app = make_app(start=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("h")
        await pilot.pause()
        try:
            from tui.screens.history import HistoryScreen
        except ImportError:
            assert any("history" in n.message for n in app._notifications)
        else:
            assert isinstance(app.screen, HistoryScreen)


async def test_question_mark_shows_every_key(make_app):
    app = make_app(start=False)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        keys = {row[0] for row in app.screen.rows}
        assert {"r", "R", "c", "C", "a", "f", "/", "n", "N", "w", "W", "h", "?", "q"} <= keys
        await pilot.press("escape")
        assert app.screen is screen_of(app)


async def test_help_wraps_each_description_under_its_column_at_80x24(make_app):
    app = make_app(start=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
        keys = app.screen.query_one("#help-keys")
        column = max(len(k) for k, _ in app.screen.rows) + 2

        def rows() -> list[str]:
            return [keys.render_line(y).text.rstrip() for y in range(keys.size.height)]

        await until(pilot, lambda: len(rows()) > len(app.screen.rows), "wrapped rows")
        starts = {k.ljust(column) for k, _ in app.screen.rows} | {" " * column}
        assert all(row[:column] in starts for row in rows()), rows()
        assert all(len(row) <= keys.content_region.width for row in rows())


async def test_the_key_bar_follows_the_bindings_and_a_click_presses_a_key(make_app):
    app = make_app(start=False)
    async with app.run_test(size=(100, 30)) as pilot:
        bar = app.run_screen.query_one(KeyBar)
        await until(pilot, lambda: " s Start " in str(bar.render()), "s offered before the run")
        assert str(bar.render()).rstrip().endswith("^p palette")
        await pilot.press("s")
        await until(pilot, lambda: " s Start " not in str(bar.render()), "s gone once started")
        assert " r Rerun " in str(bar.render())
        help_at = str(bar.render()).index(" ? Help ")
        await pilot.click(bar, offset=(help_at + 3, 0))  # on the word "Help"
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")


async def test_command_palette_lists_every_action(make_app):
    app = make_app(start=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        titles = {cmd.title for cmd in app.get_system_commands(app.screen)}
        for binding in screen_of(app).BINDINGS:
            assert binding.description in titles


async def test_click_selects_a_stage(make_app):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: not app.run_screen.run.running, "the run to stop")
        tree = tree_of(app)
        line = tree.node_for("deploy").line
        await pilot.click(tree, offset=(4, line + 1 - tree.scroll_offset.y))  # +1: the border
        await pilot.pause()
        assert log_of(app).stage_id == "deploy"


async def test_q_quits_with_the_runs_exit_code(make_app):
    app = make_app(FAILING)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(
            pilot,
            lambda: not app.run_screen.run.running and status(app, "bad") == FAILED,
            "the run to fail",
        )
        await pilot.press("q")
        await until(pilot, lambda: app.return_code is not None, "the app to exit")
    assert app.return_value == 1


async def test_q_while_running_asks_then_cancels_everything(make_app):
    app = make_app(SLOW)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "slow") == RUNNING, "slow to start")
        run_id = app.run_screen.run.run_id
        assert marked_pids(run_id)
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert app.screen is screen_of(app) and app.run_screen.run.running
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("y")
        await until(pilot, lambda: app.return_code is not None, "the app to exit")
    assert status(app, "slow") == CANCELLED
    assert not marked_pids(run_id)


async def test_engine_error_is_a_notification_not_a_traceback(make_app):
    app = make_app(SLOW)
    run = app.run_screen.run
    other = asyncio.create_task(run.execute())  # so the app's own execute() raises
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app._notifications, "a notification")
        note = next(iter(app._notifications))
        assert note.severity == "error" and "already executing" in note.message
        assert app.is_running and app.screen is screen_of(app)
        run.cancel_all()
        await other


TWO_GATES = """\
version: 1
name: gates
stages:
  work:
    run: "true"
  deploy:
    needs: [work]
    when: manual
    run: echo deployed
  publish:
    needs: [work]
    when: manual
    run: echo published
"""


async def test_a_with_no_waiting_stage_selected_approves_the_only_one_or_selects_the_first(
    make_app,
):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: status(app, "deploy") == WAITING, "deploy to wait")
        tree_of(app).select_stage("build")
        await pilot.press("a")  # deploy is the one stage waiting
        await until(pilot, lambda: status(app, "deploy") == SUCCEEDED, "deploy to run")
    app = make_app(TWO_GATES)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(
            pilot,
            lambda: status(app, "deploy") == WAITING and status(app, "publish") == WAITING,
            "both gates",
        )
        tree_of(app).select_stage("work")
        await pilot.press("a")  # two wait: the cursor goes to the first, nothing is approved
        await pilot.pause()
        assert tree_of(app).selected_ids == ["deploy"]
        assert status(app, "deploy") == status(app, "publish") == WAITING
        await pilot.press("a")
        await until(pilot, lambda: status(app, "deploy") == SUCCEEDED, "deploy to run")
        assert status(app, "publish") == WAITING
