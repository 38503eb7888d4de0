"""Tracing with OpenTelemetry: one trace from the request that posts an event to the request that
delivers it, its record included. Off unless configured, and then nothing on the hot paths does
more than read `ENABLED`.

On when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and
`OTEL_SDK_DISABLED` is not `true`: spans go to that collector over OTLP/HTTP in batches (the
SDK's `OTEL_BSP_*` settings), sampled by `OTEL_TRACES_SAMPLER` (default: every trace, or as the
caller's `traceparent` says), named by `OTEL_SERVICE_NAME` (default `webhook-delivery`), with
`OTEL_RESOURCE_ATTRIBUTES` added. Every process sets itself up: gunicorn's through
`webhooks_project.wsgi`, Celery's (worker, beat) through `webhooks_project.celery`.

The spans (README "Tracing"):
- the web: Django's server span (`opentelemetry-instrumentation-django`, which continues a
  `traceparent` the producer sent), `webhooks.ingest` in it, `webhooks.publish` after commit;
  each event keeps its ingest span's `traceparent` (`Event.traceparent`), so every attempt of
  every delivery of it, retries days later and replays included, joins the event's trace;
- the worker: `webhooks.dispatch` (a feed message carries the publisher's `traceparent`;
  Celery's messages carry theirs, `opentelemetry-instrumentation-celery`), `webhooks.claim`,
  then per delivery `webhooks.send` (an HTTP client span) and `webhooks.record`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["ENABLED", "SpanKind", "context_of", "continued", "setup", "span", "traceparent"]

logger = logging.getLogger(__name__)

# Read on every hot path: nothing else of this module runs while it is False.
ENABLED = False

SERVICE_NAME = "webhook-delivery"
# Never traced: probes and scrapes would be most of the spans. Regexes searched in the URL
# without its query: only these two routes (not /api/v1/metrics/ or /admin/metrics/).
EXCLUDED_URLS = r"/healthz$,/metrics$"

_propagator = TraceContextTextMapPropagator()
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: Any = None  # the SDK's TracerProvider this process exports through
_instrumented: list[Any] = []


def configured() -> bool:
    """Whether this environment asks for tracing (an OTLP endpoint, and the SDK not disabled)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def setup(role: str) -> bool:
    """Turn tracing on in this process if the environment asks for it; whether it is on.
    Once per process (a forked child keeps its parent's: the SDK's batch processor restarts
    its thread after a fork)."""
    if ENABLED or not configured():
        return ENABLED
    # imported only when on: the SDK and the exporter cost a process ~40 ms and some memory
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME,
            "webhooks.role": role,
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    enable(provider)
    logger.info("tracing on: spans exported over OTLP/HTTP (%s)", role)
    return True


def enable(provider: Any, *, instrument: bool = True) -> None:
    """Trace through `provider` (the tests pass one with an in-memory exporter), and instrument
    Django and Celery with it."""
    global ENABLED, _tracer, _provider  # noqa: PLW0603 - one switch per process
    _provider = provider
    _tracer = provider.get_tracer("webhooks")
    if instrument:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        excluded = os.environ.get("OTEL_PYTHON_DJANGO_EXCLUDED_URLS") or EXCLUDED_URLS
        for instrumentor, options in (
            (DjangoInstrumentor(), {"excluded_urls": excluded}),
            (CeleryInstrumentor(), {}),
        ):
            instrumentor.instrument(tracer_provider=provider, **options)
            _instrumented.append(instrumentor)
    ENABLED = True


def disable() -> None:
    """Tracing off again, the instrumentation removed (tests)."""
    global ENABLED, _tracer, _provider  # noqa: PLW0603
    ENABLED = False
    while _instrumented:
        _instrumented.pop().uninstrument()
    if _provider is not None:
        _provider.force_flush()
    _tracer = trace.NoOpTracer()
    _provider = None


def flush(timeout_millis: int = 5000) -> None:
    """Export what is buffered (a process about to exit)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis)


def tracer() -> trace.Tracer:
    return _tracer


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Any:
    """A span around a block, a child of the current one; a no-op context while tracing is off."""
    if not ENABLED:
        return nullcontext(None)
    return _tracer.start_as_current_span(name, kind=kind, attributes=attributes)


def log_fields() -> dict[str, str]:
    """The current span's trace and span ids, as a JSON log line carries them."""
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return {}
    return {"trace_id": format(found.trace_id, "032x"), "span_id": format(found.span_id, "016x")}


def traceparent() -> str | None:
    """The current span's W3C `traceparent`, or None (tracing off, or no span)."""
    if not ENABLED:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def context_of(traceparent: str | None) -> otel_context.Context | None:
    """The context a `traceparent` names (None if it is missing or malformed)."""
    if not traceparent:
        return None
    found = _propagator.extract({"traceparent": traceparent})
    if not trace.get_current_span(found).get_span_context().is_valid:
        return None
    return found


@contextmanager
def continued(traceparent: str | None) -> Iterator[None]:
    """Run a block as part of the trace a `traceparent` names (a feed message's)."""
    found = context_of(traceparent) if ENABLED else None
    if found is None:
        yield
        return
    token = otel_context.attach(found)
    try:
        yield
    finally:
        otel_context.detach(token)
