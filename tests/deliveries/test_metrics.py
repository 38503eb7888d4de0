"""The three metrics: the rollup written by the delivery path, and the API that reads it."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from deliveries import metrics, metrics_reading
from deliveries.models import DeadLetter, Delivery, DeliveryAttempt, DeliveryStat, DeliveryTotal
from deliveries.services.endpoints import deliveries_fail_for_endpoint
from tests.conftest import WorkerProcess, wait_until
from tests.sink import Sink

SCHEMA = {"type": "object", "properties": {"id": {"type": "string"}}}


# --- Pure: histogram buckets and percentiles ---------------------------------------------------


def test_a_value_on_a_bound_falls_in_that_bucket_and_anything_past_the_last_in_the_open_one():
    assert metrics.bucket_index(0) == 0
    assert metrics.bucket_index(5) == 0
    assert metrics.bucket_index(5.01) == 1
    assert metrics.bucket_index(10**12) == len(metrics.BOUNDS_MS)
    assert len(metrics.BOUNDS_MS) + 1 == metrics.BUCKETS


def test_percentiles_interpolate_inside_the_bucket_holding_the_rank():
    hist = [0] * metrics.BUCKETS
    assert metrics.percentile(hist, 0.5) is None
    hist[metrics.bucket_index(40)] = 100  # 100 values in (25, 50]
    assert metrics.percentile(hist, 0.5) == pytest.approx(37.5)
    assert metrics.percentile(hist, 1.0) == pytest.approx(50)
    hist[metrics.bucket_index(10**9)] = 100  # and 100 in the open bucket
    assert metrics.percentile(hist, 0.99) == metrics.BOUNDS_MS[-1]
    assert metrics.percentile(hist, 0.25) == pytest.approx(37.5)


def test_a_percentile_is_never_above_the_largest_value_recorded():
    hist = [0] * metrics.BUCKETS
    hist[metrics.bucket_index(96_000)] = 100  # 100 values in (60 s, 300 s], the slowest 96 s
    assert metrics.percentile(hist, 0.99) == pytest.approx(297_600)  # interpolated: too high
    assert metrics.percentile(hist, 0.99, 96_000) == 96_000
    assert metrics.percentile(hist, 0.01, 96_000) == pytest.approx(62_400)  # below it: as is
    hist[-1] = 1  # the open bucket reports its lower bound, capped too
    assert metrics.percentile(hist, 1.0, 90_000_000) == metrics.BOUNDS_MS[-1]


def test_histograms_of_different_lengths_add_up_by_position():
    assert metrics.add_hists([1, 2], [3, 4, 5]) == [4, 6, 5]
    assert metrics.add_hists(None, [1]) == [1]


# --- The rollup in PostgreSQL ------------------------------------------------------------------


def _delta(**counts: Any) -> metrics.Delta:
    delta = metrics.Delta()
    for name, value in counts.items():
        setattr(delta, name, value)
    return delta


@pytest.mark.django_db
def test_adding_twice_to_one_minute_sums_counters_and_histograms_in_one_row():
    at = datetime(2026, 1, 1, 12, 30, 15, tzinfo=UTC)
    for latency in (20.0, 40.0):
        deltas = metrics.Deltas()
        d = deltas.of("ep_1", "order.created")
        d.attempt(latency / 2)
        d.success(latency)
        metrics.stats_add(deltas, at=at)
    assert DeliveryStat.objects.count() == 3  # one row per span
    buckets = dict(DeliveryStat.objects.values_list("span", "bucket"))
    assert buckets == {
        60: datetime(2026, 1, 1, 12, 30, tzinfo=UTC),
        900: datetime(2026, 1, 1, 12, 30, tzinfo=UTC),
        3600: datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
    }
    row = DeliveryStat.objects.get(span=60)
    assert (row.succeeded, row.attempts, row.latency_ms_sum) == (2, 2, 60.0)
    assert row.latency_hist[metrics.bucket_index(20)] == 1
    assert row.latency_hist[metrics.bucket_index(40)] == 1
    assert sum(row.attempt_hist) == 2
    (total,) = DeliveryTotal.objects.all()
    assert (total.succeeded, total.latency_hist) == (2, row.latency_hist)


@pytest.mark.django_db
def test_the_api_and_the_dashboard_percentiles_stop_at_the_slowest_delivery(
    api: APIClient, admin_client: Any
) -> None:
    now = datetime.now(UTC)
    for latency in (70_000.0, 96_000.0, 81_000.0):  # three slow successes, one row each
        deltas = metrics.Deltas()
        d = deltas.of("ep_1", "order.created")
        d.attempt(latency / 10)
        d.success(latency)
        metrics.stats_add(deltas, at=now)
    body = api.get("/api/v1/metrics/", {"window": "1h"}).json()
    assert body["latency_ms"]["p99"] == 96_000
    assert body["latency_ms"]["p50"] <= 96_000
    assert body["attempt_duration_ms"]["p99"] == 9_600
    (total,) = DeliveryTotal.objects.all()
    assert (total.latency_ms_max, total.attempt_ms_max) == (96_000, 9_600)
    # the dashboard's p95 line reads the same capped value (interpolated: 288,000 ms)
    summary = metrics_reading.summary(metrics_reading.window_scope("1h", now=now))
    assert summary.latency_p95 == 96_000
    assert admin_client.get("/admin/metrics/", {"window": "1h"}).status_code == 200


@pytest.mark.django_db
def test_a_window_sums_only_its_minutes_and_the_series_has_every_step():
    now = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    for minutes_ago, succeeded, failed in ((0, 3, 1), (10, 5, 0), (59, 1, 1), (61, 100, 100)):
        deltas = metrics.Deltas()
        deltas["ep_1", "a"] = _delta(succeeded=succeeded, failed=failed)
        deltas["ep_2", "b"] = _delta(dead=1, dead_lettered=1)
        metrics.stats_add(deltas, at=now - timedelta(minutes=minutes_ago))
    scope = metrics_reading.window_scope("1h", now=now)
    s = metrics_reading.summary(scope)
    assert (s.succeeded, s.failed, s.dead, s.dead_lettered) == (9, 2, 3, 3)
    assert s.success_rate == pytest.approx(9 / 14)
    only_one = metrics_reading.summary(
        metrics_reading.window_scope("1h", now=now, endpoint_ids=["ep_1"])
    )
    assert (only_one.succeeded, only_one.dead) == (9, 0)
    by_type = metrics_reading.summary(metrics_reading.window_scope("1h", now=now, event_type="b"))
    assert (by_type.succeeded, by_type.dead) == (0, 3)
    points = metrics_reading.series(scope, metrics_reading.STEPS["1h"])
    assert len(points) == 61  # the partial minute at each end included
    assert sum(p.succeeded for _, p in points) == 9
    assert points[-1][1].succeeded == 3
    assert points[-1][0] == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    per_endpoint = metrics_reading.by_endpoint(scope)
    assert per_endpoint["ep_2"].success_rate == 0.0
    # the longer windows read the quarter-hour and hourly rows: the same outcomes, all four
    for window, points_count in (("24h", 97), ("7d", 85)):
        longer = metrics_reading.window_scope(window, now=now)
        assert longer.span == metrics_reading.WINDOW_SPANS[window]
        total = metrics_reading.summary(longer)
        assert (total.succeeded, total.failed, total.dead) == (109, 102, 4)
        steps = metrics_reading.series(longer, metrics_reading.STEPS[window])
        assert len(steps) == points_count
        assert sum(p.succeeded for _, p in steps) == 109


# --- Written by the real delivery path ---------------------------------------------------------


def _endpoint(api: APIClient, url: str, **fields: Any) -> dict[str, Any]:
    response = api.post("/api/v1/endpoints/", {"url": url, **fields}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _post(api: APIClient, count: int, event_type: str = "order.created") -> None:
    for i in range(count):
        body = {"type": event_type, "data": {"id": f"o-{i}"}}
        assert api.post("/api/v1/events/", body, format="json").status_code == 202


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_metrics_api_reports_what_the_worker_recorded(
    api: APIClient,
    make_api_client: Callable[..., APIClient],
    sink: Sink,
    celery_worker: WorkerProcess,
) -> None:
    # given an endpoint that answers 200, one that fails once then answers, and one that
    # answers 400 (failed, no retry), for two event types
    for name in ("order.created", "user.created"):
        assert (
            api.post("/api/v1/event-types/", {"name": name, "schema": SCHEMA}, format="json")
        ).status_code == 201
    sink.plan("flaky", 500, 200)
    _endpoint(api, sink.url("ok"))
    flaky = _endpoint(api, sink.url("flaky"), event_types=["order.created"], retry_schedule=[0])
    bad = _endpoint(api, sink.url("bad"), event_types=["user.created"], retry_schedule=[0])
    sink.plan("bad", 400)
    # when events go through the real worker
    _post(api, 6, "order.created")
    _post(api, 3, "user.created")
    finished = ("succeeded", "failed", "dead")
    wait_until(lambda: Delivery.objects.filter(status__in=finished).count() == 6 + 6 + 3 + 3)
    # then the API counts exactly what the database holds
    body = api.get("/api/v1/metrics/?window=1h").json()
    assert body["window"] == "1h"
    assert body["deliveries"] == {
        "finished": 18,
        "succeeded": 15,
        "failed": 3,
        "dead": 0,
        "success_rate": round(15 / 18, 6),
        "filtered": 0,
    }
    assert body["retries"] == {
        "failed_attempts_retried": 1,
        "dead_letters": 3,
        "attempts_lost": 0,
    }
    assert body["attempt_duration_ms"]["count"] == DeliveryAttempt.objects.count() == 19
    # the latency is from acceptance to the consumer's 2xx, per successful delivery
    latencies = [
        (a.started_at - a.delivery.event.created_at).total_seconds() * 1000 + a.duration_ms
        for a in DeliveryAttempt.objects.filter(outcome="succeeded").select_related(
            "delivery__event"
        )
    ]
    assert body["latency_ms"]["count"] == 15
    assert body["latency_ms"]["mean"] == pytest.approx(statistics.mean(latencies), abs=0.5)
    assert body["latency_ms"]["p50"] <= body["latency_ms"]["p95"] <= body["latency_ms"]["p99"]
    assert max(latencies) <= body["latency_ms"]["p99"] * 2.5  # within its histogram bucket
    points = body["series"]["points"]
    assert body["series"]["step_seconds"] == 60
    assert len(points) in (60, 61)
    assert sum(p["succeeded"] for p in points) == 15
    # and the filters narrow it
    one = api.get(f"/api/v1/metrics/?window=1h&endpoint={flaky['id']}").json()
    assert one["deliveries"]["succeeded"] == 6
    assert one["retries"]["failed_attempts_retried"] == 1
    users = api.get("/api/v1/metrics/?window=24h&event_type=user.created").json()
    assert users["deliveries"]["finished"] == 6
    assert users["deliveries"]["failed"] == 3
    assert api.get(f"/api/v1/metrics/?endpoint={bad['id']}").json()["deliveries"]["failed"] == 3


@pytest.mark.django_db
def test_disabling_an_endpoint_counts_its_ended_deliveries_and_dead_letters(
    api: APIClient, sink: Sink
) -> None:
    api.post("/api/v1/event-types/", {"name": "order.created", "schema": SCHEMA}, format="json")
    endpoint = _endpoint(api, sink.url("x"))
    _post(api, 4)
    assert deliveries_fail_for_endpoint(endpoint_id=endpoint["id"], reason="410 Gone") == 4
    assert DeadLetter.objects.count() == 4
    body = api.get("/api/v1/metrics/?window=1h").json()
    assert body["deliveries"]["failed"] == 4
    assert body["retries"]["dead_letters"] == 4
    assert body["attempt_duration_ms"]["count"] == 0


@pytest.mark.django_db
def test_bad_filters_are_clear_errors_and_a_limited_key_sees_its_own_endpoints_only(
    api: APIClient, make_api_client: Callable[..., APIClient]
) -> None:
    assert api.get("/api/v1/metrics/?window=2h").status_code == 400
    response = api.get("/api/v1/metrics/?endpoint=ep_nope")
    assert response.status_code == 400
    assert "ep_nope" in response.content.decode()
    assert api.get("/api/v1/metrics/?event_type=nope.nope").status_code == 400
    empty = api.get("/api/v1/metrics/").json()
    assert empty["window"] == "24h"
    assert empty["deliveries"]["success_rate"] is None
    assert empty["latency_ms"] == {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None}
    assert len(empty["series"]["points"]) in (96, 97)
    # a key limited to one application counts only that application's endpoints
    from webhooks.models import Application, Endpoint
    from webhooks.services import api_key_create

    mine, theirs = Application.objects.create(uid="mine"), Application.objects.create(uid="x")
    my_ep = Endpoint.objects.create(application=mine, url="https://example.com/a")
    their_ep = Endpoint.objects.create(application=theirs, url="https://example.com/b")
    deltas = metrics.Deltas()
    deltas[my_ep.pk, "t"] = _delta(succeeded=2)
    deltas[their_ep.pk, "t"] = _delta(succeeded=5)
    metrics.stats_add(deltas, at=datetime.now(UTC))
    _, key = api_key_create(name="limited", scopes=["read"], application=mine)
    limited = APIClient()
    limited.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert limited.get("/api/v1/metrics/").json()["deliveries"]["succeeded"] == 2
    assert limited.get(f"/api/v1/metrics/?endpoint={their_ep.pk}").status_code == 400
    assert api.get("/api/v1/metrics/").json()["deliveries"]["succeeded"] == 7


@pytest.mark.django_db
def test_the_prune_job_keeps_each_span_for_its_time_and_the_totals_forever(settings) -> None:  # noqa: ANN001
    from deliveries.tasks import prune

    now = datetime.now(UTC)
    for days_ago in (0, 10, 100):
        deltas = metrics.Deltas()
        deltas["ep_1", "t"] = _delta(succeeded=1)
        metrics.stats_add(deltas, at=now - timedelta(days=days_ago))
    settings.WEBHOOKS_METRICS_RETENTION_DAYS = 30
    prune()
    kept = sorted((r.span, (now - r.bucket).days) for r in DeliveryStat.objects.all())
    # minutes for 2 days, quarters for 14, hours for WEBHOOKS_METRICS_RETENTION_DAYS
    assert kept == [(60, 0), (900, 0), (900, 10), (3600, 0), (3600, 10)]
    assert DeliveryTotal.objects.get().succeeded == 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_recorders_adding_to_the_same_rows_neither_deadlock_nor_lose_counts() -> None:
    import random
    import threading

    from django.db import connections, transaction

    errors: list[BaseException] = []
    keys = [(f"ep_{e}", t) for e in range(4) for t in ("a", "b")]
    at = datetime.now(UTC)

    def recorder(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(40):
                deltas = metrics.Deltas()
                for key in rng.sample(keys, len(keys)):  # a different order each time
                    deltas[key] = _delta(succeeded=1, attempts=2)
                with transaction.atomic():
                    metrics.stats_add(deltas, at=at)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=recorder, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    for total in DeliveryTotal.objects.all():
        assert (total.succeeded, total.attempts) == (160, 320)
    assert DeliveryTotal.objects.count() == len(keys)
    assert DeliveryStat.objects.filter(span=3600).count() == len(keys)
