"""LogStore: byte-exact storage, line index, masking on the way in, readers during writes."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from engine.events import Lines
from engine.fserrors import StateError
from engine.logs import PARTIAL_LIMIT, LogStore, safe_name


def test_feed_returns_completed_lines_and_finish_the_rest(tmp_path: Path) -> None:
    writer = LogStore(tmp_path).writer("run", "build", 1)
    assert writer.feed("stdout", b"one\ntw") == ["one"]
    assert writer.feed("stderr", b"e1\r\n") == ["e1\r"]
    assert writer.feed("stdout", b"o\nthr") == ["two"]
    assert writer.finish() == [("stdout", "thr")]


def test_stored_bytes_are_exact_and_streams_tagged(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    writer = store.writer("run", "build", 1)
    writer.feed("stdout", b"bad \xff\xfe utf8\n10%\r50%\r100%\n")
    writer.feed("stderr", b"oops\n")
    writer.feed("stdout", b"no newline")
    writer.finish()
    reader = store.reader("run", "build", 1)
    assert reader.read_bytes() == b"bad \xff\xfe utf8\n10%\r50%\r100%\noops\nno newline"
    assert len(reader) == 4
    assert reader.line(0) == ("stdout", b"bad \xff\xfe utf8")
    assert reader.line(2) == ("stderr", b"oops")
    assert reader.line(-1) == ("stdout", b"no newline")
    assert reader.lines(0, 10) == [
        ("stdout", "bad \ufffd\ufffd utf8"),
        ("stdout", "10%\r50%\r100%"),
        ("stderr", "oops"),
        ("stdout", "no newline"),
    ]


def test_random_access_to_a_large_log(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    writer = store.writer("run", "big", 1)
    data = b"".join(b"line %d\n" % i for i in range(1_000_000))
    for start in range(0, len(data), 65536):
        writer.feed("stdout", data[start : start + 65536])
    writer.finish()
    reader = store.reader("run", "big", 1)
    assert len(reader) == 1_000_000
    for n in random.Random(7).sample(range(1_000_000), 200):
        assert reader.line(n)[1] == b"line %d" % n
    assert [text for _, text in reader.lines(999_998, 2_000_000)] == ["line 999998", "line 999999"]
    assert reader.read_bytes() == data


def test_reader_sees_lines_while_the_writer_appends(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    reader = store.reader("run", "live", 1)
    assert len(reader) == 0
    writer = store.writer("run", "live", 1)
    writer.feed("stdout", b"a\nb\npartial")
    assert len(reader) == 2
    assert reader.lines(0, 5) == [("stdout", "a"), ("stdout", "b")]
    writer.feed("stderr", b"c\n")
    writer.feed("stdout", b" line\n")
    assert len(reader) == 4
    assert reader.line(3) == ("stdout", b"partial line")
    writer.finish()


def test_concurrent_reader_thread_never_sees_torn_lines(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    writer = store.writer("run", "race", 1)
    bad: list[str] = []
    done = threading.Event()

    def read() -> None:
        reader = store.reader("run", "race", 1)
        while not done.is_set():
            n = len(reader)
            if n:
                stream, text = reader.lines(n - 1, n)[0]
                if text != f"{stream} {n - 1}":
                    bad.append(text)

    thread = threading.Thread(target=read)
    thread.start()
    for i in range(20_000):
        stream = "stderr" if i % 2 else "stdout"
        writer.feed(stream, f"{stream} {i}\n".encode())
    done.set()
    thread.join()
    writer.finish()
    assert bad == []


def test_secret_split_across_writes_is_masked(tmp_path: Path) -> None:
    store = LogStore(tmp_path, secrets=["s3cr3t-token", ""])
    writer = store.writer("run", "deploy", 1)
    assert writer.feed("stdout", b"token=s3cr") == []
    assert writer.feed("stdout", b"3t-token ok\nlast s3cr3t-token") == ["token=*** ok"]
    assert writer.finish() == [("stdout", "last ***")]
    assert store.reader("run", "deploy", 1).read_bytes() == b"token=*** ok\nlast ***"


def test_oversized_partial_line_is_stored_in_segments_still_masked(tmp_path: Path) -> None:
    store = LogStore(tmp_path, secrets=["SECRET"])
    writer = store.writer("run", "huge", 1)
    head = b"x" * (PARTIAL_LIMIT - 1)
    segments = writer.feed("stdout", head + b"SEC")  # over the limit, the secret at the cut
    assert segments and all("SEC" not in s for s in segments)
    assert writer.feed("stdout", b"RET tail\n") == ["xx*** tail"]
    writer.finish()
    stored = store.reader("run", "huge", 1).read_bytes()
    assert stored == head + b"*** tail\n"
    assert len(store.reader("run", "huge", 1)) == 2


def test_segments_reassemble_a_line_without_newline(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    writer = store.writer("run", "huge", 1)
    texts = [t for i in range(48) for t in writer.feed("stdout", b"a" * 65536)]
    texts += [text for _, text in writer.finish()]
    assert "".join(texts) == "a" * 48 * 65536
    reader = store.reader("run", "huge", 1)
    assert reader.read_bytes() == b"a" * 48 * 65536
    assert "".join(text for _, text in reader.lines(0, len(reader))) == "a" * 48 * 65536


def test_attempts_and_unsafe_stage_ids(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    stage = "test[path=a/../b,python=3.11]"
    for attempt in (2, 1):
        writer = store.writer("run", stage, attempt)
        writer.feed("stdout", f"attempt {attempt}\n".encode())
        writer.finish()
    assert store.attempts("run", stage) == [1, 2]
    assert store.attempts("run", "other") == []
    assert store.reader("run", stage, 2).line(0) == ("stdout", b"attempt 2")
    for path in tmp_path.rglob("*"):
        assert path.resolve().is_relative_to(tmp_path.resolve())
    assert len(list((tmp_path / "run").iterdir())) == 1


def test_ranges_spanning_many_blocks_of_both_streams(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    writer = store.writer("run", "mixed", 1)
    expected = []
    rng = random.Random(3)
    for block in range(300):
        stream = rng.choice(["stdout", "stderr"])
        lines = [b"%s-%d-%d" % (stream.encode(), block, i) for i in range(rng.randint(1, 9))]
        writer.feed(stream, b"\n".join(lines) + b"\n")
        expected += [(stream, line.decode()) for line in lines]
    writer.finish()
    reader = store.reader("run", "mixed", 1)
    assert len(reader) == len(expected)
    assert reader.lines(0, len(expected)) == expected
    for _ in range(200):
        a = rng.randrange(len(expected))
        b = a + rng.randint(0, 40)
        assert reader.lines(a, b) == expected[a:b]
        assert reader.line(a) == (expected[a][0], expected[a][1].encode())


def test_an_attempt_that_prints_nothing_makes_no_files_yet_is_listed_and_reads_empty(
    tmp_path: Path,
) -> None:
    store = LogStore(tmp_path)
    stage = "quiet[py=3.11]"
    writer = store.writer("run", stage, 1)
    assert writer.finish() == []
    assert not (tmp_path / "run" / safe_name(stage)).exists()  # no folder, no .log, no .idx
    loud = store.writer("run", stage, 2)
    loud.feed("stdout", b"hi\n")
    loud.finish()
    store.writer("run", stage, 3).finish()
    assert store.attempts("run", stage) == [1, 2, 3]
    assert store.stage_ids("run") == [stage]
    reader = store.reader("run", stage, 3)
    assert len(reader) == 0 and reader.read_bytes() == b""
    assert store.attempts("run", "other") == [] and store.stage_ids("none") == []


def test_the_lazily_made_log_keeps_every_first_byte(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    writer = store.writer("run", "a", 1)
    writer.feed("stdout", b"par")  # buffered: nothing stored, no file yet
    assert not (tmp_path / "run").exists()
    assert store.partial("run", "a", 1) == ("stdout", "par")
    writer.feed("stderr", b"e\n")
    writer.feed("stdout", b"tial\nend")
    writer.finish()
    assert store.reader("run", "a", 1).read_bytes() == b"e\npartial\nend"
    assert store.attempts("run", "a") == [1]


def test_silent_attempts_of_two_runs_and_after_their_folder_was_deleted_are_all_listed(
    tmp_path: Path,
) -> None:
    """The `.silent` index is written through a descriptor kept open: a run folder deleted
    meanwhile (pruned) is made again, and each run's attempts land in its own index."""
    import shutil

    store = LogStore(tmp_path)
    store.writer("one", "a", 1).finish()
    store.writer("two", "a", 1).finish()
    store.writer("one", "b", 1).finish()
    assert store.stage_ids("one") == ["a", "b"] and store.stage_ids("two") == ["a"]
    shutil.rmtree(tmp_path / "one")
    store.writer("one", "c", 1).finish()
    assert store.stage_ids("one") == ["c"]
    store.writer("one", "c", 2).finish()
    assert store.attempts("one", "c") == [1, 2]


def test_a_silent_attempt_under_an_unusable_log_folder_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "logs").write_text("a file where the log folder belongs")
    writer = LogStore(tmp_path / "logs").writer("run", "a", 1)
    with pytest.raises(StateError, match="is a file, not a directory"):
        writer.finish()


def test_fed_lines_read_as_strings_without_being_split(tmp_path: Path) -> None:
    writer = LogStore(tmp_path).writer("run", "s", 1)
    lines = writer.feed("stdout", b"one\n\ntwo \xff\nthr")
    assert isinstance(lines, Lines)
    assert len(lines) == 3 and bool(lines)
    assert lines.joined("\n[s] ") == "one\n[s] \n[s] two \ufffd"  # one pass, no line strings
    assert lines == ("one", "", "two \ufffd") and lines == ["one", "", "two \ufffd"]
    assert hash(lines) == hash(("one", "", "two \ufffd"))
    assert "" in lines and lines[-1] == "two \ufffd" and list(lines) == ["one", "", "two \ufffd"]
    assert lines != ("one",) and lines != "one\n\ntwo"


def test_lines_made_of_strings_keep_them_whole() -> None:
    lines = Lines.of(["a\nb", "c"])
    assert len(lines) == 2 and lines.joined("|") == "a\nb|c" and lines[0] == "a\nb"
    assert not Lines.of([])


def test_a_secret_ending_in_a_newline_masks_it_away(tmp_path: Path) -> None:
    writer = LogStore(tmp_path, secrets=["key\n"]).writer("run", "s", 1)
    assert writer.feed("stdout", b"a\nkey\n") == ["a"]
    assert writer.feed("stdout", b"key\n") == []
