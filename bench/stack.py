"""The benchmarks' stack: PostgreSQL, Redis, a sink, gunicorn and Celery on this machine, each a
`devstack.process.Child` with its CPU and memory read through psutil, and the HTTP helpers."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import psutil
import urllib3

from devstack.process import BASE_DIR, Child, listening_socket
from devstack.services import LocalPostgres, LocalRedis

PY = sys.executable


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Proc(Child):
    """A child of the stack whose CPU time and peak memory (its whole tree) are measured."""

    peak_rss: int = 0
    cpu_start: float = 0.0

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu(self) -> float:
        total = 0.0
        for p in self.tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss(self) -> int:
        total = 0
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total


def service_proc(name: str, service: LocalPostgres | LocalRedis) -> Proc:
    """A running server, measured like the stack's own children."""
    assert service.child is not None
    proc = Proc(name, service.child.args)
    proc.popen = service.child.popen
    return proc


@dataclass
class Stack:
    tmp: Path
    env: dict[str, str]
    procs: dict[str, Proc] = field(default_factory=dict)
    services: list[Any] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)

    def spawn(
        self,
        name: str,
        args: list[str],
        ready: str | None = None,
        timeout: float = 60,
        pass_fds: Sequence[int] = (),
    ) -> Proc:
        """Start `args` (its output in `<name>.log`), waiting for a line matching `ready`."""
        proc = Proc(name, args, env=self.env, log_path=self.tmp / f"{name}.log", pass_fds=pass_fds)
        proc.start(ready=ready, timeout=timeout)
        self.procs[name] = proc
        return proc

    def start_engine(self) -> tuple[Proc, Proc]:
        """The default worker command and beat, as `make run` starts them: (worker, beat)."""
        worker = self.spawn(
            "worker",
            [PY, "-m", "celery", "-A", "webhooks_project", "worker", "-l", "INFO"],
            ready=" ready.",
        )
        beat = self.spawn(
            "beat",
            [PY, "-m", "celery", "-A", "webhooks_project", "beat", "-l", "INFO"],
            ready="beat: Starting",
        )
        return worker, beat

    def service_procs(self) -> list[Proc]:
        """PostgreSQL and Redis, measured like the stack's own children."""
        return [
            service_proc(name, service)
            for name, service in zip(("postgres", "redis"), self.services, strict=True)
        ]

    def serve_web(self, name: str, *, workers: int, threads: int = 1) -> tuple[Proc, str]:
        """gunicorn on a socket bound here and handed over (no port race); (proc, base URL)."""
        sock = listening_socket()
        self.sockets.append(sock)
        args = [PY, "-m", "gunicorn", "webhooks_project.wsgi", "--bind", f"fd://{sock.fileno()}"]
        args += ["--workers", str(workers), "--threads", str(threads)]
        proc = self.spawn(name, args, ready="Booting worker", pass_fds=[sock.fileno()])
        return proc, f"http://127.0.0.1:{sock.getsockname()[1]}"

    def start_sink(self, module: str = "bench.sink", name: str = "sink") -> str:
        """A sink that binds a port of its own and prints it (no port race); its base URL."""
        proc = self.spawn(name, [PY, "-m", module, "0"], ready=r"ready (\d+)")
        assert proc.ready_match is not None
        return f"http://127.0.0.1:{proc.ready_match.group(1)}"

    @classmethod
    def create(cls, prefix: str, **overrides: str) -> Stack:
        """A stack in a fresh directory (removed by `close`), its processes in dev settings."""
        tmp = Path(tempfile.mkdtemp(prefix=prefix))
        tmp.chmod(0o755)
        env = dict(os.environ)
        env.update(
            {
                "WEBHOOKS_ENV": "dev",
                "DJANGO_DEBUG": "false",
                "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
                "LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(BASE_DIR),
                **overrides,
            }
        )
        return cls(tmp, env)

    def start_data(self) -> tuple[str, str]:
        """PostgreSQL (fsync on) and Redis on free ports, migrated; returns (dsn, API key)."""
        log("starting PostgreSQL and Redis")
        pg = LocalPostgres(self.tmp / "postgres").start()
        self.services.append(pg)
        rd = LocalRedis(self.tmp / "redis", persist=False).start()
        self.services.append(rd)
        self.env["DATABASE_URL"] = dsn = pg.url("webhooks")
        self.env["REDIS_URL"] = rd.url()
        run = partial(subprocess.run, cwd=BASE_DIR, env=self.env, check=True)
        run([PY, "manage.py", "migrate", "-v", "0"])
        created = run([PY, "manage.py", "create_api_key", "bench"], capture_output=True, text=True)
        return dsn, created.stdout.strip().splitlines()[-1]

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc:
            proc.stop()

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        for service in reversed(self.services):
            service.stop()
        for sock in self.sockets:
            sock.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Sampler:
    """Samples RSS of the named processes every 100 ms, keeping the peak."""

    def __init__(self, procs: list[Proc]) -> None:
        self.procs = procs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        for p in self.procs:
            p.peak_rss = 0
            p.cpu_start = p.cpu()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for p in self.procs:
                p.peak_rss = max(p.peak_rss, p.rss())
            self._stop.wait(0.1)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, dict[str, float]]:
        return {
            p.name: {
                "cpu_s": round(p.cpu() - p.cpu_start, 2),
                "peak_rss_mb": round(p.peak_rss / 2**20, 1),
            }
            for p in self.procs
        }


# --- HTTP helpers -------------------------------------------------------------------------------

HTTP = urllib3.PoolManager(maxsize=16)


def api(base: str, key: str, method: str, path: str, body: Any = None) -> Any:
    response = HTTP.request(
        method,
        base + path,
        body=orjson.dumps(body) if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        retries=False,
        timeout=60,
    )
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {response.data[:500]!r}")
    return orjson.loads(response.data) if response.data else None


def sink_stats(sink: str, reset: bool = False, tag: str = "") -> dict[str, Any]:
    """Every receipt of the phase (read once, at its end), or, with `reset`, start phase `tag`:
    the sink then keeps only requests whose payload carries that tag."""
    path = (f"/reset/{tag}" if tag else "/reset") if reset else "/stats"
    return orjson.loads(HTTP.request("GET", sink + path).data)


def sink_count(sink: str) -> dict[str, int]:
    """The sink's counts, O(1): what to poll while waiting."""
    return orjson.loads(HTTP.request("GET", sink + "/count").data)
