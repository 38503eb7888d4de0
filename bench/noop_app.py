"""A bare Celery app with a no-op task on Redis: the floor of one-task-per-message throughput.

Worker: celery -A bench.noop_app worker; it reads REDIS_URL like the project does.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

app = Celery("bench_noop", broker=os.environ["REDIS_URL"])
app.conf.update(
    task_ignore_result=True,
    worker_prefetch_multiplier=4,
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
)
_counter = redis.Redis.from_url(os.environ["REDIS_URL"])


@app.task(name="bench.noop")
def noop() -> None:
    _counter.incr("bench:noop:done")
