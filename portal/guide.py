"""How to verify our signatures, for the catalog page: generated from the constants the signer
uses (webhooks/signing.py), so the page cannot drift from what is sent."""

from __future__ import annotations

from dataclasses import dataclass

from webhooks import signing


@dataclass(frozen=True)
class Guide:
    headers: tuple[str, ...]
    secret_prefix: str
    public_key_prefix: str
    tolerance_seconds: int
    signed_content: str
    python: str
    node: str


def verification() -> Guide:
    python = (
        "# pip install standardwebhooks\n"
        "from standardwebhooks import Webhook\n\n"
        f'wh = Webhook("{signing.SECRET_PREFIX}...")  # the endpoint\'s secret\n'
        "payload = wh.verify(request_body, request_headers)  # raises if it does not verify\n"
    )
    node = (
        "// npm install standardwebhooks\n"
        'import { Webhook } from "standardwebhooks";\n\n'
        f'const wh = new Webhook("{signing.SECRET_PREFIX}...");\n'
        "const payload = wh.verify(rawBody, headers); // throws if it does not verify\n"
    )
    return Guide(
        headers=("webhook-id", "webhook-timestamp", "webhook-signature"),
        secret_prefix=signing.SECRET_PREFIX,
        public_key_prefix=signing.PUBLIC_KEY_PREFIX,
        tolerance_seconds=signing.DEFAULT_TOLERANCE_SECONDS,
        signed_content="{webhook-id}.{webhook-timestamp}.{body}",
        python=python,
        node=node,
    )
