"""Dead letters: replaying them with a fresh schedule."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from deliveries.models import DeadLetter, Delivery
from webhooks import audit

from . import ordering
from .enqueue import FRESH_QUEUE, deliveries_enqueue


@dataclass(frozen=True)
class ReplayResult:
    replayed: int
    skipped_disabled: int


def dead_letters_replay(*, dead_letters: QuerySet[DeadLetter], actor: str) -> ReplayResult:
    """Put the deliveries of waiting dead letters back to `pending` with a fresh schedule.

    Old attempts are kept; the dead letters record who replayed them and when. Dead letters of
    disabled endpoints are skipped (re-enable the endpoint first).
    """
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            dead_letters.select_for_update(skip_locked=True, of=("self",))
            .filter(replayed_at__isnull=True)
            .values_list("id", "delivery_id", "endpoint__enabled")
        )
        replay = [(dl_id, d_id) for dl_id, d_id, enabled in rows if enabled]
        skipped = len(rows) - len(replay)
        delivery_ids = [d_id for _, d_id in replay]
        DeadLetter.objects.filter(id__in=[dl_id for dl_id, _ in replay]).update(
            replayed_at=now, replayed_by=actor[:200]
        )
        if replay:
            audit.record(
                actor=actor,
                action="dead_letters.replayed",
                object_type="dead_letter",
                object_id=str(replay[0][0]) if len(replay) == 1 else f"{len(replay)} dead letters",
                after={
                    "count": len(replay),
                    "skipped_disabled": skipped,
                    "dead_letter_ids": [dl_id for dl_id, _ in replay[:1000]],
                },
            )
        Delivery.objects.filter(
            id__in=delivery_ids, status__in=[Delivery.Status.FAILED, Delivery.Status.DEAD]
        ).update(
            status=Delivery.Status.PENDING,
            next_attempt_at=now,
            dispatched_at=now,
            completed_at=None,
            retry_base=F("attempt_count"),
        )
        # an ordered one is its key's head again, or waits behind one in flight
        ordering.keys_reopen(delivery_ids, now=now)
        if delivery_ids:
            transaction.on_commit(
                lambda: deliveries_enqueue(delivery_ids=delivery_ids, queue=FRESH_QUEUE),
                robust=True,
            )
    return ReplayResult(replayed=len(delivery_ids), skipped_disabled=skipped)


class AlreadyHandled(Exception):
    """The dead letter was replayed or skipped before; nothing changed."""


def dead_letter_skip(*, dead_letter_id: int, actor: str) -> DeadLetter:
    """Mark a waiting dead letter handled without sending its delivery again: the delivery
    stays as it ended; under `ordering_on_dead = block`, its ordering key moves on to the next
    delivery (services/ordering.py). Audited. Raises AlreadyHandled if it is not waiting."""
    now = timezone.now()
    with transaction.atomic():
        dead_letter = (
            DeadLetter.objects.select_for_update(of=("self",))
            .select_related("endpoint__application")
            .get(pk=dead_letter_id)
        )
        if dead_letter.replayed_at is not None:
            raise AlreadyHandled(
                "This dead letter was already "
                + ("skipped." if dead_letter.skipped else "replayed.")
            )
        DeadLetter.objects.filter(pk=dead_letter.pk).update(
            replayed_at=now, replayed_by=actor[:200], skipped=True
        )
        application = dead_letter.endpoint.application
        audit.record(
            actor=actor,
            action="dead_letter.skipped",
            object_type="dead_letter",
            object_id=str(dead_letter.pk),
            application=application.uid if application is not None else None,
            before={"replayed_at": None},
            after={"skipped": True, "delivery": dead_letter.delivery_id},
        )
        ordering.keys_settle(ordering.keys_of([dead_letter.delivery_id]), now=now)
    dead_letter.refresh_from_db()
    return dead_letter
