"""Tracing (webhooks_project/tracing.py, deliveries/traces.py): one trace from the producer's
request through ingest, publish, dispatch, claim, send and record; `traceparent` to consumers
that ask for it; OTLP export from real processes; nothing at all while it is off.

In this process with the SDK's in-memory exporter (the Django test client, a feed message in a
Redis of the test's own, the feeder's handling and a real sender on the local sink), and across
real processes (gunicorn and a Celery worker exporting OTLP/HTTP to a local collector)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind, StatusCode

from bench.otlp_sink import Collector
from deliveries.feeder import Feeder
from deliveries.models import Delivery, DeliveryAttempt, Event
from deliveries.services import enqueue
from deliveries.services.dispatch import deliveries_dispatch
from deliveries.services.enqueue import FEED_KEY, feed_client, feed_message
from devstack.services import LocalRedis
from schemas_app.services import event_type_create
from tests.conftest import WebServer, WorkerProcess, wait_until, worker_env
from tests.readme import commands_of, readme_section, run_curl
from tests.sink import Sink
from webhooks.models import ApiKey
from webhooks.services import api_key_create, endpoint_create
from webhooks_project import tracing
from webhooks_project.process_local import ProcessLocal

# the producer's own span: its request carries this traceparent
PRODUCER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PRODUCER_SPAN = "00f067aa0ba902b7"
PRODUCER = f"00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01"


@pytest.fixture
def own_feed(tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Redis of this test's own for the feed (the session's worker must not take it)."""
    server = LocalRedis(tmp_path / "redis", persist=False).start()
    settings.REDIS_URL = server.url()
    monkeypatch.setattr(enqueue, "_publishers", ProcessLocal(feed_client))
    client = redis.Redis.from_url(server.url())
    yield client
    client.close()
    server.stop()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process, into memory; off again after the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()


def _hex(span: ReadableSpan) -> tuple[str, str, str]:
    """(trace id, span id, parent span id or "") in hex."""
    context = span.get_span_context()
    parent = format(span.parent.span_id, "016x") if span.parent else ""
    return format(context.trace_id, "032x"), format(context.span_id, "016x"), parent


def _attr(span: ReadableSpan, key: str) -> Any:
    assert span.attributes is not None
    return span.attributes.get(key)


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def _post_event(client: Any, **extra: Any) -> str:
    answer = client.post(
        "/api/v1/events/",
        {"type": "order.created", "data": {"n": 1}},
        format="json",
        **extra,
    )
    assert answer.status_code == 202, answer.content
    return str(answer.json()["id"])


@pytest.mark.django_db(transaction=True)
def test_one_trace_from_the_producer_to_the_consumer(
    spans: InMemorySpanExporter, own_feed: Any, sink: Sink, local_sender: None, make_api_client: Any
) -> None:
    event_type_create(name="order.created", schema={"type": "object"})
    client = make_api_client()
    # one endpoint asks for the traceparent header (through the API), one does not
    asked = client.post(
        "/api/v1/endpoints/",
        {"url": sink.url("traced"), "event_types": ["order.created"], "trace_propagation": True},
        format="json",
    )
    assert asked.status_code == 201, asked.content
    assert asked.json()["trace_propagation"] is True
    endpoint_create(url=sink.url("plain"), event_types=["order.created"])
    spans.clear()  # the endpoint's request was a trace of its own

    # the producer sends its traceparent with the event
    event_id = _post_event(client, HTTP_TRACEPARENT=PRODUCER)
    raw = own_feed.lpop(FEED_KEY)
    ids, carried = feed_message(raw)
    assert len(ids) == 2
    assert carried is not None
    Feeder().handle(raw)  # what the worker's feeder does with the message
    wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 2)
    wait_until(lambda: len(_named(spans, "webhooks.record")) == 2)

    finished = spans.get_finished_spans()
    # every span is in the producer's trace
    assert {_hex(s)[0] for s in finished} == {PRODUCER_TRACE}
    server = next(s for s in finished if s.kind is SpanKind.SERVER)
    (ingest,) = _named(spans, "webhooks.ingest")
    (publish,) = _named(spans, "webhooks.publish")
    (dispatch,) = _named(spans, "webhooks.dispatch")
    (claim,) = _named(spans, "webhooks.claim")
    sends = _named(spans, "webhooks.send")
    records = _named(spans, "webhooks.record")
    # the chain: producer -> Django's server span -> ingest -> publish -> dispatch -> claim
    assert _hex(server)[2] == PRODUCER_SPAN
    assert _hex(ingest)[2] == _hex(server)[1]
    assert _hex(publish)[2] == _hex(ingest)[1]
    assert carried == f"00-{PRODUCER_TRACE}-{_hex(publish)[1]}-01"
    assert _hex(dispatch)[2] == _hex(publish)[1]
    assert _hex(claim)[2] == _hex(dispatch)[1]
    assert _attr(claim, "webhooks.claimed") == 2
    # each send under the dispatch, each record under its send
    assert len(sends) == 2
    assert {_hex(s)[2] for s in sends} == {_hex(dispatch)[1]}
    assert sorted(_hex(r)[2] for r in records) == sorted(_hex(s)[1] for s in sends)
    assert {_attr(r, "webhooks.verdict") for r in records} == {"succeeded"}
    for send in sends:
        assert send.kind is SpanKind.CLIENT
        assert _attr(send, "http.response.status_code") == 200
        assert _attr(send, "webhooks.event_id") == event_id
        assert str(_attr(send, "url.full")).startswith("http://127.0.0.1:")

    # the event keeps the ingest span's traceparent
    assert Event.objects.get(pk=event_id).traceparent == f"00-{PRODUCER_TRACE}-{_hex(ingest)[1]}-01"
    # the endpoint that asked got its request's span as traceparent; the other got none
    (traced,) = sink.requests("traced")
    (plain,) = sink.requests("plain")
    traced_send = next(s for s in sends if "/traced" in str(_attr(s, "url.full")))
    assert traced.headers["traceparent"] == f"00-{PRODUCER_TRACE}-{_hex(traced_send)[1]}-01"
    assert "traceparent" not in plain.headers
    # and the attempt log shows it, as sent
    attempt = DeliveryAttempt.objects.get(delivery__endpoint_id=asked.json()["id"])
    assert attempt.request_headers["traceparent"] == traced.headers["traceparent"]


@pytest.mark.django_db(transaction=True)
def test_a_retry_joins_the_trace_of_its_event(
    spans: InMemorySpanExporter, own_feed: Any, sink: Sink, local_sender: None, make_api_client: Any
) -> None:
    event_type_create(name="order.created", schema={"type": "object"})
    sink.plan("flaky", 503, 200)
    endpoint_create(url=sink.url("flaky"), event_types=["order.created"])
    client = make_api_client()
    _post_event(client)
    Feeder().handle(own_feed.lpop(FEED_KEY))
    wait_until(lambda: DeliveryAttempt.objects.count() == 1)
    wait_until(lambda: len(_named(spans, "webhooks.record")) == 1)
    (failed,) = _named(spans, "webhooks.send")
    assert failed.status.status_code is StatusCode.ERROR
    assert _attr(failed, "error.type") == "503"
    (retrying,) = _named(spans, "webhooks.record")
    assert _attr(retrying, "webhooks.verdict") == "retry"
    # the request's ingest (a failure notice, an operational event, is ingested on its own)
    (ingest,) = [s for s in _named(spans, "webhooks.ingest") if _hex(s)[0] == _hex(failed)[0]]

    # later, another process's sweep (a trace of its own) sends it again
    delivery = Delivery.objects.get()
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=delivery.created_at)
    with tracing.span("sweep"):
        deliveries_dispatch(delivery_ids=[delivery.pk])
    wait_until(lambda: Delivery.objects.filter(status="succeeded").exists())
    wait_until(lambda: len(_named(spans, "webhooks.record")) == 2)
    second = next(s for s in _named(spans, "webhooks.send") if s is not failed)
    # its send is a child of the span that accepted the event, linked to the sweep's dispatch
    assert _hex(second)[:1] == _hex(ingest)[:1]
    assert _hex(second)[2] == _hex(ingest)[1]
    dispatch = next(s for s in _named(spans, "webhooks.dispatch") if _hex(s)[0] != _hex(ingest)[0])
    assert [format(link.context.span_id, "016x") for link in second.links] == [_hex(dispatch)[1]]
    assert _attr(second, "webhooks.attempt") == 2


@pytest.mark.django_db(transaction=True)
def test_a_trace_left_out_by_the_sampler_makes_no_spans_but_still_propagates(
    own_feed: Any, sink: Sink, local_sender: None, make_api_client: Any
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        event_type_create(name="order.created", schema={"type": "object"})
        endpoint_create(
            url=sink.url("asked"), event_types=["order.created"], trace_propagation=True
        )
        endpoint_create(url=sink.url("quiet"), event_types=["order.created"])
        # the producer's trace is not sampled (flags 00): nothing of it is recorded here
        _post_event(make_api_client(), HTTP_TRACEPARENT=PRODUCER[:-2] + "00")
        Feeder().handle(own_feed.lpop(FEED_KEY))
        (asked,) = sink.wait_for(1, "asked")
        (quiet,) = sink.wait_for(1, "quiet")
        wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 2)
    finally:
        tracing.disable()
    assert exporter.get_finished_spans() == ()
    # the endpoint that asked still gets the trace, marked not sampled, under a span id of its own
    version, trace_id, span_id, flags = asked.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", PRODUCER_TRACE, "00")
    assert len(span_id) == 16
    assert span_id not in (PRODUCER_SPAN, "0" * 16)
    assert "traceparent" not in quiet.headers


@pytest.mark.django_db(transaction=True)
def test_off_by_default_nothing_is_traced_or_sent(
    own_feed: Any, sink: Sink, local_sender: None, make_api_client: Any
) -> None:
    assert not tracing.ENABLED  # no OTEL_EXPORTER_OTLP_ENDPOINT in the tests' environment
    event_type_create(name="order.created", schema={"type": "object"})
    endpoint_create(url=sink.url("asked"), event_types=["order.created"], trace_propagation=True)
    event_id = _post_event(make_api_client(), HTTP_TRACEPARENT=PRODUCER)
    raw = own_feed.lpop(FEED_KEY)
    assert isinstance(orjson.loads(raw), list)  # a plain message, as before tracing
    Feeder().handle(raw)
    (received,) = sink.wait_for(1, "asked")
    assert "traceparent" not in received.headers
    assert Event.objects.get(pk=event_id).traceparent is None


def test_tracing_is_configured_by_the_otlp_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    assert not tracing.configured()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces")
    assert tracing.configured()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not tracing.configured()


@pytest.mark.parametrize(
    "raw",
    [b"[1, true]", b'["1"]', b'{"ids": "1"}', b'{"ids": [1], "traceparent": 5}', b"{", b"7"],
)
def test_a_malformed_feed_message_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match="JSON|list|string"):
        feed_message(raw)


def test_feed_messages_with_and_without_a_traceparent() -> None:
    assert feed_message(b"[1,2]") == ([1, 2], None)
    assert feed_message(orjson.dumps({"ids": [3], "traceparent": PRODUCER})) == ([3], PRODUCER)


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["traceparent", "TraceState"])
def test_trace_headers_are_ours(name: str, make_api_client: Any) -> None:
    answer = make_api_client().post(
        "/api/v1/endpoints/",
        {"url": "https://example.com/hook", "headers": {name: "x"}},
        format="json",
    )
    assert answer.status_code == 400
    errors = answer.json()["errors"]
    assert any(e["pointer"] == f"/headers/{name}" for e in errors), errors


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("feed", ["true", "false"], ids=["feed", "celery"])
def test_real_processes_export_one_trace_over_otlp(feed: str, sink: Sink, tmp_path: Path) -> None:
    """gunicorn and a Celery worker with OTEL_EXPORTER_OTLP_ENDPOINT set: the web's and the
    worker's spans reach the collector in one trace, by the feed or by a Celery message; the
    endpoint asks for the traceparent header by the README's example."""
    collector = Collector().start()
    server = LocalRedis(tmp_path / "redis", persist=False).start()
    env = worker_env(
        REDIS_URL=server.url(),
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_SERVICE_NAME="webhooks-test",
        WEBHOOKS_DIRECT_FEED=feed,
    )
    event_type_create(name="order.created", schema={"type": "object"})
    endpoint, _ = endpoint_create(url=sink.url("otlp"), event_types=["order.created"])
    _, key = api_key_create(name="otlp", scopes=ApiKey.Scope.values)
    web = WebServer(env).start()
    worker = WorkerProcess(env).start()
    try:
        # the README's line turns the endpoint's traceparent header on
        (command,) = commands_of(readme_section("### Tracing (OpenTelemetry)"))
        variables = {
            "API": web.url + "/api/v1",
            "AUTH": f"Authorization: Bearer {key}",
            "EP": endpoint.pk,
        }
        status, body = run_curl(command, variables, tmp_path / "curl.log")
        assert status == 200, body
        assert body["trace_propagation"] is True
        event = {"type": "order.created", "data": {"n": 1}}
        posted = web.post_json("/api/v1/events/", event, key, headers={"traceparent": PRODUCER})
        assert posted[0] == 202, posted
        (received,) = sink.wait_for(1, "otlp", timeout=30)

        def recorded() -> Any:
            return [s for s in collector.spans() if s.name == "webhooks.record"]

        wait_until(recorded, timeout=30)
    finally:
        worker.stop()
        web.stop()
        collector.stop()
        server.stop()
    found = [s for s in collector.spans() if s.trace_id == PRODUCER_TRACE]
    by_name = {s.name: s for s in found}
    assert {s.service for s in found} == {"webhooks-test"}
    for name in ("webhooks.ingest", "webhooks.publish"):
        assert by_name[name].role == "web"
    for name in ("webhooks.dispatch", "webhooks.claim", "webhooks.send", "webhooks.record"):
        assert by_name[name].role == "worker", name
    server_span = next(s for s in found if s.role == "web" and s.parent_id == PRODUCER_SPAN)
    assert by_name["webhooks.ingest"].parent_id == server_span.span_id
    send = by_name["webhooks.send"]
    assert received.headers["traceparent"] == f"00-{PRODUCER_TRACE}-{send.span_id}-01"
    assert by_name["webhooks.record"].parent_id == send.span_id
    assert send.parent_id == by_name["webhooks.dispatch"].span_id
    dispatch_parent = by_name["webhooks.dispatch"].parent_id
    if feed == "true":  # the feed message carries the publish span
        assert dispatch_parent == by_name["webhooks.publish"].span_id
    else:  # Celery's instrumentation: publish -> apply_async -> run -> dispatch
        run = next(s for s in found if s.span_id == dispatch_parent)
        assert run.name == "run/deliveries.tasks.deliver_batch"
        applied = next(s for s in found if s.span_id == run.parent_id)
        assert applied.parent_id == by_name["webhooks.publish"].span_id


@pytest.mark.django_db
def test_probes_and_scrapes_are_not_traced_the_metrics_api_is(
    spans: InMemorySpanExporter, make_api_client: Any
) -> None:
    client = make_api_client()
    client.get("/healthz")
    client.get("/metrics")
    assert spans.get_finished_spans() == ()
    client.get("/api/v1/metrics/?window=1h")
    assert [s.kind for s in spans.get_finished_spans()] == [SpanKind.SERVER]
