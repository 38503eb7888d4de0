"""The README's "From an internal entity to the partner's payload", run as written: its shell
blocks in bash, in order, against a real web server (curl is tests/bin/curl's stand-in), with a
partner's public key in `partner-public.pem` as the example reads it. The preview answers the
payload the README shows; then an event sent through the real worker reaches the partner shaped,
masked and encrypted as the section says."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from jwcrypto import jwe, jwk

from deliveries.models import Delivery
from tests.conftest import BASE_DIR, WebServer, WorkerProcess, wait_until, worker_env
from tests.readme import documents, readme_section, run_bash
from tests.sink import Sink
from webhooks.models import ApiKey
from webhooks.services import api_key_create, endpoint_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ROOT = Path(BASE_DIR)
SECTION = "## From an internal entity to the partner's payload"


def _shown_payload(section: str) -> Any:
    """The payload the README shows the preview answering (its comment lines, as JSON)."""
    comment = "".join(
        line.lstrip("#").strip() + " "
        for line in section.splitlines()
        if line.startswith("#  ") or line.startswith('# {"payload"')
    )
    found = re.search(r'"payload": (\{.*?\}),\s*"body"', comment)
    assert found is not None, comment
    return json.loads(found.group(1))


def test_the_entity_section_runs_as_written(
    sink: Sink, celery_worker: WorkerProcess, tmp_path: Path
) -> None:
    section = readme_section(SECTION)
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 2, "the section's examples changed: update this test"
    partner = jwk.JWK.generate(kty="RSA", size=2048)
    (tmp_path / "partner-public.pem").write_bytes(partner.export_to_pem())  # the public half
    endpoint, _ = endpoint_create(url=sink.url("partner"))
    _, key = api_key_create(name="entity", scopes=ApiKey.Scope.values)
    web = WebServer(worker_env()).start()
    log = tmp_path / "curl.log"
    env = {
        **os.environ,
        "PATH": f"{ROOT / 'tests' / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "CURL_LOG": str(log),
        "API": web.url + "/api/v1",
        "KEY": key,
        "EP": endpoint.pk,
    }
    try:
        scripts = [block.replace(".venv/bin/python", sys.executable) for block in blocks]
        shaped = run_bash(scripts[0], tmp_path, env)
        masked = run_bash(scripts[1], tmp_path, env)
        statuses = [
            (c["method"], c["status"]) for c in map(json.loads, log.read_text().splitlines())
        ]
        assert statuses == [
            ("POST", 201),  # the event type with its mapping and output schema
            ("POST", 200),  # the preview
            ("PATCH", 200),  # the endpoint's own mapping
            ("PATCH", 200),  # sensitive fields, the mapping that keeps total, masking
            ("PATCH", 200),  # the partner's key and its masking
        ], statuses
        preview = documents(shaped)[1]
        assert preview["payload"] == _shown_payload(section)
        assert "margin_cents" not in preview["body"]
        assert documents(masked)[-1]["encryption_key"]["kty"] == "RSA"

        # an order, as the internal system posts it, reaches the partner shaped and masked
        Delivery.objects.all().delete()
        endpoint.refresh_from_db()
        endpoint.event_types = ["order.placed"]
        endpoint.save(update_fields=["event_types"])
        order = {
            "order": {"id": "o-8", "total_cents": 990, "currency": "EUR", "lines": []},
            "customer": {"email": "ada@example.com", "segment": "vip"},
            "payment": {"card": "4242424242424242"},
        }
        posted = web.post_json("/api/v1/events/", {"type": "order.placed", "data": order}, key)
        assert posted[0] == 202, posted
        (received,) = sink.wait_for(1, "partner", timeout=30)
        wait_until(lambda: Delivery.objects.filter(status="succeeded").exists())
    finally:
        web.stop()
    data = json.loads(received.body)["data"]
    assert data["order_id"] == "o-8"
    assert data["total"] == {"amount": 990, "currency": "EUR"}
    assert data["customer_email"] == "[redacted]"  # the endpoint's rule replaces the type's
    assert "4242424242424242" not in received.body.decode()
    token = jwe.JWE()
    token.deserialize(data["card"], key=partner)
    assert json.loads(token.payload) == "4242424242424242"
