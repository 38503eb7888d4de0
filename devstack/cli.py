"""What `make run` and `make test` do, and the restart loop `make run` puts each Celery process in.

    python -m devstack run                     # make run
    python -m devstack test -- [pytest args]   # make test
    python -m devstack keep -- <command>       # restart <command> when it dies

PostgreSQL and Redis (`devstack.services`) keep their data under `.run/` for `run` (between runs)
and in a temporary folder for `test`. Either is skipped when DATABASE_URL / REDIS_URL is set.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .process import BASE_DIR
from .services import start_services, stop_services

RUN_DIR = BASE_DIR / ".run"


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
        celery = [python, "-m", "devstack", "keep", "--"]
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
        # the password goes in Flower's environment (FLOWER_BASIC_AUTH, which Flower reads), not
        # on its command line, where `ps` shows it to every user of the machine
        flower = [python, "-m", "devstack", "keep", "--after-worker", "--"]
        flower += [python, "-m", "celery", "-A", "webhooks_project", "flower"]
        manager.add_process(
            "flower",
            " ".join([*flower, f"--port={flower_port}", "--address=127.0.0.1"]),
            env={**os.environ, "FLOWER_BASIC_AUTH": _flower_auth()},
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


def wait_for_worker(timeout: float = 120.0) -> bool:
    """Wait until a Celery worker of the project answers a ping (at most `timeout` seconds):
    Flower started before the worker logged a warning for each thing it asked it and could not
    get. Whether one answered; the command starts either way."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webhooks_project.settings")
    from webhooks_project.celery import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if app.control.ping(timeout=1.0):
                return True
        except Exception:  # noqa: BLE001 - the broker may not be up yet either
            time.sleep(1.0)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the whole stack (make run)")
    test_parser = sub.add_parser("test", help="run pytest against throwaway services (make test)")
    test_parser.add_argument("pytest_args", nargs=argparse.REMAINDER)
    keep_parser = sub.add_parser("keep", help="run a command, starting it again when it dies")
    keep_parser.add_argument(
        "--after-worker",
        action="store_true",
        help="start it once a Celery worker answers a ping (Flower: its first look finds one)",
    )
    keep_parser.add_argument("child", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "run":
        return run()
    if args.command == "keep":
        child = args.child[1:] if args.child[:1] == ["--"] else args.child
        if not child:
            parser.error("keep needs a command")
        if args.after_worker:
            wait_for_worker()
        return keep(child)
    pytest_args = [a for a in args.pytest_args if a != "--"] if args.pytest_args else []
    return test(pytest_args)
