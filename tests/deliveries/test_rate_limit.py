"""An endpoint's `rate_limit_per_second`: enforced across workers, and nothing fails for it."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from deliveries import ratelimit
from deliveries.models import Delivery, DeliveryAttempt
from tests.conftest import WorkerProcess, wait_idle, wait_until
from tests.sink import Sink
from webhooks.models import Endpoint


def test_each_refused_request_is_due_when_a_token_is_there_for_it() -> None:
    grant = ratelimit.Grant(granted=2, wait=0.25)
    assert ratelimit.due_in(grant, rate=4, count=3) == [0.25, 0.5, 0.75]


def test_the_bucket_holds_one_seconds_worth_and_refills_at_the_rate() -> None:
    endpoint = f"ep_{uuid.uuid4().hex}"
    # a fresh bucket gives one second's worth at once; the 2 refused get the next 2 slots
    began = time.monotonic()
    first = ratelimit.take(endpoint, rate=2, want=4)
    assert first.granted == 2
    assert first.wait == pytest.approx(0.5, abs=1e-6)
    # an empty bucket gives nothing, and promises the slot after those already promised
    second = ratelimit.take(endpoint, rate=2, want=1)
    elapsed = time.monotonic() - began
    if elapsed >= 0.5:  # a token came back meanwhile: the figures below would not hold
        pytest.skip(f"the machine stalled {elapsed:.2f} s between two Redis calls")
    assert second.granted == 0
    assert 1.5 - elapsed - 0.01 <= second.wait <= 1.5 + 1e-6  # after slots 0.5 and 1.0
    # each request held back is counted for the endpoint
    assert ratelimit.held_back()[endpoint] == 3
    # it refills at the rate, never beyond one second's worth
    time.sleep(1.6)
    assert ratelimit.take(endpoint, rate=2, want=20).granted == 2
    # every endpoint has its own bucket
    assert ratelimit.take(f"ep_{uuid.uuid4().hex}", rate=5, want=5).granted == 5


def test_without_redis_nothing_is_granted_and_the_deliveries_wait(settings: Any) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",  # nothing listens on the discard port
        }
    }
    ratelimit._client = None
    try:
        grant = ratelimit.take("ep_x", rate=5, want=3)
    finally:
        ratelimit._client = None
    assert grant == ratelimit.Grant(0, 1.0)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_burst_to_a_limited_endpoint_is_paced_and_every_delivery_succeeds_once(
    api: APIClient, sink: Sink, celery_worker: WorkerProcess
) -> None:
    # given an endpoint limited to 5 requests per second, and one without a limit
    created = api.post(
        "/api/v1/event-types/", {"name": "order.created", "schema": {}}, format="json"
    )
    assert created.status_code == 201
    limited = api.post(
        "/api/v1/endpoints/",
        {"url": sink.url("limited"), "rate_limit_per_second": 5},
        format="json",
    )
    assert limited.status_code == 201, limited.content
    assert limited.json()["rate_limit_per_second"] == 5
    api.post("/api/v1/endpoints/", {"url": sink.url("free")}, format="json")

    # when 40 events are posted at once
    response = api.post(
        "/api/v1/events/batch/",
        [{"type": "order.created", "data": {"n": n}} for n in range(40)],
        format="json",
    )
    assert response.status_code == 202, response.content

    # then the limited endpoint gets all 40, spread out: 5 at once, then 5 a second, so the
    # last 35 take at least 7 s (2 s of slack for how late the first one may arrive)
    received = sink.wait_for(40, "limited", timeout=60)
    times = sorted(r.at for r in received)
    assert times[-1] - times[0] >= 5.0, f"40 requests in {times[-1] - times[0]:.2f} s"
    assert len({r.headers["webhook-id"] for r in received}) == 40
    assert len(sink.wait_for(40, "free")) == 40
    # and nothing failed for the limit: one attempt each, all succeeded, none counted twice
    wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 80, timeout=40)
    limited_id = limited.json()["id"]
    attempts = DeliveryAttempt.objects.filter(delivery__endpoint_id=limited_id)
    assert attempts.count() == 40
    assert set(attempts.values_list("outcome", "number")) == {("succeeded", 1)}
    wait_idle()
    assert len(sink.requests("limited")) == 40


def test_the_limit_must_be_a_positive_whole_number(api: APIClient) -> None:
    for bad in (0, -1, 1.5, "fast", 10**9):
        response = api.post(
            "/api/v1/endpoints/",
            {"url": "https://example.com/hook", "rate_limit_per_second": bad},
            format="json",
        )
        assert response.status_code == 400, bad
        assert response.json()["errors"][0]["pointer"] == "/rate_limit_per_second"


def test_the_admin_refuses_a_limit_of_zero_and_saves_a_real_one(
    admin_client: Any, db: None
) -> None:
    endpoint = Endpoint.objects.create(url="http://127.0.0.1:9/x")
    url = f"/admin/webhooks/endpoint/{endpoint.pk}/change/"
    form = admin_client.get(url).context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None}
    data.update(event_types="", headers="{}", **{"secrets-TOTAL_FORMS": 0})
    data["secrets-INITIAL_FORMS"] = 0
    refused = admin_client.post(url, {**data, "rate_limit_per_second": 0})
    assert refused.status_code == 200
    assert "rate_limit_per_second" in refused.context["adminform"].form.errors
    saved = admin_client.post(url, {**data, "rate_limit_per_second": 20})
    assert saved.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.rate_limit_per_second == 20


@pytest.mark.django_db
def test_hold_backs_are_a_prometheus_counter_per_endpoint(settings: Any) -> None:
    from django.test import Client
    from prometheus_client.parser import text_string_to_metric_families

    endpoint = f"ep_{uuid.uuid4().hex}"
    ratelimit.take(endpoint, rate=1, want=4)  # 1 granted, 3 held back

    def scrape() -> dict[tuple[tuple[str, str], ...], float]:
        text = Client(REMOTE_ADDR="127.0.0.1").get("/metrics").content.decode()
        return {
            tuple(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "webhooks_deliveries_rate_limited_total"
        }

    assert scrape()[(("endpoint", endpoint),)] == 3
    settings.WEBHOOKS_METRICS_LABELS = ["event_type"]
    assert scrape()[()] >= 3  # summed over every endpoint
