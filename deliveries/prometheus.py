"""`/metrics` in the Prometheus text format.

Everything is read from PostgreSQL and Redis at scrape time, not from process memory: the
deliveries happen in Celery worker processes on any number of machines, and the database's
all-time totals (`DeliveryTotal`, written in the recording transaction) are the same whichever
web process answers the scrape. Labels are endpoint id and event type; outcome where it applies.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator, Sequence
from typing import Any

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from . import ratelimit
from .metrics import BOUNDS_MS
from .models import DeliveryTotal
from .selectors import backlog
from .services.enqueue import FEED_KEY

# kombu's Redis transport keeps a queue's messages in the list named after it, plus one list
# per priority step ("<queue>\x06\x16<priority>") when priorities are used.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def queue_depths(client: redis.Redis, queues: Sequence[str]) -> dict[str, int]:
    """Messages waiting in each Celery queue (not counting those a worker has reserved)."""
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            for suffix in _PRIORITY_SUFFIXES:
                pipe.llen(queue + suffix)
        lengths = pipe.execute()
    step = len(_PRIORITY_SUFFIXES)
    return {q: sum(lengths[i * step : (i + 1) * step]) for i, q in enumerate(queues)}


def _buckets(hist: Sequence[int], scale: float) -> list[tuple[str, float]]:
    """Cumulative Prometheus buckets from our per-bucket counts; bounds converted by `scale`."""
    out: list[tuple[str, float]] = []
    running = 0
    for i, bound in enumerate(BOUNDS_MS):
        running += hist[i] if i < len(hist) else 0
        out.append((repr(bound * scale), running))
    running += sum(hist[len(BOUNDS_MS) :])
    out.append(("+Inf", running))
    return out


_COUNTERS = (
    "succeeded",
    "failed",
    "dead",
    "attempts",
    "retried",
    "lost",
    "filtered",
    "dead_lettered",
    "latency_ms_sum",
    "attempt_ms_sum",
)
_HISTOGRAMS = ("latency_hist", "attempt_hist")
_COLUMNS = {"endpoint": "endpoint_id", "event_type": "event_type"}


def _totals(labels: Sequence[str]) -> dict[tuple[str, ...], dict[str, Any]]:
    """The all-time totals summed over the labels not shown (histograms bucket by bucket)."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    fields = [_COLUMNS[label] for label in labels]
    for row in DeliveryTotal.objects.values(*fields, *_COUNTERS, *_HISTOGRAMS).iterator():
        key = tuple(row[f] for f in fields)
        total = out.get(key)
        if total is None:
            out[key] = {**row, **{h: list(row[h]) for h in _HISTOGRAMS}}
            continue
        for name in _COUNTERS:
            total[name] += row[name]
        for name in _HISTOGRAMS:
            summed, more = total[name], row[name]
            summed.extend([0] * (len(more) - len(summed)))
            for i, count in enumerate(more):
                summed[i] += count
    return out


def _held_back(labels: Sequence[str]) -> Iterator[Metric]:
    """Hold-backs by endpoint rate limits, counted in Redis by the limiter itself."""
    try:
        counts = ratelimit.held_back()
    except (redis.RedisError, OSError):
        return  # Redis is away: no such counter this scrape
    by_endpoint = "endpoint" in labels
    held = CounterMetricFamily(
        "webhooks_deliveries_rate_limited",
        "Times a delivery was held back by its endpoint's rate_limit_per_second (it waits, it "
        "does not fail; counted since Redis started).",
        labels=["endpoint"] if by_endpoint else [],
    )
    if by_endpoint:
        for endpoint, count in sorted(counts.items()):
            held.add_metric([endpoint], count)
    else:
        held.add_metric([], sum(counts.values()))
    yield held


class DeliveryCollector:
    """The delivery metrics, from the all-time totals and the current state of the queues."""

    def collect(self) -> Iterator[Metric]:
        # WEBHOOKS_METRICS_LABELS: thousands of endpoints make thousands of series per metric;
        # without the `endpoint` label the counters are summed per event type (or overall).
        labels = list(settings.WEBHOOKS_METRICS_LABELS)
        finished = CounterMetricFamily(
            "webhooks_deliveries_finished",
            "Deliveries that ended, by outcome (succeeded, failed without retry, dead).",
            labels=[*labels, "outcome"],
        )
        attempts = CounterMetricFamily(
            "webhooks_attempts", "HTTP attempts made to endpoints.", labels=labels
        )
        retried = CounterMetricFamily(
            "webhooks_attempts_retried",
            "Failed attempts that were followed by another attempt.",
            labels=labels,
        )
        dead_letters = CounterMetricFamily(
            "webhooks_dead_letters", "Dead letters filed.", labels=labels
        )
        lost = CounterMetricFamily(
            "webhooks_attempts_lost",
            "Tries whose worker was lost before recording them (outcome unknown).",
            labels=labels,
        )
        filtered = CounterMetricFamily(
            "webhooks_events_filtered",
            "Events an endpoint's filter kept from it (no delivery made).",
            labels=labels,
        )
        latency = HistogramMetricFamily(
            "webhooks_delivery_latency_seconds",
            "Event accepted to the consumer's 2xx, per successful delivery.",
            labels=labels,
        )
        duration = HistogramMetricFamily(
            "webhooks_attempt_duration_seconds", "Each HTTP attempt's duration.", labels=labels
        )
        for key, total in _totals(labels).items():
            for outcome in ("succeeded", "failed", "dead"):
                finished.add_metric([*key, outcome], total[outcome])
            attempts.add_metric(key, total["attempts"])
            retried.add_metric(key, total["retried"])
            dead_letters.add_metric(key, total["dead_lettered"])
            lost.add_metric(key, total["lost"])
            filtered.add_metric(key, total["filtered"])
            latency.add_metric(
                key, _buckets(total["latency_hist"], 0.001), total["latency_ms_sum"] / 1000
            )
            duration.add_metric(
                key, _buckets(total["attempt_hist"], 0.001), total["attempt_ms_sum"] / 1000
            )
        yield from (finished, attempts, retried, dead_letters, lost, filtered, latency, duration)

        now = timezone.now()
        waiting = backlog(now)
        overdue = waiting.most_overdue
        yield GaugeMetricFamily(
            "webhooks_oldest_pending_delivery_age_seconds",
            "How long the most overdue pending delivery has waited past its due time "
            "(for a first attempt: since it was accepted); 0 when none is overdue.",
            value=(now - overdue["next_attempt_at"]).total_seconds() if overdue else 0.0,
        )
        yield GaugeMetricFamily(
            "webhooks_deliveries_pending",
            "Deliveries waiting for an attempt (due now or scheduled for a retry).",
            value=waiting.pending,
        )
        yield GaugeMetricFamily(
            "webhooks_deliveries_lease_expired",
            "In-flight deliveries whose lease ran out (their worker died); the sweeper takes "
            "them back.",
            value=waiting.lease_expired,
        )
        yield GaugeMetricFamily(
            "webhooks_endpoints_disabled",
            "Endpoints that are disabled.",
            value=waiting.disabled_endpoints,
        )
        yield GaugeMetricFamily(
            "webhooks_dead_letters_waiting",
            "Dead letters not replayed yet.",
            value=waiting.dead_letters_waiting,
        )
        yield from _held_back(labels)
        depth = GaugeMetricFamily(
            "webhooks_queue_depth",
            "Messages waiting in each Celery queue and on the feed.",
            labels=["queue"],
        )
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
        try:
            names = [q.name for q in settings.CELERY_TASK_QUEUES]
            for queue, length in queue_depths(client, names).items():
                depth.add_metric([queue], length)
            depth.add_metric([FEED_KEY], client.llen(FEED_KEY))
            yield depth
        except (redis.RedisError, OSError):
            pass  # the broker is away: no queue gauge this scrape, the rest still answers
        finally:
            client.close()


_PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def _allowed(request: HttpRequest) -> tuple[bool, bool]:
    """(allowed, a token would help): by bearer token, else by the client's network."""
    token = settings.WEBHOOKS_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        given = header.removeprefix("Bearer ").strip().encode()
        if hmac.compare_digest(given, token.encode()):
            return True, True
    if any(h in request.headers for h in _PROXY_HEADERS):
        # came through a proxy: REMOTE_ADDR is the proxy's address, not the client's
        return False, bool(token)
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False, bool(token)
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    allowed = any(address in network for network in settings.WEBHOOKS_METRICS_NETWORKS)
    return allowed, bool(token)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus scrape target; see WEBHOOKS_METRICS_TOKEN and WEBHOOKS_METRICS_ALLOW."""
    allowed, token_configured = _allowed(request)
    if not allowed:
        if token_configured:
            response = HttpResponse("A valid bearer token is required.\n", status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        return HttpResponse(
            "Not allowed from this address (WEBHOOKS_METRICS_ALLOW, WEBHOOKS_METRICS_TOKEN).\n",
            status=403,
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DeliveryCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
