"""Endpoint secrets: encrypted at rest, re-encrypted under a new key, rotated without a gap."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from deliveries.models import Delivery
from tests.conftest import WorkerProcess, pg_dump, startup_refusal, wait_until
from tests.sink import Sink
from webhooks import crypto
from webhooks.models import EndpointSecret
from webhooks.selectors import endpoint_active_secrets


def _endpoint(api: APIClient, url: str) -> dict[str, Any]:
    response = api.post("/api/v1/endpoints/", {"url": url}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


@pytest.mark.django_db(transaction=True)
def test_a_database_dump_holds_no_secret_in_plaintext(api: APIClient) -> None:
    # given endpoints with secrets, one of them rotated
    endpoints = [_endpoint(api, f"http://127.0.0.1:9/{n}") for n in range(3)]
    rotated = api.post(f"/api/v1/endpoints/{endpoints[0]['id']}/rotate-secret/").json()
    secrets = [e["secret"] for e in endpoints] + [rotated["secret"]]
    # when the whole database is dumped
    dump = pg_dump()
    # then no secret, and no whsec_ prefix at all, is in it; yet the API still reads them
    assert "whsec_" not in dump
    for secret in secrets:
        assert secret.removeprefix("whsec_") not in dump
    assert endpoint_active_secrets(endpoint_id=endpoints[0]["id"]) == [
        rotated["secret"],
        endpoints[0]["secret"],
    ]


@pytest.mark.django_db
def test_rotating_the_encryption_key_reencrypts_every_secret(api: APIClient, settings: Any) -> None:
    # given secrets under the old key
    old_key = settings.WEBHOOKS_ENCRYPTION_KEYS[0]
    endpoint = _endpoint(api, "http://127.0.0.1:9/a")
    before = EndpointSecret.objects.get(endpoint_id=endpoint["id"]).secret
    # when a new key is put first and the command runs
    new_key = Fernet.generate_key().decode()
    settings.WEBHOOKS_ENCRYPTION_KEYS = [new_key, old_key]
    call_command("rotate_encryption_keys", stdout=open(os.devnull, "w"))  # noqa: SIM115
    # then the stored token changed, and the new key alone reads it
    after = EndpointSecret.objects.get(endpoint_id=endpoint["id"]).secret
    assert after != before
    settings.WEBHOOKS_ENCRYPTION_KEYS = [new_key]
    assert endpoint_active_secrets(endpoint_id=endpoint["id"]) == [endpoint["secret"]]
    # and without the key that encrypted them, the command refuses with a clear message
    settings.WEBHOOKS_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CommandError, match="no configured encryption key decrypts"):
        call_command("rotate_encryption_keys")
    assert EndpointSecret.objects.get(endpoint_id=endpoint["id"]).secret == after


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (None, "WEBHOOKS_ENCRYPTION_KEYS must be set outside WEBHOOKS_ENV=dev"),
        ("not-a-key", "not a Fernet key"),
    ],
)
def test_outside_dev_startup_refuses_without_valid_keys(keys: str | None, message: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WEBHOOKS_ENCRYPTION_KEYS"}
    env.update(WEBHOOKS_ENV="production", DJANGO_SECRET_KEY="x" * 50)
    if keys is not None:
        env["WEBHOOKS_ENCRYPTION_KEYS"] = keys
    assert message in startup_refusal(env)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_after_rotation_both_secrets_sign_during_the_grace_then_only_the_new_one(
    api: APIClient, sink: Sink, celery_worker: WorkerProcess
) -> None:
    api.post("/api/v1/event-types/", {"name": "order.created", "schema": {}}, format="json")
    endpoint = _endpoint(api, sink.url("rot"))
    old = endpoint["secret"]

    def deliver(n: int) -> Any:
        api.post("/api/v1/events/", {"type": "order.created", "data": {"n": n}}, format="json")
        wait_until(lambda: Delivery.objects.filter(status="succeeded").count() == n)
        return sink.wait_for(n, "rot")[-1]

    # when the secret is rotated with a grace
    rotated = api.post(
        f"/api/v1/endpoints/{endpoint['id']}/rotate-secret/", {"grace_seconds": 3600}, format="json"
    )
    assert rotated.status_code == 200, rotated.content
    new = rotated.json()["secret"]
    assert new != old
    assert rotated.json()["previous_expire_at"]
    # then a delivery carries two signatures, and each secret alone verifies it
    during = deliver(1)
    assert len(during.headers["webhook-signature"].split()) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(during.body, during.headers)["data"] == {"n": 1}
    # and once the grace is over (rotate again with none), the oldest secrets sign no more
    newest = api.post(
        f"/api/v1/endpoints/{endpoint['id']}/rotate-secret/", {"grace_seconds": 0}, format="json"
    ).json()["secret"]
    after = deliver(2)
    assert len(after.headers["webhook-signature"].split()) == 1
    assert Webhook(newest).verify(after.body, after.headers)["data"] == {"n": 2}
    for secret in (old, new):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(after.body, after.headers)


def test_a_token_from_another_key_is_refused_with_a_clear_error(settings: Any) -> None:
    token = Fernet(Fernet.generate_key()).encrypt(b"whsec_x").decode()
    with pytest.raises(crypto.SecretUnreadable):
        crypto.decrypt(token)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_an_ed25519_endpoint_gets_v1a_signatures_that_its_public_key_verifies(
    api: APIClient, sink: Sink, celery_worker: WorkerProcess
) -> None:
    # given an endpoint set to ed25519: it is shown a whpk_ public key, never a secret
    api.post("/api/v1/event-types/", {"name": "order.created", "schema": {}}, format="json")
    created = api.post(
        "/api/v1/endpoints/", {"url": sink.url("ed"), "signature_scheme": "ed25519"}, format="json"
    ).json()
    assert created["secret"] is None
    assert created["public_key"].startswith("whpk_")
    shown = api.get(f"/api/v1/endpoints/{created['id']}/secret/").json()
    assert shown == {"secret": None, "public_key": created["public_key"]}
    # when an event is delivered
    api.post("/api/v1/events/", {"type": "order.created", "data": {"n": 1}}, format="json")
    (request,) = sink.wait_for(1, "ed")
    # then it carries one v1a signature over id.timestamp.body that the public key verifies
    # (with `cryptography`: the Python reference library has no v1a verifier yet,
    # standard-webhooks issue #124), and a changed body does not verify
    scheme, _, signature = request.headers["webhook-signature"].partition(",")
    assert scheme == "v1a"
    key = Ed25519PublicKey.from_public_bytes(
        base64.b64decode(created["public_key"].removeprefix("whpk_"))
    )
    signed = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode()
    key.verify(base64.b64decode(signature), signed + request.body)
    with pytest.raises(InvalidSignature):
        key.verify(base64.b64decode(signature), signed + request.body + b" ")
    # and its scheme cannot be changed afterwards
    changed = api.patch(
        f"/api/v1/endpoints/{created['id']}/", {"signature_scheme": "hmac-sha256"}, format="json"
    )
    assert changed.status_code == 400
    # a rotation answers the new public key, and both keys sign during the grace
    rotated = api.post(f"/api/v1/endpoints/{created['id']}/rotate-secret/", {}, format="json")
    assert rotated.json()["public_key"].startswith("whpk_")
    assert rotated.json()["secret"] is None
    assert rotated.json()["public_key"] != created["public_key"]
