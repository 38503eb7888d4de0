"""A local OTLP/HTTP trace collector: takes `POST /v1/traces` (protobuf, gzip or not), keeps the
spans it decodes (or only counts them), answers 200. For the tracing tests and benchmark; it
listens on 127.0.0.1 only, on a port of its own choosing.

    python -m bench.otlp_sink 0    # prints "ready <port>", counts spans (GET /count)
"""

from __future__ import annotations

import gzip
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class Span:
    """One span as the collector received it (ids in hex, as a traceparent writes them)."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root
    kind: int
    service: str
    role: str
    attributes: dict[str, Any]
    links: tuple[tuple[str, str], ...]  # (trace id, span id)
    status: int  # 0 unset, 1 ok, 2 error


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def decode(body: bytes) -> list[Span]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    Span(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        kind=span.kind,
                        service=str(resource.get("service.name", "")),
                        role=str(resource.get("webhooks.role", "")),
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        links=tuple((x.trace_id.hex(), x.span_id.hex()) for x in span.links),
                        status=span.status.code,
                    )
                )
    return spans


class Collector:
    """The collector in a thread of this process; `spans()` is what it received so far."""

    def __init__(self, *, keep: bool = True) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._spans: list[Span] = []
        self.count = 0
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                spans = decode(body)
                with collector._lock:
                    collector.count += len(spans)
                    if collector._keep:
                        collector._spans.extend(spans)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def do_GET(self) -> None:  # noqa: N802
                answer = str(collector.count).encode()
                self.send_response(200)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> Collector:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)


if __name__ == "__main__":
    if sys.argv[1:] not in ([], ["0"]):
        raise SystemExit("usage: python -m bench.otlp_sink 0  (it chooses a free port)")
    server = Collector(keep=False)
    print(f"ready {server.port}", flush=True)
    server._server.serve_forever()
