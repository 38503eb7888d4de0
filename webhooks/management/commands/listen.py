"""`manage.py listen [--port 9100] [--secret whsec_... | --endpoint ep_...]`: a local consumer.

It prints each delivery it receives and checks its signature (HMAC `v1`, or `v1a` with the
endpoint's Ed25519 public key) and timestamp: OK, or why not. It answers 204 to a verified
delivery and 401 otherwise, which the service does not retry: that delivery fails at once and
waits in the dead letters (where it can be watched and replayed).
With `--endpoint` it reads that endpoint's current secrets from the database (all of them
during a rotation). Only for local development: it listens on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.core.management.base import CommandError, CommandParser

from webhooks import signing
from webhooks.management.base import Command as SafeCommand
from webhooks.models import Endpoint
from webhooks.selectors import endpoint_active_secrets


def check(secrets: list[str], headers: Any, body: bytes, now: float) -> str:
    """'OK' or the reason the delivery does not verify against any of `secrets`."""
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signature = headers.get("webhook-signature") or ""
    hmac_keys = [signing.secret_key(s) for s in secrets if s.startswith(signing.SECRET_PREFIX)]
    public_keys = [signing.public_key(s) for s in secrets if signing.public_key(s)]
    try:
        if hmac_keys and "v1," in signature:
            signing.verify(
                hmac_keys,
                msg_id=msg_id,
                timestamp=timestamp,
                signature=signature,
                body=body,
                now=now,
            )
            return "OK"
        if public_keys and "v1a," in signature:
            return _check_ed25519(public_keys, msg_id, timestamp, signature, body, now)
    except signing.SignatureError as exc:
        return f"INVALID: {exc}"
    return "INVALID: no signature of a kind the given secrets can check"


def _check_ed25519(
    public_keys: list[str | None],
    msg_id: str | None,
    timestamp: str | None,
    signature: str,
    body: bytes,
    now: float,
) -> str:
    if not msg_id or not timestamp or not timestamp.isdigit():
        return "INVALID: missing or malformed webhook-id or webhook-timestamp"
    if abs(now - int(timestamp)) > signing.DEFAULT_TOLERANCE_SECONDS:
        return "INVALID: webhook-timestamp is outside the allowed tolerance"
    signed = f"{msg_id}.{timestamp}.".encode() + body
    for public in public_keys:
        assert public is not None
        key = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(public.removeprefix(signing.PUBLIC_KEY_PREFIX))
        )
        for part in signature.split():
            version, _, value = part.partition(",")
            if version != "v1a":
                continue
            try:
                key.verify(base64.b64decode(value), signed)
                return "OK"
            except (InvalidSignature, ValueError):
                continue
    return "INVALID: no signature matches"


class Command(SafeCommand):
    help = "Run a local webhook consumer that prints and verifies every delivery it receives."

    def add_arguments(self, parser: CommandParser) -> None:
        # not 9000: the README's example consumer (examples/consumer.py) listens there
        parser.add_argument("--port", type=int, default=9100)
        parser.add_argument("--secret", action="append", default=[], help="whsec_... (repeatable)")
        parser.add_argument("--endpoint", help="verify with this endpoint's current secrets")

    def handle(self, *args: Any, **options: Any) -> None:
        secrets = list(options["secret"])
        if options["endpoint"]:
            if not Endpoint.objects.filter(pk=options["endpoint"]).exists():
                raise CommandError(f"no endpoint {options['endpoint']!r}")
            secrets += endpoint_active_secrets(endpoint_id=options["endpoint"])
        if not secrets:
            raise CommandError("give --secret whsec_... or --endpoint ep_... to verify with")
        out = self.stdout

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                verdict = check(secrets, self.headers, body, time.time())
                try:
                    shown = json.dumps(json.loads(body), indent=2)
                except ValueError:
                    shown = body[:2000].decode("utf-8", "replace")
                out.write(
                    f"--> {self.command} {self.path}  {self.headers.get('webhook-id')}  {verdict}\n"
                    f"{shown}\n"
                )
                out.flush()
                self.send_response(204 if verdict == "OK" else 401)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        try:
            server = ThreadingHTTPServer(("127.0.0.1", options["port"]), Handler)
        except OSError as exc:
            raise CommandError(
                f"cannot listen on 127.0.0.1:{options['port']} ({exc.strerror or exc}): "
                "pass another --port (and the same to seed_demo)"
            ) from exc
        out.write(
            f"listening on http://127.0.0.1:{server.server_address[1]}/ "
            f"(verifying with {len(secrets)} secret(s)); Ctrl-C to stop\n"
        )
        out.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
