"""Operator control of one delivery: send a finished one again, or a waiting one now."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from deliveries.models import DeadLetter, Delivery
from webhooks import audit

from . import ordering
from .enqueue import FRESH_QUEUE, deliveries_enqueue

FINAL = (Delivery.Status.SUCCEEDED, Delivery.Status.FAILED, Delivery.Status.DEAD)


class NotNow(Exception):
    """The delivery is not in a state the action applies to; nothing changed."""


def _audited_and_sent(
    delivery: Delivery, actor: str, action: str, *, before: dict, after: dict
) -> None:
    """The change in the audit log (with the endpoint's application, for scoped readers), and
    the delivery published on the feed once it commits."""
    application = delivery.endpoint.application
    audit.record(
        actor=actor,
        action=action,
        object_type="delivery",
        object_id=str(delivery.pk),
        application=application.uid if application is not None else None,
        before=before,
        after=after,
    )
    transaction.on_commit(
        lambda: deliveries_enqueue(delivery_ids=[delivery.pk], queue=FRESH_QUEUE), robust=True
    )


def _locked(delivery_id: int) -> Delivery:
    return (
        Delivery.objects.select_for_update(of=("self",))
        .select_related("endpoint__application")
        .get(pk=delivery_id)
    )


def delivery_resend(*, delivery_id: int, actor: str) -> Delivery:
    """Send a finished delivery (succeeded, failed or dead) again: a new series of attempts
    with a fresh retry schedule and the same `webhook-id` (the event's id), so a consumer that
    deduplicates sees the same message. Earlier attempts stay in the log; a waiting dead letter
    of it is marked replayed. Raises NotNow unless it is finished and its endpoint enabled."""
    now = timezone.now()
    with transaction.atomic():
        delivery = _locked(delivery_id)
        if delivery.status not in FINAL:
            raise NotNow(
                f"the delivery is {delivery.status}: only a finished one (succeeded, failed, "
                "dead) can be sent again; a pending one can be retried now"
            )
        if not delivery.endpoint.enabled:
            raise NotNow("its endpoint is disabled: enable it first")
        before = delivery.status
        Delivery.objects.filter(pk=delivery.pk).update(
            status=Delivery.Status.PENDING,
            next_attempt_at=now,
            dispatched_at=now,
            completed_at=None,
            retry_base=F("attempt_count"),
        )
        DeadLetter.objects.filter(delivery_id=delivery.pk, replayed_at__isnull=True).update(
            replayed_at=now, replayed_by=actor[:200]
        )
        # an ordered one is its key's head again, or waits behind one in flight
        ordering.keys_reopen([delivery.pk], now=now)
        _audited_and_sent(
            delivery,
            actor,
            "delivery.resent",
            before={"status": before},
            after={"status": Delivery.Status.PENDING.value},
        )
    delivery.refresh_from_db()
    return delivery


def delivery_retry_now(*, delivery_id: int, actor: str) -> Delivery:
    """A pending delivery waiting on its backoff (or a rate limit, or a sweep) goes now: due
    at once and published. Its attempt count and schedule are unchanged. Raises NotNow unless
    it is pending and its endpoint enabled."""
    now = timezone.now()
    with transaction.atomic():
        delivery = _locked(delivery_id)
        if delivery.status != Delivery.Status.PENDING:
            hint = "resend it" if delivery.status in FINAL else "it is being sent"
            raise NotNow(f"the delivery is {delivery.status}, not waiting: {hint}")
        if not delivery.endpoint.enabled:
            raise NotNow("its endpoint is disabled: enable it first")
        if delivery.next_attempt_at is None:
            raise NotNow(
                f"it waits for its turn: delivery {delivery.sequence} of ordering key "
                f"{delivery.ordering_key!r} goes when the ones before it are done"
            )
        waited = delivery.next_attempt_at
        Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=now, dispatched_at=now)
        _audited_and_sent(
            delivery,
            actor,
            "delivery.retried_now",
            before={"next_attempt_at": waited.isoformat() if waited else None},
            after={"next_attempt_at": now.isoformat()},
        )
    delivery.refresh_from_db()
    return delivery
