"""The Celery broker transport: kombu's Redis transport, made to survive a broker restart.

With kombu/celery 5.7, a worker that loses Redis while it holds unacknowledged messages (always,
under `acks_late`) exits with `Unrecoverable error: AttributeError("'NoneType' object has no
attribute 'hostname'")`. On the connection error Celery first `collect()`s the broken connection,
which detaches its transport (`transport.client = None`), and then closes it; closing the
channel restores the unacked messages, and the channel builds a new Redis pool from
`transport.client`, which is gone. The AttributeError is not a connection error, so nothing
catches it and the worker stops (kombu#582 is the same failure through Gossip; celery#9250).
Acknowledging a message of the old channel after the reconnect fails the same way.

Here a channel whose transport has been detached says what is true: it has no broker
connection, which is a connection error. Closing then gives up the restore (the broker is
gone anyway; a persistent Redis gives the messages back after the visibility timeout, and the
sweeper republishes from PostgreSQL what an empty one lost), an old message's ack is logged
and skipped, and the consumer reconnects with the same processes.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise RedisConnectionError("this channel's broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
