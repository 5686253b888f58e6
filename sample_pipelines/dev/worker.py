"""The worker: takes queued jobs from the spool and writes their results (sum of squares)."""

import json
import os
import time
from pathlib import Path

SPOOL = Path(os.environ.get("SPOOL", ".spool"))


def work_once() -> int:
    """Do every queued job; how many there were."""
    done = 0
    for job in sorted((SPOOL / "queue").glob("*.json")):
        numbers = json.loads(job.read_text())["numbers"]
        result = SPOOL / "done" / job.name
        result.with_suffix(".tmp").write_text(
            json.dumps({"sum_of_squares": sum(n * n for n in numbers)})
        )
        result.with_suffix(".tmp").rename(result)
        job.unlink()
        print(f"worker did job {job.stem}: {numbers}")
        done += 1
    return done


if __name__ == "__main__":
    for folder in ("queue", "done"):
        (SPOOL / folder).mkdir(parents=True, exist_ok=True)
    print("worker ready")
    while True:
        if not work_once():
            time.sleep(0.05)  # the worker's polling pace
