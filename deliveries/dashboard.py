"""The admin dashboard (`/admin/metrics/`): the three metrics with charts, the endpoints that fail
most, the most overdue delivery and the dead letters waiting. Read from the metrics rollup, so it
answers in milliseconds however many attempts there are."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from webhooks.models import Endpoint

from . import charts, metrics_reading
from .selectors import backlog

TABLE_ROWS = 50


@dataclass
class EndpointRow:
    endpoint_id: str
    url: str
    enabled: bool
    disabled_reason: str
    summary: metrics_reading.Summary

    @property
    def failures(self) -> int:
        return self.summary.failed + self.summary.dead


def endpoint_rows(scope: metrics_reading.Scope) -> list[EndpointRow]:
    """Endpoints with deliveries finished in the window, the most failing first."""
    summaries = metrics_reading.by_endpoint(scope)
    known = {
        e["id"]: e
        for e in Endpoint.objects.filter(pk__in=summaries).values(
            "id", "url", "enabled", "disabled_reason"
        )
    }
    rows = []
    for endpoint_id, summary in summaries.items():
        endpoint = known.get(endpoint_id)
        rows.append(
            EndpointRow(
                endpoint_id=endpoint_id,
                url=endpoint["url"] if endpoint else "(deleted)",
                enabled=endpoint["enabled"] if endpoint else False,
                disabled_reason=endpoint["disabled_reason"] if endpoint else "",
                summary=summary,
            )
        )
    rows.sort(
        key=lambda r: (
            -(r.failures + r.summary.retried),
            r.summary.success_rate if r.summary.success_rate is not None else 1.0,
            r.endpoint_id,
        )
    )
    return rows


def _label(at: datetime, window: str) -> str:
    local = timezone.localtime(at)
    return local.strftime("%H:%M" if window != "7d" else "%a %H:%M")


def _charts(
    points: list[tuple[datetime, metrics_reading.Summary]], window: str
) -> dict[str, SafeString]:
    labels = [_label(start, window) for start, _ in points]
    summaries = [s for _, s in points]
    success = charts.line_chart(
        [charts.Line("success rate", [s.success_rate for s in summaries], "#2e7d32")],
        labels,
        unit="%",
        y_max=1.0,
        title="Delivery success rate",
    )
    latency = charts.line_chart(
        [
            charts.Line(
                "mean",
                [s.latency_mean for s in summaries],
                "#1565c0",
            ),
            charts.Line("p95", [s.latency_p95 for s in summaries], "#ef6c00"),
        ],
        labels,
        unit="ms",
        title="Latency to consumer",
    )
    volume = charts.line_chart(
        [
            charts.Line("succeeded", [float(s.succeeded) for s in summaries], "#2e7d32"),
            charts.Line("failed or dead", [float(s.failed + s.dead) for s in summaries], "#c62828"),
            charts.Line("retried attempts", [float(s.retried) for s in summaries], "#f9a825"),
        ],
        labels,
        title="Deliveries finished and retries",
    )
    return {"success": success, "latency": latency, "volume": volume}


def _overdue(delivery: Mapping[str, Any] | None, now: datetime) -> dict[str, Any] | None:
    if delivery is None:
        return None
    return {
        **delivery,
        "overdue": now - delivery["next_attempt_at"],
        "url": reverse("admin:deliveries_delivery_change", args=[delivery["id"]]),
    }


def dashboard_view(request: HttpRequest) -> HttpResponse:
    window = request.GET.get("window", "24h")
    if window not in metrics_reading.WINDOWS:
        window = "24h"
    now = timezone.now()
    scope = metrics_reading.window_scope(window, now=now)
    points = metrics_reading.series(scope, metrics_reading.STEPS[window])
    summary = metrics_reading.total(points)
    waiting = backlog(now)
    context = {
        **admin.site.each_context(request),
        "title": "Delivery dashboard",
        "window": window,
        "windows": list(metrics_reading.WINDOWS),
        "summary": summary,
        "numbers": summary.as_dict(),
        "charts": _charts(points, window),
        "endpoints": endpoint_rows(scope)[:TABLE_ROWS],
        "overdue": _overdue(waiting.most_overdue, now),
        "lease_expired": waiting.lease_expired,
        "dead_letters_waiting": waiting.dead_letters_waiting,
        "disabled_endpoints": waiting.disabled_endpoints,
        "pending": waiting.pending,
    }
    return TemplateResponse(request, "admin/deliveries/dashboard.html", context)
