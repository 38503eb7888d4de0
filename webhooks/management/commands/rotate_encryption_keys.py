"""`manage.py rotate_encryption_keys`: re-encrypt every endpoint secret under the first key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from webhooks.crypto import SecretUnreadable
from webhooks.management.base import Command as SafeCommand
from webhooks.services import secrets_reencrypt


class Command(SafeCommand):
    help = (
        "Re-encrypt every stored endpoint secret under the first key of WEBHOOKS_ENCRYPTION_KEYS. "
        "Put the new key first, keep the old ones after it, run this, then drop the old keys."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            count = secrets_reencrypt()
        except SecretUnreadable as exc:
            raise CommandError(
                f"{exc}: keep every key that encrypted a stored secret in "
                "WEBHOOKS_ENCRYPTION_KEYS until this command has run"
            ) from exc
        self.stdout.write(f"re-encrypted {count} secrets under the first key")
