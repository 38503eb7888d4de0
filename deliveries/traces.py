"""The spans of one attempt (webhooks_project/tracing.py): `webhooks.send` around its request
and `webhooks.record` for its record, in the trace of the event it carries.

Called only while tracing is on (`Job.trace` is None otherwise). The send span's parent is the
dispatch that claimed the delivery when that dispatch is in the event's trace (a fresh
delivery, fed by the request that accepted it); otherwise (a retry, a sweep, a replay, a batch
of events from several requests) the span that accepted the event, with a link to the dispatch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from webhooks_project import tracing

from .job import Job

_propagator = TraceContextTextMapPropagator()


def job_traced(job: Job, known: dict[str | None, tuple[Any, Any, bool]]) -> None:
    """Give the job its send span's parent (in the dispatch's context, the task's thread);
    `known` keeps what was worked out per event traceparent for the rest of the batch (an event
    fanned out to ten endpoints has ten claims in it).

    A trace the sampler left out gets no spans at all: nothing to make for what nobody sees
    (with one trace in ten sampled, the SDK's non-recording spans cost the worker a tenth of
    what tracing every delivery did). An endpoint that asked for the `traceparent` still gets
    one, marked not sampled, that its own tracing can continue."""
    traceparent = job.claim.traceparent
    if traceparent not in known:
        current = trace.get_current_span().get_span_context()
        parent, links, sampled = otel_context.get_current(), None, current.trace_flags.sampled
        accepted = tracing.context_of(traceparent)
        if accepted is not None:
            event = trace.get_current_span(accepted).get_span_context()
            if not current.is_valid or event.trace_id != current.trace_id:
                parent, sampled = accepted, event.trace_flags.sampled
                if current.is_valid and current.trace_flags.sampled:
                    links = [Link(current)]
        known[traceparent] = (parent, links, sampled)
    parent, links, sampled = known[traceparent]
    if sampled:
        job.trace = (parent, links)
    elif job.claim.trace_propagation:
        context = trace.get_current_span(parent).get_span_context()
        if context.is_valid:
            # a span id as the SDK makes one (random's global state is reseeded in a fork)
            span_id = random.getrandbits(64) or 1  # noqa: S311 - unique, not secret
            value = f"00-{context.trace_id:032x}-{span_id:016x}-00"
            job.headers["traceparent"] = job.stored_headers["traceparent"] = value


@lru_cache(maxsize=4096)
def _url(url: str) -> str:
    """The URL without its query and credentials (either may carry a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def send_started(job: Job) -> None:
    """Start the job's send span (on the sender's loop), and put its `traceparent` on the
    request (and in the attempt log) if the endpoint asked for it."""
    assert job.trace is not None
    parent, links = job.trace
    claim = job.claim
    span = tracing.tracer().start_span(
        "webhooks.send",
        context=parent,
        kind=SpanKind.CLIENT,
        links=links,
        attributes={
            "http.request.method": "POST",
            "url.full": _url(job.url),
            "webhooks.delivery_id": claim.delivery_id,
            "webhooks.event_id": claim.event_id,
            "webhooks.event_type": claim.event_type,
            "webhooks.endpoint_id": claim.endpoint_id,
            "webhooks.attempt": claim.number,
        },
    )
    job.span = span
    if claim.trace_propagation:
        carrier: dict[str, str] = {}
        _propagator.inject(carrier, context=trace.set_span_in_context(span))
        job.headers.update(carrier)
        job.stored_headers.update(carrier)


def send_ended(job: Job) -> None:
    """End the send span with what came back: a non-2xx answer or no answer is an error."""
    span, result = job.span, job.result
    if result is not None:
        if result.status_code is not None:
            span.set_attribute("http.response.status_code", result.status_code)
        if result.status_code is None or not 200 <= result.status_code < 300:
            problem = result.error_class or str(result.status_code)
            span.set_attribute("error.type", problem)
            span.set_status(Status(StatusCode.ERROR, problem))
    span.end()


def recorded(jobs: Sequence[Job], *, start_ns: int, end_ns: int) -> None:
    """A `webhooks.record` span per traced job for the batch that recorded it (one transaction
    for all of them: the same start and end), under its send span if it was sent."""
    tracer = tracing.tracer()
    for job in jobs:
        if job.trace is None:
            continue
        parent = trace.set_span_in_context(job.span) if job.span is not None else job.trace[0]
        verdict = job.verdict or ("given_back" if job.deferred is not None else "not_recorded")
        span = tracer.start_span(
            "webhooks.record",
            context=parent,
            start_time=start_ns,
            attributes={
                "webhooks.delivery_id": job.claim.delivery_id,
                "webhooks.verdict": verdict,
                "webhooks.batch_size": len(jobs),
            },
        )
        span.end(end_time=end_ns)
