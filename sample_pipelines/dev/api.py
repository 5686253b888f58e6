"""A tiny job API: POST /jobs {"numbers": [...]} queues a job for the worker, GET /jobs/ID
answers its result once the worker wrote it, GET /health says the API is up."""

import json
import os
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SPOOL = Path(os.environ.get("SPOOL", ".spool"))
PORT = int(os.environ.get("API_PORT", "18765"))


class Api(BaseHTTPRequestHandler):
    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self.answer(200, {"ok": True})
        elif self.path.startswith("/jobs/"):
            done = SPOOL / "done" / f"{self.path.removeprefix('/jobs/')}.json"
            if done.exists():
                self.answer(200, json.loads(done.read_text()))
            else:
                self.answer(202, {"status": "queued"})
        else:
            self.answer(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path != "/jobs":
            self.answer(404, {"error": "not found"})
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        job = uuid.uuid4().hex[:8]
        queued = SPOOL / "queue" / f"{job}.json"
        queued.with_suffix(".tmp").write_text(json.dumps(body))
        queued.with_suffix(".tmp").rename(queued)
        self.answer(201, {"id": job})


if __name__ == "__main__":
    for folder in ("queue", "done"):
        (SPOOL / folder).mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Api)
    print(f"api listening on http://127.0.0.1:{PORT}")
    server.serve_forever()
