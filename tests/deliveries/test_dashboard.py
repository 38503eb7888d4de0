"""The admin dashboard and its server-rendered charts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from deliveries import charts, metrics
from deliveries.models import DeadLetter, Delivery, Event
from schemas_app.models import EventType
from webhooks.models import Endpoint


def test_a_line_breaks_where_there_is_no_data_and_labels_are_escaped() -> None:
    svg = str(
        charts.line_chart(
            [charts.Line("<b>rate</b>", [0.5, 1.0, None, 0.25, 0.75], "#000")],
            ["a", "b", "c", "d", "<e>"],
            unit="%",
            y_max=1.0,
        )
    )
    assert svg.count("<polyline") == 2  # two runs either side of the gap
    assert svg.count("<circle") == 4
    assert "<b>" not in svg
    assert "&lt;b&gt;rate&lt;/b&gt;: 50.0%" in svg
    assert "&lt;e&gt;" in svg
    assert "100.0%" in svg  # the top grid line


def test_a_rate_just_below_one_never_reads_as_a_hundred_percent() -> None:
    from deliveries.templatetags.delivery_metrics import percent

    assert percent(2629 / 2638) == "99.66%"
    assert percent(0.99999) == "99.99%"
    assert percent(1.0) == "100%"
    assert percent(None) == "–"


def _y_labels(values: list[float]) -> list[str]:
    svg = str(charts.line_chart([charts.Line("p95", values, "#000")], ["a", "b"], unit="ms"))
    return re.findall(r'text-anchor="end" fill="#666">([^<]+)</text>', svg)[:5]  # the grid's


def test_an_axis_is_labelled_in_one_unit() -> None:
    # not "0 ms" and "5000 ms" below "10.0 s"
    assert _y_labels([400.0, 40_000.0]) == ["0.0 s", "10.0 s", "20.0 s", "30.0 s", "40.0 s"]
    assert _y_labels([4.0, 400.0])[-1] == "400 ms"


@pytest.mark.django_db
def test_an_empty_window_reads_as_no_data_not_a_blank_number(admin_client: Client) -> None:
    page = admin_client.get("/admin/metrics/", {"window": "1h"}).content.decode()
    assert " / ms" not in page
    assert "p50  ·" not in page
    assert "no delivery succeeded in this window" in page


def test_an_empty_chart_says_so() -> None:
    svg = str(charts.line_chart([charts.Line("x", [None, None], "#000")], ["a", "b"]))
    assert "No deliveries finished" in svg
    assert "<polyline" not in svg


@pytest.mark.django_db
def test_the_dashboard_shows_the_metrics_the_worst_endpoint_first_and_the_backlog(
    admin_client: Client,
) -> None:
    EventType.objects.create(name="t")
    good = Endpoint.objects.create(url="https://example.com/good")
    bad = Endpoint.objects.create(url="https://example.com/bad", enabled=False)
    now = datetime.now(UTC)
    deltas = metrics.Deltas()
    for _ in range(9):
        deltas.of(good.pk, "t").success(120.0)
    deltas.of(bad.pk, "t").success(80.0)
    deltas.of(bad.pk, "t").dead = 3
    deltas.of(bad.pk, "t").dead_lettered = 3
    deltas.of(bad.pk, "t").retried = 12
    metrics.stats_add(deltas, at=now - timedelta(minutes=5))
    event = Event.objects.create(event_type_id="t", data={})
    overdue = Delivery.objects.create(
        event=event, endpoint=good, next_attempt_at=now - timedelta(minutes=3)
    )
    DeadLetter.objects.create(delivery=overdue, endpoint=bad, event_type="t", reason="x")

    response = admin_client.get("/admin/metrics/?window=1h")
    assert response.status_code == 200
    html = response.content.decode()
    card = re.search(r'id="card-success-rate">.*?class="value">([^<]+)<', html, re.S)
    assert card
    assert card.group(1).strip() == "76.92%"
    assert "10 of 13 finished" in html
    assert re.search(r'id="card-retries">.*?class="value">12<', html, re.S)
    assert f"/admin/deliveries/delivery/{overdue.pk}/change/" in html
    table = html[html.index('id="endpoint-table"') :]
    assert table.index(bad.pk) < table.index(good.pk)  # most failing first
    assert html.count('class="chart"') == 3
    assert 'class="current" data-window="1h"' in html


@pytest.mark.django_db
def test_the_dashboard_needs_a_staff_login_and_the_index_links_to_it(admin_client: Client) -> None:
    response = Client().get("/admin/metrics/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    assert "/admin/metrics/" in admin_client.get("/admin/").content.decode()
    assert admin_client.get("/admin/metrics/?window=bogus").status_code == 200
