"""An OTLP/HTTP trace endpoint on loopback that decodes each export with the official protobuf
definitions (opentelemetry-proto), for the trace tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class Collector(BaseHTTPRequestHandler):
    """Keeps every export it receives."""

    received: ClassVar[list[ExportTraceServiceRequest]] = []
    arrived = threading.Condition()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with Collector.arrived:
            Collector.received.append(request)
            Collector.arrived.notify_all()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def collecting() -> Iterator[str]:
    """Run the endpoint while the block runs; yields its OTEL_EXPORTER_OTLP_ENDPOINT."""
    Collector.received = []
    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def spans() -> list[Any]:
    """Every span received so far."""
    with Collector.arrived:
        return [
            span
            for request in Collector.received
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]


def attrs(span: Any) -> dict[str, object]:
    """A span's attributes as a dict of plain values."""
    return {a.key: a.value.string_value or a.value.int_value for a in span.attributes}


def traceparent(span: Any) -> str:
    """The W3C traceparent naming `span` (sampled)."""
    return f"00-{span.trace_id.hex()}-{span.span_id.hex()}-01"
