"""Publishing delivery ids to the broker: fresh work on the feed (or the `deliveries` queue),
retries on their own queue.

The feed: new deliveries go from the web straight to a worker process, without a Celery hop.
Publishing a Celery message cost the web ~1.7 ms per request, and taking one cost the worker a
trip through kombu's consumer in its main process and a pipe to a child: 7 ms from an event's
acceptance to its claim on an idle machine (issue 15). Here the web appends the ids to one Redis
list (`FEED_KEY`, one round trip) and a feeder thread in each worker process (`deliveries.feeder`)
waits on it (`BLPOP`) and dispatches what it takes in that same process.

It is a hint, like every message here: the rows in PostgreSQL stay the truth. Ids taken by a
process that dies before it claims them, or pushed while Redis was away, are `pending` rows whose
`dispatched_at` ages, and the sweeper publishes them again after `WEBHOOKS_REDISPATCH_AFTER`
(through Celery). A feeder takes a message only when its process has slots for it (dispatch
blocks on them), so an idle process takes the next one. The list is capped (`FEED_MAX`): with no
feeder running it cannot grow without bound; what the cap drops, the sweeper sends.

Retries, deferrals, sweeps and countdowns stay on Celery. `WEBHOOKS_DIRECT_FEED=false` sends
fresh work through Celery too (the `deliveries` queue), as before the feed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson
import redis
from celery import current_app
from django.conf import settings
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from webhooks_project import tracing
from webhooks_project.process_local import ProcessLocal

logger = logging.getLogger(__name__)

FEED_KEY = "webhooks:fresh"
FEED_MAX = 100_000  # messages kept at most (each up to WEBHOOKS_BATCH_SIZE ids)
FEED_WAIT = 1.0  # seconds a feeder blocks on the list before it looks at its stop flag


def feed_client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=2,
        socket_timeout=FEED_WAIT + 5,
        health_check_interval=30,
    )


_publishers = ProcessLocal(feed_client)


def feed_publish(delivery_ids: Sequence[int], *, batch_size: int) -> int:
    """Append the ids to the feed in messages of `batch_size`; returns how many were pushed.
    Redis away: logged, nothing raised (the rows wait for the sweeper)."""
    ids = list(delivery_ids)
    chunks = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    traceparent = tracing.traceparent()
    if traceparent is None:
        messages = [orjson.dumps(chunk) for chunk in chunks]
    else:  # while tracing: the feeder continues the publisher's trace (feed_message)
        messages = [orjson.dumps({"ids": chunk, "traceparent": traceparent}) for chunk in chunks]
    if not messages:
        return 0
    try:
        with _publishers.get().pipeline(transaction=False) as pipe:
            pipe.rpush(FEED_KEY, *messages)
            pipe.ltrim(FEED_KEY, -FEED_MAX, -1)
            pipe.execute()
    except (RedisError, OSError) as exc:
        logger.warning(
            "broker unavailable, %d deliveries left pending for the sweeper: %s", len(ids), exc
        )
        return 0
    return len(ids)


def feed_message(raw: bytes | str) -> tuple[list[int], str | None]:
    """A feed message's delivery ids, and the publisher's traceparent if it sent one: a JSON
    array of ids, or while tracing `{"ids": [...], "traceparent": "..."}`. Raises ValueError
    for anything else."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError("not JSON") from exc
    traceparent = None
    if isinstance(message, dict):
        traceparent = message.get("traceparent")
        message = message.get("ids")
        if traceparent is not None and not isinstance(traceparent, str):
            raise ValueError("traceparent is not a string")
    if not isinstance(message, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in message
    ):
        raise ValueError("not a list of delivery ids")
    return message, traceparent


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

    Fresh work goes to the feed (above; or the `deliveries` queue), everything else to
    `retries`: a worker takes from both, so a backlog of retries or of a slow endpoint's
    deliveries never makes new events wait behind it.

    A broker outage is logged, not raised: the rows stay `pending` in PostgreSQL, which is the
    truth, and the `requeue_stuck` beat job enqueues them once the broker is back.
    """
    size = batch_size or settings.WEBHOOKS_BATCH_SIZE
    if queue == FRESH_QUEUE and countdown is None and settings.WEBHOOKS_DIRECT_FEED:
        return feed_publish(delivery_ids, batch_size=size)
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
