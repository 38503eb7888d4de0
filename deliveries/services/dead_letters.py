"""Dead letters: replaying them with a fresh schedule."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from deliveries.models import DeadLetter, Delivery
from webhooks import audit

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
        if delivery_ids:
            transaction.on_commit(
                lambda: deliveries_enqueue(delivery_ids=delivery_ids, queue=FRESH_QUEUE),
                robust=True,
            )
    return ReplayResult(replayed=len(delivery_ids), skipped_disabled=skipped)
