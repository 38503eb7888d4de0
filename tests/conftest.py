"""Shared fixtures: API clients with keys, a real HTTP sink, and a real Celery worker process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from devstack.process import Child, listening_socket
from tests.sink import Sink
from webhooks.models import ApiKey
from webhooks.services import api_key_create

BASE_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _new_configuration_generation() -> None:
    """Each test starts a configuration generation: the test database is rolled back or flushed
    between tests, which no signal reports (webhooks_project.generation)."""
    from webhooks_project import generation

    generation.restart()


@pytest.fixture(autouse=True)
def _worker_settles(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that used the session's worker ends once it has nothing left to do: the
    database is flushed after the test, and a TRUNCATE while the worker records an attempt can
    deadlock with it (seen at the teardown of a test whose last delivery was still being
    refused). The database fixture is set up first, so it is torn down after this waits."""
    if "celery_worker" not in request.fixturenames:
        yield
        return
    request.getfixturevalue("_django_db_helper")
    yield
    import redis

    from deliveries.models import Delivery

    client = redis.Redis.from_url(settings.REDIS_URL)

    def settled() -> bool:  # fresh work taken, nothing being sent or recorded (retries may wait)
        queued = client.llen("webhooks:fresh") + client.llen("deliveries")
        return not queued and not Delivery.objects.filter(status="in_flight").exists()

    try:
        wait_until(settled, timeout=10)
    except pytest.fail.Exception:
        pass  # the test's own assertions said what matters; the flush is then at its risk
    finally:
        client.close()


@pytest.fixture
def make_api_client(db: None) -> Callable[..., APIClient]:
    """Return a factory of API clients authenticated with a new key of the given scopes."""

    def make(scopes: list[str] | None = None) -> APIClient:
        _, key = api_key_create(
            name="test", scopes=ApiKey.Scope.values if scopes is None else scopes
        )
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        return client

    return make


@pytest.fixture
def api(make_api_client: Callable[..., APIClient]) -> APIClient:
    """An API client whose key has every scope."""
    return make_api_client()


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses every connection for the whole test: bound here and
    never listened on, so no other process can take it meanwhile (a port merely found free
    could be taken by a parallel run's server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def sink_server() -> Iterator[Sink]:
    server = Sink().start()
    yield server
    server.stop()


@pytest.fixture
def sink(sink_server: Sink) -> Iterator[Sink]:
    """The local HTTP consumer, emptied for each test."""
    sink_server.reset()
    yield sink_server
    sink_server.reset()


class WorkerProcess(Child):
    """A `celery -A webhooks_project worker` (or `beat`) child process on the test database."""

    ROLE_ARGS = {
        "worker": (["worker", "--without-gossip", "--without-mingle"], r" ready\."),
        "beat": (["beat"], "beat: Starting"),
    }

    def __init__(
        self,
        env: dict[str, str],
        extra_args: list[str] | None = None,
        role: str = "worker",
        *,
        default_command: bool = False,
    ) -> None:
        role_args, self.ready_marker = self.ROLE_ARGS[role]
        if default_command:
            role_args = [role]
        command = [sys.executable, "-m", "celery", "-A", "webhooks_project", *role_args]
        super().__init__(role, [*command, "--loglevel", "INFO", *(extra_args or [])], env=env)

    def start(self, *, ready: Any = None, timeout: float = 60) -> WorkerProcess:
        super().start(ready=ready or self.ready_marker, timeout=timeout)
        return self

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self.popen is not None
        return self.popen


def worker_env(**overrides: Any) -> dict[str, str]:
    """The environment for a worker process: the test database, the test broker, overrides."""
    db = settings.DATABASES["default"]
    env = dict(os.environ)
    env["DATABASE_URL"] = f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env["REDIS_URL"] = settings.REDIS_URL
    env.update({k: str(v) for k, v in overrides.items()})
    return env


@pytest.fixture(scope="session")
def celery_worker(django_db_setup: None, django_db_blocker: Any) -> Iterator[WorkerProcess]:
    """One real worker for the session (it sees only committed rows: use `transactional_db`)."""
    worker = WorkerProcess(worker_env(CELERY_WORKER_CONCURRENCY=4)).start()
    yield worker
    worker.stop()


class WebServer(Child):
    """The real web server (gunicorn) as a child process, on a socket bound here and handed to
    it (`--bind fd://N`), so no other process can take the port first (`devstack.process`)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.sock = listening_socket(backlog=128)
        self.port = int(self.sock.getsockname()[1])
        args = [sys.executable, "-m", "gunicorn", "webhooks_project.wsgi"]
        args += ["--bind", f"fd://{self.sock.fileno()}", "--workers", "1", "--threads", "4"]
        super().__init__("gunicorn", args, env=env, pass_fds=[self.sock.fileno()])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(self.url + "/healthz", timeout=2)  # noqa: S310
        except urllib.error.HTTPError:
            pass  # it answers (503 is fine: the broker may be down on purpose)
        except OSError:
            return False
        return True

    def start(self, *, ready: Any = None, timeout: float = 30) -> WebServer:
        super().start(ready=ready or self._answers, timeout=timeout)
        return self

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        super().stop(sig=sig, timeout=timeout)
        self.sock.close()

    def post_json(
        self, path: str, body: Any, key: str, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """POST `body` as JSON with the API key: the status and the JSON answer (an error's
        too: the caller asserts the status it expects)."""
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/json",
                **(headers or {}),
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


def wait_until(predicate: Callable[[], Any], timeout: float = 20, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


QUEUES = ("deliveries", "retries", "maintenance", "webhooks:fresh")  # the last: the feed


def broker_idle(redis_url: str | None = None) -> bool:
    """Whether nothing is left to do: no message waiting in any queue, none taken and not yet
    acknowledged (tasks ack late, so a running task's message is still unacked), and no delivery
    in flight (a sender thread may still be sending after its task returned)."""
    import redis

    from deliveries.models import Delivery

    client = redis.Redis.from_url(redis_url or settings.REDIS_URL)
    try:
        waiting = sum(client.llen(q) for q in QUEUES) + client.hlen("unacked")
    finally:
        client.close()
    return not waiting and not Delivery.objects.filter(status="in_flight").exists()


def wait_idle(redis_url: str | None = None, timeout: float = 30) -> None:
    """Wait until the system has nothing left to do, seen on three polls in a row (a message
    moves from its queue to `unacked` in two steps), so that counts asserted next are final:
    this stands in for "a duplicate would have arrived by now" without a fixed sleep."""
    streak = 0

    def settled() -> bool:
        nonlocal streak
        streak = streak + 1 if broker_idle(redis_url) else 0
        return streak >= 3

    wait_until(settled, timeout=timeout, interval=0.1)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a failure, attach the tail of the worker's log to the report."""
    report = yield
    worker = getattr(item, "funcargs", {}).get("celery_worker")
    if report.failed and isinstance(worker, WorkerProcess):
        report.sections.append(("celery worker output", "".join(worker.output[-80:])))
    return report


@pytest.fixture
def local_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    """`deliveries_dispatch` in this process sends and records on a sender of its own, whose
    recorder lets go of its database connection after each batch (so the test database can be
    dropped at the end)."""
    from django.db import connection

    from deliveries.services import dispatch
    from webhooks_project.process_local import ProcessLocal

    recorded = dispatch.attempts_record

    def record(jobs: Any) -> None:
        try:
            recorded(jobs)
        finally:
            connection.close()

    monkeypatch.setattr(dispatch, "attempts_record", record)
    monkeypatch.setattr(dispatch, "_senders", ProcessLocal(dispatch._new_sender))


def settings_probe(code: str, env: dict[str, str]) -> str:
    """What `code` prints last, run by `manage.py shell` in a fresh process with `env` (settings
    are read once, at start-up, so a different environment needs its own process)."""
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip().splitlines()[-1]


def startup_refusal(env: dict[str, str]) -> str:
    """Settings are checked as they load: `manage.py check` in a fresh process with `env` must
    refuse to start. What it said on stderr, for the caller to find the setting named."""
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0, done.stdout
    return done.stderr


def pg_dump() -> str:
    """The whole test database as `pg_dump` prints it (what a leaked backup would hold)."""
    from devstack.services import LocalPostgres

    db = settings.DATABASES["default"]
    return subprocess.run(
        [
            str(LocalPostgres.bin_dir() / "pg_dump"),
            "-h",
            db["HOST"],
            "-p",
            str(db["PORT"]),
            "-U",
            db["USER"],
            db["NAME"],
        ],
        check=True,
        capture_output=True,
    ).stdout.decode()
