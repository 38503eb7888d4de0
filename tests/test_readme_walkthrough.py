"""The README's "Walk-through with curl", run as written: its shell blocks in bash, in order,
against a real web server and worker, with the README's own consumer (examples/consumer.py) on
the other end. Only the addresses change (free ports for :8000 and :9000) and curl is a stand-in
(tests/bin/curl: CI machines may have none) that logs each status.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deliveries.models import Delivery
from devstack.process import Child, free_port
from tests.conftest import BASE_DIR, WebServer, WorkerProcess, wait_until, worker_env
from tests.readme import documents, run_bash
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
    assert len(blocks) == 9, "the walk-through's steps changed: update this test"
    log = tmp_path / "curl.log"
    env = {
        **os.environ,
        "PATH": f"{ROOT / 'tests' / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "CURL_LOG": str(log),
    }
    # steps up to the endpoint; the variables they set are kept for the next steps
    variables = tmp_path / "vars.sh"
    run_bash(
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
        run_bash(f"source {variables}\n" + "\n".join(blocks[3:5]), tmp_path, env)
        wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 1, timeout=30)
        wait_until(lambda: "verified evt_" in consumer.text())
        # step 5: the delivery and its attempts, with the headers as sent
        shown = run_bash(f"source {variables}\n" + blocks[5], tmp_path, env)
        # steps 6-8: rotation, dead letters and replay, the metrics
        rotated = run_bash(f"source {variables}\n" + blocks[6], tmp_path, env)
        replayed = run_bash(f"source {variables}\n" + blocks[7], tmp_path, env)
        measured = run_bash(f"source {variables}\n" + blocks[8], tmp_path, env)
        # the consumer, still on the old secret, verifies a delivery signed after the rotation
        another = blocks[3].split("\n\n")[-1].replace("ord_1", "ord_2")
        run_bash(f"source {variables}\n" + another, tmp_path, env)
        wait_until(lambda: consumer.text().count("verified evt_") == 2, timeout=30)
        assert "REJECTED" not in consumer.text()
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
        ("POST", 200),  # the rotation
        ("GET", 200),  # the dead letters
        ("POST", 202),  # the bulk replay
        ("GET", 200),  # the metrics
        ("POST", 202),  # an event after the rotation (idempotency key: a new one)
    ], statuses
    assert json.loads(rotated)["secret"].startswith("whsec_")
    assert documents(replayed)[-1] == {"replayed": 0, "skipped_disabled": 0}
    metrics = json.loads(measured)
    assert metrics["deliveries"]["success_rate"] == 1.0
    assert metrics["latency_ms"]["count"] == 1
    attempts = documents(shown)[-1]["results"]  # the last answer printed: the attempts
    assert attempts[0]["outcome"] == "succeeded"
    assert attempts[0]["status_code"] == 204
    assert attempts[0]["request_headers"]["webhook-signature"].startswith("v1,")
