"""The README's "Walk-through with curl", run as written: its shell blocks in bash, in order,
against a real web server and worker, with the README's own consumer (examples/consumer.py) on
the other end. Only the addresses change (free ports for :8000 and :9000) and curl is a stand-in
(tests/bin/curl: CI machines may have none) that logs each status.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deliveries.models import Delivery
from devstack.process import Child, free_port
from tests.conftest import BASE_DIR, WebServer, WorkerProcess, wait_until, worker_env
from webhooks.models import ApiKey
from webhooks.services import api_key_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ROOT = Path(BASE_DIR)


def _blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Walk-through with curl")
    section = text[start : text.index("\n## ", start + 1)]
    return re.findall(r"```sh\n(.*?)```", section, re.DOTALL)


@pytest.fixture
def web() -> Iterator[WebServer]:
    server = WebServer(worker_env()).start()
    yield server
    server.stop()


def _bash(script: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, script + "\n" + done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_the_walkthrough_runs_as_written(
    web: WebServer, celery_worker: WorkerProcess, tmp_path: Path
) -> None:
    _, key = api_key_create(name="walkthrough", scopes=ApiKey.Scope.values)
    (tmp_path / ".run").mkdir()
    (tmp_path / ".run" / "dev-api-key").write_text(key)  # what `make run` leaves there
    consumer_port = free_port()
    blocks = [
        block.replace("http://127.0.0.1:8000", web.url).replace(
            "127.0.0.1:9000", f"127.0.0.1:{consumer_port}"
        )
        for block in _blocks()
    ]
    assert len(blocks) == 6, "the walk-through's steps changed: update this test"
    log = tmp_path / "curl.log"
    env = {
        **os.environ,
        "PATH": f"{ROOT / 'tests' / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "CURL_LOG": str(log),
    }
    # steps up to the endpoint; the variables they set are kept for the next steps
    variables = tmp_path / "vars.sh"
    _bash(
        "\n".join(blocks[:3]) + f"\ndeclare -p KEY API AUTH EP SECRET > {variables}\n",
        tmp_path,
        env,
    )
    secret = re.search(r'SECRET="([^"]+)"', variables.read_text())
    assert secret is not None
    # step 3: the README's consumer, with the endpoint's secret
    consumer = Child(
        "consumer",
        [sys.executable, str(ROOT / "examples" / "consumer.py")],
        env={**worker_env(), "WEBHOOK_SECRET": secret.group(1), "PORT": str(consumer_port)},
    ).start(ready="listening on", timeout=30)
    try:
        # step 4: events (a refused one, an accepted one), the rate limit
        _bash(f"source {variables}\n" + "\n".join(blocks[3:5]), tmp_path, env)
        wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 1, timeout=30)
        wait_until(lambda: "verified evt_" in consumer.text())
        # step 5: the delivery and its attempts, with the headers as sent
        shown = _bash(f"source {variables}\n" + blocks[5], tmp_path, env)
    finally:
        consumer.stop()
    statuses = [(c["method"], c["status"]) for c in map(json.loads, log.read_text().splitlines())]
    assert statuses == [
        ("POST", 201),  # the event type
        ("POST", 201),  # the endpoint
        ("POST", 422),  # the event that breaks the schema
        ("POST", 202),  # the event
        ("PATCH", 200),  # the rate limit
        ("GET", 200),  # deliveries of the endpoint
        ("GET", 200),  # the same, for $DELIVERY
        ("GET", 200),  # its attempts
    ], statuses
    # curl prints the answers back to back: the last document is the attempts'
    documents, at, decoder = [], 0, json.JSONDecoder()
    while at < len(shown.strip()):
        document, at = decoder.raw_decode(shown.strip(), at)
        documents.append(document)
    attempts = documents[-1]["results"]
    assert attempts[0]["outcome"] == "succeeded"
    assert attempts[0]["status_code"] == 204
    assert attempts[0]["request_headers"]["webhook-signature"].startswith("v1,")
