"""Fault test 3: PostgreSQL restarted under load (to an endpoint, and to one that orders each
key's events).

The test runs its own PostgreSQL (migrated from scratch), Redis, gunicorn, worker and beat, so
the session's test database is never taken away. Events are posted in a steady stream while the
database is stopped and started again. Then:
- every answer was 202 (with an id that is stored) or 503 (nothing stored), never another error;
- every accepted event is delivered, and no attempt was recorded as a consumer failure;
- every request the consumer got is in the audit log, duplicates included (a crash between its
  2xx and our write, or a claim the crash forgot, sends a delivery twice); they are counted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack.services import LocalPostgres, LocalRedis
from tests.conftest import BASE_DIR, WebServer, WorkerProcess, wait_until, worker_env
from tests.sink import Sink

pytestmark = pytest.mark.integration

FAST = {
    "WEBHOOKS_LEASE_SECONDS": 8,
    "WEBHOOKS_REQUEUE_INTERVAL": 1,
    "WEBHOOKS_REDISPATCH_AFTER": 2,
    "WEBHOOKS_COUNTDOWN_MAX": 1,
    "WEBHOOKS_HTTP_TIMEOUT": 3,
    "DATABASE_CONNECT_TIMEOUT": 2,
}


def _call(url: str, key: str, body: Any, method: str = "POST") -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _manage(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def _wait_all_delivered(dsn: str, accepted: int, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(dsn, connect_timeout=2) as conn:
                counts = dict(
                    conn.execute(
                        "SELECT status, count(*) FROM deliveries_delivery GROUP BY status"
                    ).fetchall()
                )
        except psycopg.OperationalError:
            counts = {}
        if counts.get("succeeded", 0) == accepted:
            return counts
        time.sleep(0.2)
    pytest.fail(f"not all {accepted} deliveries succeeded within {timeout} s: {counts}")


def _wait_attempts(dsn: str, expected: int, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(dsn) as conn:
            outcomes = dict(
                conn.execute(
                    "SELECT outcome, count(*) FROM deliveries_deliveryattempt GROUP BY outcome"
                ).fetchall()
            )
        if sum(outcomes.values()) >= expected or time.monotonic() > deadline:
            return outcomes
        time.sleep(0.2)


@dataclass
class OwnStack:
    """PostgreSQL (migrated from scratch), Redis and gunicorn of one test, an event type and a
    key; the test adds workers to `processes`."""

    tmp: Path
    pg: LocalPostgres
    env: dict[str, str]
    api: str = ""
    key: str = ""
    processes: list[Any] = field(default_factory=list)

    @property
    def dsn(self) -> str:
        return self.pg.url("webhooks")

    def start_postgres(self) -> None:
        self.pg = LocalPostgres(self.tmp / "postgres", port=self.pg.port).start()


@contextmanager
def own_stack(prefix: str) -> Iterator[OwnStack]:
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    tmp.chmod(0o755)
    # not `fast`: with asynchronous commit a crash may lose commits that were already answered
    pg = LocalPostgres(tmp / "postgres").start()
    rd = LocalRedis(tmp / "redis", persist=False).start()
    stack = OwnStack(tmp, pg, worker_env(REDIS_URL=rd.url(), **FAST))
    stack.env["DATABASE_URL"] = stack.dsn
    try:
        _manage(stack.env, "migrate", "--noinput", "-v", "0")
        stack.key = _manage(stack.env, "create_api_key", "faults").strip().splitlines()[-1]
        web = WebServer(stack.env).start()
        stack.processes.append(web)
        stack.api = web.url + "/api/v1"
        event_type = {"name": "order.created", "schema": {}}
        assert _call(f"{stack.api}/event-types/", stack.key, event_type)[0] == 201
        yield stack
    finally:
        for proc in reversed(stack.processes):
            proc.stop()
        rd.stop()
        stack.pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_postgres_restarted_under_load_loses_nothing(sink: Sink) -> None:
    with own_stack("pg-restart-") as stack:
        env, api, key, processes = stack.env, stack.api, stack.key, stack.processes
        assert _call(f"{api}/endpoints/", key, {"url": sink.url("pg")})[0] == 201
        # and one that wants each key's events in order, one at a time
        ordered = {"url": sink.url("pgo"), "ordering": "per_key"}
        assert _call(f"{api}/endpoints/", key, ordered)[0] == 201
        sink.plan("pgo", 200, delay=0.01)
        processes.append(WorkerProcess(env, ["--concurrency", "4"]).start())
        # beat with its production scheduler (django-celery-beat's DatabaseScheduler): it must
        # live through the database crash too
        beat = WorkerProcess(env, role="beat").start()
        processes.append(beat)

        # given a steady stream of events (bounded: at most 600 requests or 60 s)
        answers: list[tuple[int, Any]] = []
        stop = threading.Event()

        def post_stream() -> None:
            deadline = time.monotonic() + 60
            n = 0
            while not stop.is_set() and n < 600 and time.monotonic() < deadline:
                event = {"type": "order.created", "data": {"n": n}, "ordering_key": f"k{n % 5}"}
                answers.append(_call(f"{api}/events/", key, event))
                n += 1
                time.sleep(0.02)

        poster = threading.Thread(target=post_stream)
        poster.start()

        def seen(status: int, at_least: int, after: int = 0) -> bool:
            return sum(1 for s, _ in answers[after:] if s == status) >= at_least

        wait_until(lambda: seen(202, 20), timeout=60)
        # when PostgreSQL crashes (SIGKILL) under that load and comes back once the API has
        # answered 503 a few times (the outage was seen)
        stack.pg.stop(kill=True)
        outage = len(answers)
        wait_until(lambda: seen(503, 3, outage), timeout=60)
        stack.start_postgres()
        dsn = stack.dsn
        back = len(answers)
        wait_until(lambda: seen(202, 20, back) or not poster.is_alive(), timeout=60)
        stop.set()
        poster.join(timeout=60)

        # then every answer was a 202 with a stored event or a clear 503, never anything else
        statuses = Counter(status for status, _ in answers)
        assert set(statuses) <= {202, 503}, statuses
        assert statuses[503] > 0, "the database outage was never seen by the API"
        assert statuses[202] > 0
        for status, body in answers:
            if status == 503:
                assert body["error"] == "service_unavailable"
        accepted = [body["id"] for status, body in answers if status == 202]
        with psycopg.connect(dsn) as conn:
            stored = {row[0] for row in conn.execute("SELECT id FROM deliveries_event")}
        assert set(accepted) <= stored, "a 202 was answered for an event that is not stored"

        # and every stored event is delivered, without a single attempt recorded as failed
        counts = _wait_all_delivered(dsn, 2 * len(stored), timeout=120)
        assert counts == {"succeeded": 2 * len(stored)}
        received = Counter(r.headers["webhook-id"] for r in sink.requests("pg"))
        assert set(received) == stored
        in_order = Counter(r.headers["webhook-id"] for r in sink.requests("pgo"))
        assert set(in_order) == stored
        # the ordered endpoint got each key's events in order (a duplicate comes right after
        # its first send, never after a later one), and never two of a key at once
        by_key: dict[str, list[int]] = {}
        for r in sink.requests("pgo"):
            by_key.setdefault(r.headers["webhook-ordering-key"], []).append(
                int(r.headers["webhook-sequence"])
            )
        for sequences in by_key.values():
            assert sequences == sorted(sequences), sequences
            assert sorted(set(sequences)) == list(range(1, len(set(sequences)) + 1))
        assert sink.overlaps == []
        duplicates = sum(c - 1 for c in received.values()) + sum(c - 1 for c in in_order.values())
        # every request the consumer got is in the audit log, a duplicate's first send included:
        # its worker keeps that result and records it once the database answers again (its
        # retry may wait up to 10 s, after another worker already sent and recorded the retry)
        outcomes = _wait_attempts(dsn, sum(received.values()) + sum(in_order.values()), timeout=30)
        # a try whose lease ran out before it was recorded is `unknown` (worker_lost), never
        # missing; nothing was recorded as failed
        assert set(outcomes) <= {"succeeded", "unknown"}, outcomes
        assert sum(outcomes.values()) >= sum(received.values()) + sum(in_order.values())
        # a crash between the consumer's 2xx and our write makes a duplicate; it is rare
        assert duplicates <= 8, f"{duplicates} duplicate requests"
        # beat lived through it and kept sweeping after the database came back
        assert beat.proc is not None
        assert beat.proc.poll() is None, "".join(beat.output[-30:])
        sweeps = [line for line in beat.output if "requeue_stuck" in line]
        before = len(sweeps)
        wait_until(
            lambda: len([line for line in beat.output if "requeue_stuck" in line]) > before,
            timeout=30,
        )
        # the beat jobs are registered in the database, where the admin shows them
        with psycopg.connect(dsn) as conn:
            jobs = {
                row[0] for row in conn.execute("SELECT name FROM django_celery_beat_periodictask")
            }
        assert {"requeue_stuck", "disable_failing_endpoints", "prune"} <= jobs
        print(f"accepted {statuses[202]}, refused {statuses[503]}, duplicates {duplicates}")


def test_answers_waiting_out_a_database_outage_longer_than_the_lease_are_not_sent_twice(
    sink: Sink,
) -> None:
    with own_stack("pg-outage-") as stack:
        env, api, key, processes = stack.env, stack.api, stack.key, stack.processes
        # given a consumer that takes a second per request, 8 at a time, and 40 events
        sink.plan("outage", 200, delay=1.0)
        assert _call(f"{api}/endpoints/", key, {"url": sink.url("outage")})[0] == 201
        processes.append(WorkerProcess(env, ["--concurrency", "1"]).start())
        processes.append(WorkerProcess(env, role="beat").start())
        for n in range(40):
            assert (
                _call(f"{api}/events/", key, {"type": "order.created", "data": {"n": n}})[0] == 202
            )
        sink.wait_for(4, "outage")
        # when PostgreSQL stops cleanly while requests are in flight, and stays away longer
        # than the lease (8 s), so every claim held has expired by the time it is back
        stack.pg.stop()
        time.sleep(10)  # the outage itself: a duration, not a wait for an event
        stack.start_postgres()
        dsn = stack.dsn
        # then every delivery succeeds, each sent exactly once: the answers that waited in the
        # recorder were recorded under leases renewed when the database came back, not taken
        # back by the sweeper and sent again
        counts = _wait_all_delivered(dsn, 40, timeout=120)
        assert counts == {"succeeded": 40}
        received = Counter(r.headers["webhook-id"] for r in sink.requests("outage"))
        assert len(received) == 40
        assert max(received.values()) == 1, {k: c for k, c in received.items() if c > 1}
        # (a claim whose answer the stopping database never returned was not sent: the sweeper
        # records that try as `unknown` before it is sent, once)
        outcomes = _wait_attempts(dsn, 40, timeout=30)
        assert outcomes["succeeded"] == 40
        assert set(outcomes) <= {"succeeded", "unknown"}, outcomes
