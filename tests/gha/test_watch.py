"""`run --watch` accepts a workflow: a change anywhere in the repository reruns its jobs."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

from tests.conftest import pipedeck_bin


def test_watch_reruns_a_workflow_on_change(tmp_path: Path) -> None:
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    (folder / "ci.yml").write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: cat data.txt\n"
    )
    (tmp_path / "data.txt").write_text("one\n")
    proc = subprocess.Popen(
        [pipedeck_bin(), "run", str(folder / "ci.yml"), "--watch", "--format", "json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[dict] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(
        target=lambda: [lines.put(json.loads(x)) for x in proc.stdout], daemon=True
    ).start()

    def wait_for_log(text: str, deadline: float = 30.0) -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            event = lines.get(timeout=max(end - time.monotonic(), 0.01))
            if event["type"] == "log" and event["text"] == text:
                return
        raise AssertionError(f"no log line {text!r} within {deadline}s")

    try:
        wait_for_log("one")
        (tmp_path / "data.txt").write_text("two\n")
        wait_for_log("two")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
