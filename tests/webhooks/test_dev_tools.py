"""Developer tools: a test event sent to one endpoint, and the local `listen` consumer."""

from __future__ import annotations

import io
import sys
import time

import pytest
import urllib3
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient
from standardwebhooks import Webhook

from deliveries.models import Delivery
from devstack.process import Child
from tests.conftest import BASE_DIR, WorkerProcess, wait_until, worker_env
from tests.sink import Sink
from webhooks import signing
from webhooks.management.commands.listen import check


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_test_event_reaches_only_its_endpoint_signed(
    api: APIClient, sink: Sink, celery_worker: WorkerProcess
) -> None:
    target = api.post("/api/v1/endpoints/", {"url": sink.url("target")}, format="json").json()
    api.post("/api/v1/endpoints/", {"url": sink.url("bystander")}, format="json")
    answer = api.post(f"/api/v1/endpoints/{target['id']}/test/")
    assert answer.status_code == 202
    (request,) = sink.wait_for(1, "target")
    payload = Webhook(target["secret"]).verify(request.body, request.headers)
    assert payload["type"] == "webhook.test"
    assert payload["data"]["endpoint_id"] == target["id"]
    assert request.headers["webhook-id"] == answer.json()["event"]
    wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == 1)
    # nothing can reach the bystander: no delivery row was made for it
    assert Delivery.objects.count() == 1
    assert sink.requests("bystander") == []
    # the command does the same; a disabled endpoint is refused, not queued
    out = io.StringIO()
    call_command("send_test_event", target["id"], stdout=out)
    assert "queued webhook.test event" in out.getvalue()
    api.patch(f"/api/v1/endpoints/{target['id']}/", {"enabled": False}, format="json")
    refused = api.post(f"/api/v1/endpoints/{target['id']}/test/")
    assert refused.status_code == 409
    assert "disabled" in refused.json()["detail"]
    with pytest.raises(CommandError, match="no endpoint"):
        call_command("send_test_event", "ep_nope")


def test_the_listener_prints_each_delivery_and_whether_it_verifies() -> None:
    secret = signing.generate_secret()
    listener = Child(
        "listen",
        [sys.executable, "manage.py", "listen", "--port", "0", "--secret", secret],
        env=worker_env(),
    )
    try:
        listener.start(ready=r"listening on http://127\.0\.0\.1:(\d+)/", timeout=30)
        assert listener.ready_match is not None
        port = int(listener.ready_match.group(1))
        url = f"http://127.0.0.1:{port}/hook"
        body = b'{"type": "order.created", "data": {"id": "o-1"}}'

        def send(key_secret: str, msg_id: str) -> int | None:
            ts = int(time.time())
            headers = {
                "webhook-id": msg_id,
                "webhook-timestamp": str(ts),
                "webhook-signature": signing.sign(signing.secret_key(key_secret), msg_id, ts, body),
                "content-type": "application/json",
            }
            answer = urllib3.request("POST", url, body=body, headers=headers, timeout=5)
            return answer.status

        assert send(secret, "msg_good") == 204
        assert send(signing.generate_secret(), "msg_forged") == 401
        wait_until(lambda: listener.text().count("-->") == 2)
        text = listener.text()
        assert "msg_good  OK" in text
        assert "msg_forged  INVALID: no signature matches" in text
        assert '"id": "o-1"' in text
    finally:
        listener.stop()


def test_the_listener_checks_ed25519_endpoints_too() -> None:
    secret = signing.generate_ed25519_secret()
    ts = int(time.time())
    body = b"{}"
    header = signing.signature_header([signing.signing_key(secret)], "msg_1", ts, body)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts), "webhook-signature": header}
    assert check([secret], headers, body, time.time()) == "OK"
    assert check([secret], headers, b"{ }", time.time()) == "INVALID: no signature matches"
    stale = check([secret], headers, body, time.time() + 600)
    assert stale == "INVALID: webhook-timestamp is outside the allowed tolerance"


@pytest.mark.django_db
def test_seed_demo_registers_a_type_and_a_listener_endpoint_once(
    api: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", "8765")  # `make run` with PORT=8765 (.run/env carries it)
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert "curl -s -X POST http://127.0.0.1:8765/api/v1/events/" in out.getvalue()
    call_command("seed_demo", stdout=io.StringIO())  # again: nothing doubled
    from schemas_app.models import EventType
    from webhooks.models import Endpoint

    assert EventType.objects.filter(name="demo.order.created").count() == 1
    # port 9100: the README's example consumer takes 9000
    (endpoint,) = Endpoint.objects.filter(url="http://127.0.0.1:9100/demo")
    assert f"listen --port 9100 --endpoint {endpoint.pk}" in out.getvalue()
    preview = api.post(
        "/api/v1/event-types/demo.order.created/preview/",
        {
            "data": {
                "order": {"id": "o-1", "total_cents": 1, "currency": "EUR"},
                "customer": {"email": "ada@example.com"},
            }
        },
        format="json",
    ).json()
    assert preview["payload"]["customer_email"] == "****example.com"


@pytest.mark.django_db(transaction=True)
def test_a_worker_logs_json_lines_when_asked() -> None:
    import json

    worker = WorkerProcess(
        worker_env(WEBHOOKS_LOG_FORMAT="json", CELERY_WORKER_CONCURRENCY=1),
        extra_args=["--queues", "json-log-check"],  # consumes nothing the other tests send
    ).start()
    try:
        (ready,) = [line for line in worker.output if " ready." in line]
        record = json.loads(ready)
        assert record["level"] == "INFO"
        assert record["message"].endswith(" ready.")
    finally:
        worker.stop()


def test_the_listener_on_a_busy_port_says_so_in_one_line() -> None:
    import socket
    import subprocess

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        done = subprocess.run(
            [sys.executable, "manage.py", "listen", "--port", str(port), "--secret", "whsec_"
             + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
    finally:
        busy.close()
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "--port" in done.stderr


def test_the_readme_consumer_is_the_shipped_example_and_it_verifies() -> None:
    import json
    import re
    from datetime import UTC, datetime
    from pathlib import Path

    from devstack.process import free_port

    example = (Path(BASE_DIR) / "examples" / "consumer.py").read_text()
    readme = (Path(BASE_DIR) / "README.md").read_text()
    section = readme[readme.index("A complete consumer, [`examples/consumer.py`]") :]
    shown = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert shown is not None
    assert shown.group(1) == example  # the README shows the file as shipped
    secret = signing.new_secret("hmac-sha256")
    port = free_port()
    consumer = Child(
        "consumer",
        [sys.executable, "examples/consumer.py"],
        env={**worker_env(), "WEBHOOK_SECRET": secret, "PORT": str(port)},
    )
    consumer.start(ready=r"listening on", timeout=30)
    try:
        body = json.dumps({"type": "order.paid", "data": {"total": 1}}).encode()
        now = datetime.now(UTC)
        headers = {"webhook-id": "evt_1", "webhook-timestamp": str(int(now.timestamp()))}
        headers["webhook-signature"] = Webhook(secret).sign("evt_1", now, body.decode())
        http = urllib3.PoolManager()
        url = f"http://127.0.0.1:{port}/"
        assert http.request("POST", url, body=body, headers=headers).status == 204
        headers["webhook-signature"] = "v1,AAAA"
        assert http.request("POST", url, body=body, headers=headers).status == 400
        wait_until(lambda: "REJECTED" in consumer.text())
        assert "verified evt_1" in consumer.text()
    finally:
        consumer.stop()
