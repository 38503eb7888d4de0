"""`manage.py revoke_api_key PREFIX`: the key stops working at once, for good."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from webhooks.management.base import Command as SafeCommand
from webhooks.models import ApiKey
from webhooks.services import api_key_revoke


class Command(SafeCommand):
    help = "Revoke an API key by its prefix (the part before the dot, shown in the admin)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", help="the key's 8-character prefix")

    def handle(self, *args: Any, **options: Any) -> None:
        prefix = options["prefix"].split(".", 1)[0]
        try:
            api_key = api_key_revoke(prefix=prefix, actor="cli:revoke_api_key")
        except ApiKey.DoesNotExist as exc:
            raise CommandError(f"no API key with prefix {prefix!r}") from exc
        self.stdout.write(f"revoked API key {api_key.prefix!r} ({api_key.name})")
