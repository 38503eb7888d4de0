"""`/metrics`: Prometheus text from the database and Redis, behind a token or a network."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.conf import settings
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from deliveries import metrics, ratelimit
from deliveries.models import DeadLetter, Delivery, Event
from deliveries.prometheus import queue_depths
from schemas_app.models import EventType
from webhooks.models import Endpoint

pytestmark = pytest.mark.django_db


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _scrape(client: Client, **extra: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return _samples(response.content.decode())


def test_counters_and_histograms_come_from_the_all_time_totals() -> None:
    deltas = metrics.Deltas()
    d = deltas.of("ep_1", "order.created")
    for ms in (3.0, 40.0, 40.0):
        d.attempt(ms)
        d.success(ms * 10)
    d.retried, d.dead, d.dead_lettered = 2, 1, 1
    metrics.stats_add(deltas, at=datetime.now(UTC))
    metrics.stats_add(deltas, at=datetime.now(UTC) - timedelta(days=400))  # still all-time
    samples = _scrape(Client())
    key = (("endpoint", "ep_1"), ("event_type", "order.created"))
    assert samples["webhooks_deliveries_finished_total", (*key, ("outcome", "succeeded"))] == 6
    assert samples["webhooks_deliveries_finished_total", (*key, ("outcome", "dead"))] == 2
    assert samples["webhooks_attempts_total", key] == 6
    assert samples["webhooks_attempts_retried_total", key] == 4
    assert samples["webhooks_dead_letters_total", key] == 2
    assert samples["webhooks_attempt_duration_seconds_count", key] == 6
    assert samples["webhooks_attempt_duration_seconds_sum", key] == pytest.approx(0.166)
    assert samples["webhooks_attempt_duration_seconds_bucket", (*key, ("le", "0.005"))] == 2
    assert samples["webhooks_attempt_duration_seconds_bucket", (*key, ("le", "0.05"))] == 6
    assert samples["webhooks_delivery_latency_seconds_bucket", (*key, ("le", "0.025"))] == 0
    assert samples["webhooks_delivery_latency_seconds_bucket", (*key, ("le", "+Inf"))] == 6


def test_gauges_show_the_backlog_the_oldest_overdue_delivery_and_disabled_endpoints() -> None:
    EventType.objects.create(name="t")
    endpoint = Endpoint.objects.create(url="https://example.com/a")
    Endpoint.objects.create(url="https://example.com/b", enabled=False)
    event = Event.objects.create(event_type_id="t", data={})
    now = datetime.now(UTC)
    overdue = Delivery.objects.create(
        event=event, endpoint=endpoint, next_attempt_at=now - timedelta(minutes=10)
    )
    later = Event.objects.create(event_type_id="t", data={})
    Delivery.objects.create(
        event=later, endpoint=endpoint, next_attempt_at=now + timedelta(hours=1)
    )
    DeadLetter.objects.create(delivery=overdue, endpoint=endpoint, event_type="t", reason="x")
    samples = _scrape(Client())
    assert samples["webhooks_deliveries_pending", ()] == 2
    assert 600 <= samples["webhooks_oldest_pending_delivery_age_seconds", ()] < 660
    assert samples["webhooks_endpoints_disabled", ()] == 1
    assert samples["webhooks_dead_letters_waiting", ()] == 1
    for queue in ("deliveries", "retries", "maintenance", "webhooks:fresh"):
        assert ("webhooks_queue_depth", (("queue", queue),)) in samples


def test_queue_depth_counts_every_priority_list_of_a_queue() -> None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    names = ["depth-test-a", "depth-test-b"]
    try:
        client.lpush("depth-test-a", "m1", "m2")
        client.lpush("depth-test-a\x06\x166", "m3")
        assert queue_depths(client, names) == {"depth-test-a": 3, "depth-test-b": 0}
    finally:
        client.delete("depth-test-a", "depth-test-a\x06\x166")
        client.close()


def test_only_the_allowed_networks_or_the_token_may_scrape(settings) -> None:  # noqa: ANN001
    from webhooks_project.env import parse_cidrs

    assert Client().get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert Client().get("/metrics", REMOTE_ADDR="::ffff:127.0.0.1").status_code == 200
    # a proxy on loopback does not make its clients local
    proxied = Client().get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert proxied.status_code == 403
    outside = Client().get("/metrics", REMOTE_ADDR="203.0.113.9")
    assert outside.status_code == 403
    assert b"WEBHOOKS_METRICS_ALLOW" in outside.content
    settings.WEBHOOKS_METRICS_TOKEN = "s3cret-token"
    settings.WEBHOOKS_METRICS_NETWORKS = parse_cidrs([])
    assert Client().get("/metrics").status_code == 401  # not even localhost without the token
    wrong = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer nope", REMOTE_ADDR="203.0.113.9")
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"].startswith("Bearer")
    good = Client().get(
        "/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token", REMOTE_ADDR="203.0.113.9"
    )
    assert good.status_code == 200
    assert Client().post("/metrics").status_code == 405


def test_the_grafana_dashboard_names_only_metrics_the_exporter_serves() -> None:
    import json
    import re
    from pathlib import Path

    deltas = metrics.Deltas()
    deltas.of("ep_1", "t").success(10)
    metrics.stats_add(deltas, at=datetime.now(UTC))
    ratelimit.take("ep_1", rate=1, want=2)  # one delivery held back by a rate limit
    served = {name for name, _ in _scrape(Client())}
    dashboard = json.loads(
        (Path(settings.BASE_DIR) / "docs" / "grafana-dashboard.json").read_text()
    )
    named = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bwebhooks_[a-z_]+", target["expr"])
    }
    assert named
    assert named <= served, named - served


def test_outside_dev_nothing_may_scrape_by_address_unless_configured() -> None:
    import os

    from cryptography.fernet import Fernet

    from tests.conftest import settings_probe

    env = dict(os.environ)
    env.update(
        WEBHOOKS_ENV="production",
        DJANGO_SECRET_KEY="x" * 50,
        WEBHOOKS_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
    )
    env.pop("WEBHOOKS_METRICS_ALLOW", None)
    code = "from django.conf import settings; print(list(settings.WEBHOOKS_METRICS_NETWORKS))"
    assert settings_probe(code, env) == "[]"


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["event_type"], {(("event_type", "order.created"),): 3, (("event_type", "x"),): 4}),
        (["endpoint"], {(("endpoint", "ep_1"),): 5, (("endpoint", "ep_2"),): 2}),
        ([], {(): 7}),
    ],
    ids=["event_type", "endpoint", "none"],
)
def test_fewer_labels_sum_the_series_they_leave_out(
    settings: object, labels: list[str], expected: dict[tuple[tuple[str, str], ...], int]
) -> None:
    # given totals for two endpoints and two event types
    deltas = metrics.Deltas()
    for endpoint, event_type, durations in (
        ("ep_1", "order.created", (3.0, 40.0)),
        ("ep_1", "x", (3.0, 3.0, 3.0)),
        ("ep_2", "order.created", (300.0,)),
        ("ep_2", "x", (40.0,)),
    ):
        d = deltas.of(endpoint, event_type)
        for ms in durations:
            d.attempt(ms)
    metrics.stats_add(deltas, at=datetime.now(UTC))
    # when /metrics is scraped with fewer labels
    settings.WEBHOOKS_METRICS_LABELS = labels  # type: ignore[attr-defined]
    samples = _scrape(Client())
    # then each series left is the sum of those it stands for, histograms bucket by bucket
    attempts = {k: v for (name, k), v in samples.items() if name == "webhooks_attempts_total"}
    assert attempts == expected
    total_fast = sum(
        v
        for (name, k), v in samples.items()
        if name == "webhooks_attempt_duration_seconds_bucket" and ("le", "0.005") in k
    )
    assert total_fast == 4  # the four 3 ms attempts, however they are grouped
    if not labels:
        key = (("le", "0.05"),)
        assert samples["webhooks_attempt_duration_seconds_bucket", key] == 6


def test_an_unknown_metrics_label_is_refused_at_start() -> None:
    import os

    from tests.conftest import startup_refusal

    said = startup_refusal({**os.environ, "WEBHOOKS_METRICS_LABELS": "endpoint,url"})
    assert "WEBHOOKS_METRICS_LABELS" in said
    assert "'endpoint,url'" in said
