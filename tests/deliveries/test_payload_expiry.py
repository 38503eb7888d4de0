"""Payloads that expire before their rows (WEBHOOKS_PAYLOAD_RETENTION_DAYS)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from bench.fill import fill_month
from deliveries.models import Delivery, DeliveryAttempt, PayloadExpiredDay
from deliveries.services.payloads import payloads_expire
from tests.conftest import startup_refusal


def _month(api: APIClient, *, events: int = 400) -> list[str]:
    api.post("/api/v1/event-types/", {"name": "page.tick", "schema": {}}, format="json")
    endpoints = [
        api.post("/api/v1/endpoints/", {"url": f"http://127.0.0.1:9/{i}"}, format="json").json()[
            "id"
        ]
        for i in range(2)
    ]
    with connection.cursor() as cursor:
        fill_month(
            cursor,
            endpoints=endpoints,
            event_type="page.tick",
            events=events,
            days=20,
            attempts=2,
            dead_every=4,
            vacuum=False,
        )
        cursor.execute(
            "UPDATE deliveries_deliveryattempt SET response_body = 'ok, thanks', "
            'response_headers = \'{"x-consumer": "secret-ish"}\''
        )
    return endpoints


def test_succeeded_deliveries_lose_their_payloads_after_the_setting_and_keep_their_rows(
    api: APIClient, settings: Any
) -> None:
    # given 20 days of deliveries with bodies and answers, a quarter of them dead
    settings.WEBHOOKS_RETENTION_DAYS = 30
    settings.WEBHOOKS_PAYLOAD_RETENTION_DAYS = 7
    _month(api)
    now = timezone.now()
    cutoff = now - timedelta(days=7)
    old_ok = Delivery.objects.filter(
        status="succeeded", completed_at__lt=cutoff - timedelta(days=1)
    )
    old_dead = Delivery.objects.filter(status="dead", completed_at__lt=cutoff - timedelta(days=1))
    recent = Delivery.objects.filter(created_at__gte=cutoff + timedelta(hours=1))
    counts = (old_ok.count(), old_dead.count(), recent.count())
    assert all(counts)
    attempts_before = DeliveryAttempt.objects.count()

    # when the job runs
    done = payloads_expire(now=now)

    # then the succeeded deliveries of the days past 7 days have no payload left, rows intact
    assert done["days"] >= 12
    assert done["deliveries"] >= counts[0]
    assert not old_ok.filter(request_body__isnull=False).exists()
    assert not old_ok.filter(payload_expired_at__isnull=True).exists()
    cleared_attempts = DeliveryAttempt.objects.filter(delivery__in=old_ok)
    assert cleared_attempts.count() == 2 * counts[0]
    assert not cleared_attempts.exclude(response_body="").exists()
    assert not cleared_attempts.exclude(response_headers={}).exists()
    assert not cleared_attempts.filter(request_body_bytes__isnull=True).exists()  # size kept
    assert DeliveryAttempt.objects.count() == attempts_before
    # dead ones, and everything recent, keep everything
    for kept in (old_dead, recent):
        assert not kept.filter(request_body__isnull=True).exists()
        assert not kept.filter(payload_expired_at__isnull=False).exists()
        assert not DeliveryAttempt.objects.filter(delivery__in=kept, response_body="").exists()

    # the API says the body expired instead of showing an empty one
    delivery = old_ok.first()
    assert delivery is not None
    shown = api.get(f"/api/v1/deliveries/{delivery.pk}/").json()
    assert shown["payload_expired_at"] is not None
    [first, second] = api.get(f"/api/v1/deliveries/{delivery.pk}/attempts/").json()["results"]
    assert first["request_body"] is None
    assert first["request_body_bytes"] == 300
    assert first["response_body"] == ""
    dead = old_dead.first()
    assert dead is not None
    [kept_attempt, _] = api.get(f"/api/v1/deliveries/{dead.pk}/attempts/").json()["results"]
    assert kept_attempt["request_body"] == "x" * 300

    # and a second run passes over no day again
    assert payloads_expire(now=now) == {"days": 0, "deliveries": 0}
    assert PayloadExpiredDay.objects.count() == done["days"]


def test_the_admin_shows_an_expired_body_as_expired(
    api: APIClient, admin_client: Any, settings: Any
) -> None:
    settings.WEBHOOKS_RETENTION_DAYS = 30
    settings.WEBHOOKS_PAYLOAD_RETENTION_DAYS = 3
    _month(api, events=60)
    payloads_expire()
    delivery = Delivery.objects.filter(payload_expired_at__isnull=False).first()
    assert delivery is not None
    page = admin_client.get(f"/admin/deliveries/delivery/{delivery.pk}/change/")
    assert page.status_code == 200
    assert "WEBHOOKS_PAYLOAD_RETENTION_DAYS" in page.content.decode()
    assert "x" * 300 not in page.content.decode()


def test_no_setting_no_expiry(api: APIClient, settings: Any) -> None:
    settings.WEBHOOKS_PAYLOAD_RETENTION_DAYS = 0
    _month(api, events=40)
    assert payloads_expire() == {"days": 0, "deliveries": 0}
    assert not Delivery.objects.filter(request_body__isnull=True).exists()


def test_a_payload_retention_not_shorter_than_the_rows_is_refused_at_start_up() -> None:
    env = dict(os.environ, WEBHOOKS_RETENTION_DAYS="14", WEBHOOKS_PAYLOAD_RETENTION_DAYS="14")
    assert "WEBHOOKS_PAYLOAD_RETENTION_DAYS (14) must be shorter than" in startup_refusal(env)
