"""Tests against the running API and worker: a job goes in, its result comes out."""

import json
import os
import time
import urllib.request

BASE = f"http://127.0.0.1:{os.environ.get('API_PORT', '18765')}"


def call(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(BASE + path, data=data, method=method)
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, json.loads(response.read())


def test_health() -> None:
    assert call("GET", "/health") == (200, {"ok": True})


def test_a_job_is_done_by_the_worker() -> None:
    status, job = call("POST", "/jobs", {"numbers": [1, 2, 3]})
    assert status == 201
    deadline = time.monotonic() + 10
    while (answer := call("GET", f"/jobs/{job['id']}"))[0] == 202:
        assert time.monotonic() < deadline, "the worker never did the job"
        time.sleep(0.05)
    assert answer == (200, {"sum_of_squares": 14})


if __name__ == "__main__":
    for test in (test_health, test_a_job_is_done_by_the_worker):
        test()
        print(f"ok {test.__name__}")
