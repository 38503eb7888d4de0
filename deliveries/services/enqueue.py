"""Publishing delivery ids to the broker: fresh work and retries on separate queues."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import current_app
from django.conf import settings
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


# Published by name: the task module imports the services, not the other way round.
DELIVER_BATCH = "deliveries.tasks.deliver_batch"
FRESH_QUEUE = "deliveries"  # first attempts of new events, and replays
RETRY_QUEUE = "retries"  # retries, sweeps and deferrals: never ahead of fresh work


def deliveries_enqueue(
    *,
    delivery_ids: Sequence[int],
    countdown: float | None = None,
    batch_size: int | None = None,
    queue: str = RETRY_QUEUE,
) -> int:
    """Publish the ids in `deliver_batch` messages over one broker connection; returns how many
    ids were sent.

    Fresh work goes to the `deliveries` queue, everything else to `retries`: a worker takes
    from both in turn, so a backlog of retries or of a slow endpoint's deliveries never makes
    new events wait behind it.

    A broker outage is logged, not raised: the rows stay `pending` in PostgreSQL, which is the
    truth, and the `requeue_stuck` beat job enqueues them once the broker is back.
    """
    size = batch_size or settings.WEBHOOKS_BATCH_SIZE
    ids = list(delivery_ids)
    sent = 0
    try:
        with current_app.producer_or_acquire() as producer:
            for start in range(0, len(ids), size):
                chunk = ids[start : start + size]
                current_app.send_task(
                    DELIVER_BATCH,
                    args=(chunk,),
                    countdown=countdown,
                    producer=producer,
                    queue=queue,
                )
                sent += len(chunk)
    except (KombuError, RedisError, OSError) as exc:
        logger.warning(
            "broker unavailable, %d of %d deliveries left pending for the sweeper: %s",
            len(ids) - sent,
            len(ids),
            exc,
        )
    return sent
