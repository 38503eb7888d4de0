"""The configuration generation: per-process caches of configuration that every request reads
(API keys, schemas, applications, which endpoints get which events), dropped when anything in
it changes.

Ingesting one event read an API key, a schema version, an application and the subscribed
endpoints from PostgreSQL: four queries (and their ORM compilation), about half of the web's
time for a single event (issue 15). They change rarely. Each change commits, then writes a new
random token to one Redis key (`KEY`); a request reads that token once (one `GET`) and uses
what its process cached under the same token, else reads the database and caches it.

- A change is seen by the next request anywhere: the token is written after the commit and
  before the changing request answers, and each request reads it afresh.
- The token is random, not a counter: Redis restarted empty cannot bring an old one back.
- Redis away (the token cannot be read): nothing is cached or served from a cache; requests
  read PostgreSQL as before. A token write that fails (Redis away at that moment) is logged;
  entries then live at most `MAX_AGE` seconds, the bound on staleness in that case.
- Outside a request (workers, commands) every read asks Redis again; within a request the
  token is read once (`RequestScope`, a middleware).
- A transaction that has changed configuration and not committed yet reads the database, and
  caches nothing: what it sees may still roll back (disabling an endpoint emits its
  `endpoint.disabled` event in the same transaction).

What changes it: every save or delete of the models an app registers with `watch` (except saves
that touch only the fields it names as volatile, e.g. an API key's `last_used_at`), and the few
bulk `update()` calls on them, which call `bump()` themselves.
"""

from __future__ import annotations

import contextvars
import logging
import secrets
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Model
from django.db.models.signals import post_delete, post_save

from .process_local import ProcessLocal

logger = logging.getLogger(__name__)

KEY = "webhooks:config-generation"
MAX_AGE = 10.0  # seconds an entry is served at most, whatever the token says
MAX_ENTRIES = 10_000  # per process; past it the cache starts over

T = TypeVar("T")

_clients = ProcessLocal(
    lambda: redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
)
# None outside a request; in one, a dict that keeps the token read for it
_scope: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "config_generation_scope", default=None
)


def _read() -> bytes | None:
    client = _clients.get()
    try:
        value = client.get(KEY)
        if value is None:  # first use, or Redis restarted empty: start a generation
            client.set(KEY, secrets.token_hex(8), nx=True)
            value = client.get(KEY)
    except (redis.RedisError, OSError) as exc:
        logger.debug("configuration generation unreadable, caches bypassed: %s", exc)
        return None
    return value if isinstance(value, bytes) else None


def current() -> bytes | None:
    """The generation token now (None: unknown, cache nothing); once per request."""
    scope = _scope.get()
    if scope is None:
        return _read()
    if "token" not in scope:
        scope["token"] = _read()
    token: bytes | None = scope["token"]
    return token


def bump() -> None:
    """Start a new generation once the current transaction commits (at once outside one)."""
    transaction.on_commit(_write, robust=True)


def restart() -> None:
    """A new generation now, for every process (configuration changed behind the ORM's back:
    SQL by hand, a restored backup, a test database flushed); this process's cache emptied."""
    _write()
    _caches.get().clear()


def _changing() -> bool:
    """Whether this thread's transaction has changed configuration and not committed yet."""
    return connection.in_atomic_block and any(
        pending[1] is _write for pending in connection.run_on_commit
    )


def _write() -> None:
    try:
        _clients.get().set(KEY, secrets.token_hex(8))
    except (redis.RedisError, OSError) as exc:
        logger.warning(
            "configuration changed but the generation could not be written (%s): processes "
            "may use what they cached for up to %s s",
            exc,
            MAX_AGE,
        )
    scope = _scope.get()
    if scope is not None:
        scope.pop("token", None)  # this request reads the new one if it reads again


class ConfigCache:
    """Values loaded from the database, kept by this process while the generation holds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._token: bytes | None = None
        self._data: dict[Hashable, tuple[float, Any]] = {}

    def get(self, key: Hashable, load: Callable[[], T], *, cache_none: bool = True) -> T:
        token = None if _changing() else current()
        if token is None:
            return load()
        now = time.monotonic()
        with self._lock:
            if token != self._token:
                self._data.clear()
                self._token = token
            hit = self._data.get(key)
        if hit is not None and now - hit[0] < MAX_AGE:
            value: T = hit[1]
            return value
        value = load()
        if value is None and not cache_none:
            return value
        with self._lock:
            if self._token == token:
                if len(self._data) >= MAX_ENTRIES:
                    self._data.clear()
                self._data[key] = (now, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._token = None


_caches = ProcessLocal(ConfigCache)


def cached(key: Hashable, load: Callable[[], T], *, cache_none: bool = True) -> T:
    """`load()`'s value, from this process's cache when the generation has not moved."""
    return _caches.get().get(key, load, cache_none=cache_none)


def watch(models: Iterable[type[Model]], *, volatile: Iterable[str] = ()) -> None:
    """Bump the generation on every save or delete of `models`, except saves whose
    `update_fields` are all `volatile` (bookkeeping no cached value depends on)."""
    ignored = frozenset(volatile)

    def saved(sender: type[Model], update_fields: frozenset[str] | None = None, **_: Any) -> None:
        if update_fields and set(update_fields) <= ignored:
            return
        bump()

    def deleted(sender: type[Model], **_: Any) -> None:
        bump()

    for model in models:
        uid = f"config-generation:{model._meta.label}"
        post_save.connect(saved, sender=model, weak=False, dispatch_uid=uid)
        post_delete.connect(deleted, sender=model, weak=False, dispatch_uid=uid)


class RequestScope:
    """Middleware: a request reads the generation once, however many caches it asks."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        reset = _scope.set({})
        try:
            return self.get_response(request)
        finally:
            _scope.reset(reset)
