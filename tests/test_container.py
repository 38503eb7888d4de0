"""The container path, proven without a Docker engine (none runs on these machines): the
Dockerfile's build steps run in a clean virtualenv with nothing of this environment, then the
image's settings load with what compose gives the containers; compose's variables are the ones
`.env.example` names, every secret required; `docker compose config` where a compose binary is
installed; `manage.py bootstrap` makes the first admin user and API key once."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import venv
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command

from tests.conftest import BASE_DIR
from webhooks.models import ApiKey

ROOT = Path(BASE_DIR)


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    text = text.replace("\\\n", " ")
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in text.splitlines()
        if line.strip()
    ]


def _clean_env(**extra: str) -> dict[str, str]:
    """What a container starts with: a PATH, a HOME, and what the image or compose sets."""
    return {"PATH": os.environ["PATH"], "HOME": str(Path.home()), **extra}


@pytest.mark.integration
def test_the_dockerfile_builds_in_a_clean_venv_and_its_image_loads(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    image_env: dict[str, str] = {}
    runs = []
    for instruction, rest in _instructions():
        if instruction == "ENV":
            image_env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
        elif instruction == "COPY":
            *sources, _target = rest.split()
            for source in sources:
                src = ROOT / source
                (shutil.copytree if src.is_dir() else shutil.copy2)(src, app / src.name)
        elif instruction == "RUN":
            runs.append(rest)
    assert runs, "the Dockerfile has no RUN step"
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    # the image's environment, but pip may use this machine's cache (the image turns it off to
    # stay small); `useradd` needs root and changes nothing this test looks at
    build_env = _clean_env(**image_env)
    build_env.pop("PIP_NO_CACHE_DIR", None)
    build_env["PATH"] = f"{env_dir / 'bin'}:{build_env['PATH']}"
    for command in runs:
        command = re.sub(r"useradd [^&]*", "true ", command)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=app,
            env=build_env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert list((app / ".run" / "static" / "admin").glob("css/*.css")), "collectstatic made nothing"
    # then the image starts as compose starts it: its settings load, the web's WSGI module
    # imports, the database is reachable and migrated
    db = settings.DATABASES["default"]
    runtime = _clean_env(
        **image_env,
        DJANGO_SECRET_KEY="x" * 50,
        WEBHOOKS_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        DJANGO_ALLOWED_HOSTS="localhost,127.0.0.1",
        DATABASE_URL=f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        REDIS_URL=settings.REDIS_URL,
    )
    runtime["PATH"] = build_env["PATH"]
    for args in (
        ["python", "manage.py", "check"],
        ["python", "-c", "import webhooks_project.wsgi, webhooks_project.celery"],
        ["python", "manage.py", "migrate", "--check"],
    ):
        done = subprocess.run(args, cwd=app, env=runtime, capture_output=True, text=True)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
    # and without a secret it refuses to start, naming what is missing
    del runtime["WEBHOOKS_ENCRYPTION_KEYS"]
    done = subprocess.run(
        ["python", "manage.py", "check"], cwd=app, env=runtime, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "WEBHOOKS_ENCRYPTION_KEYS must be set" in done.stderr


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_requires_every_secret_and_env_example_names_them() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert used <= set(example), used - set(example)
    # no secret has a default: a missing one stops compose with its name
    for secret in ("DJANGO_SECRET_KEY", "WEBHOOKS_ENCRYPTION_KEYS", "FLOWER_BASIC_AUTH"):
        assert re.search(r"\$\{" + secret + r":\?", text), secret
        assert example[secret] == "", f"{secret} must be left for the operator to fill"
    flower = _compose()["services"]["flower"]
    assert "change-me" not in text
    assert not any("basic-auth" in part for part in flower["command"])  # not visible in `ps`
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert flower["environment"]["DJANGO_SECRET_KEY"].startswith("${DJANGO_SECRET_KEY:?")


def _compose_command() -> list[str] | None:
    """The compose binary of this machine, if it has one."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.mark.skipif(_compose_command() is None, reason="no compose binary on this machine")
def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"DJANGO_SECRET_KEY={'x' * 50}\nWEBHOOKS_ENCRYPTION_KEYS={Fernet.generate_key().decode()}\n"
        "FLOWER_BASIC_AUTH=ops:secret\n"
    )
    compose = _compose_command()
    assert compose is not None
    done = subprocess.run(
        [*compose, "--env-file", str(env_file), "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "ops:secret" in done.stdout


@pytest.mark.django_db
def test_bootstrap_makes_the_first_admin_and_key_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-password-1")
    out = StringIO()
    call_command("bootstrap", stdout=out, stderr=StringIO())
    printed = dict(line.split("=", 1) for line in out.getvalue().splitlines())
    assert printed["ADMIN_USERNAME"] == "admin"
    assert printed["ADMIN_PASSWORD"] == "a-long-password-1"
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser
    assert user.check_password("a-long-password-1")
    key = ApiKey.objects.get_from_key(printed["API_KEY"])
    assert sorted(key.scopes) == sorted(ApiKey.Scope.values)
    # a second run creates nothing and prints nothing on stdout
    again, said = StringIO(), StringIO()
    call_command("bootstrap", stdout=again, stderr=said)
    assert again.getvalue() == ""
    assert "exists" in said.getvalue()
    assert get_user_model().objects.count() == 1
    assert ApiKey.objects.filter(name="bootstrap").count() == 1
