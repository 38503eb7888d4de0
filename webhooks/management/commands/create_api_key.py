"""`manage.py create_api_key NAME [--scopes a,b] [--application UID]`: prints the key last."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from webhooks.management.arguments import application_option
from webhooks.models import ApiKey
from webhooks.services import api_key_create


class Command(BaseCommand):
    help = (
        "Create an API key and print it (alone, on the last line). It is shown only this once. "
        "Without --scopes the key has every scope."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="a label for the key, e.g. the calling system")
        parser.add_argument(
            "--scopes",
            default=None,
            help=f"comma-separated, from: {', '.join(ApiKey.Scope.values)}",
        )
        parser.add_argument("--application", default=None, help="limit the key to this app uid")
        parser.add_argument(
            "--expires-in-days", type=float, default=None, help="the key stops working after this"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        scopes = (
            [s.strip() for s in options["scopes"].split(",") if s.strip()]
            if options["scopes"] is not None
            else list(ApiKey.Scope.values)
        )
        application = application_option(options["application"])
        try:
            days = options["expires_in_days"]
            if days is not None and days <= 0:
                raise CommandError("--expires-in-days must be positive")
            api_key, key = api_key_create(
                name=options["name"],
                scopes=scopes,
                application=application,
                expires_at=timezone.now() + timedelta(days=days) if days is not None else None,
                actor="cli:create_api_key",
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stderr.write(
            f"Created API key {api_key.prefix!r} ({api_key.name}) with scopes "
            f"{', '.join(scopes)}. Store it now: it cannot be shown again."
        )
        self.stdout.write(key)
