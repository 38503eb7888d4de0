"""Shared fixtures: API clients with keys, a real HTTP sink, and a real Celery worker process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from tests.sink import Sink
from webhooks.models import ApiKey
from webhooks.services import api_key_create

BASE_DIR = Path(__file__).resolve().parent.parent


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


def terminate(proc: subprocess.Popen[Any] | None, timeout: float = 20) -> None:
    """Stop a child started in its own session: SIGTERM, then SIGKILL its group if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


class WorkerProcess:
    """A `celery -A webhooks_project worker` (or `beat`) child process on the test database."""

    ROLE_ARGS = {
        "worker": (["worker", "--without-gossip", "--without-mingle"], " ready."),
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
        self.env = env
        self.extra_args = extra_args or []
        self.role_args, self.ready_marker = self.ROLE_ARGS[role]
        if default_command:
            self.role_args = [role]
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self._ready = threading.Event()

    def start(self, timeout: float = 60) -> WorkerProcess:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "webhooks_project",
                *self.role_args,
                "--loglevel",
                "INFO",
                *self.extra_args,
            ],
            cwd=BASE_DIR,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError("celery did not start:\n" + "".join(self.output[-50:]))
        return self

    def _pump(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if self.ready_marker in line:
                self._ready.set()

    def stop(self, timeout: float = 20) -> None:
        terminate(self.proc, timeout)


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


class WebServer:
    """The real web server (gunicorn) as a child process, on a port of its own.

    The listening socket is bound here (port 0) and handed to gunicorn (`--bind fd://N`), so no
    other process can take the port between choosing it and the server listening on it.
    """

    def __init__(self, env: dict[str, str]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = int(self.sock.getsockname()[1])
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> WebServer:
        import urllib.error
        import urllib.request

        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "webhooks_project.wsgi",
                "--bind",
                f"fd://{self.sock.fileno()}",
                "--workers",
                "1",
                "--threads",
                "4",
            ],
            cwd=BASE_DIR,
            env=self.env,
            pass_fds=[self.sock.fileno()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=2)  # noqa: S310
                return self
            except urllib.error.HTTPError:
                return self  # it answers (503 is fine: the broker may be down on purpose)
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("web server did not start")

    def stop(self) -> None:
        terminate(self.proc)
        self.sock.close()


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


QUEUES = ("deliveries", "retries", "maintenance")


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


def pg_dump() -> str:
    """The whole test database as `pg_dump` prints it (what a leaked backup would hold)."""
    from webhooks_project.localstack import LocalPostgres

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
