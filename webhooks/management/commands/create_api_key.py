"""`manage.py create_api_key NAME [--scopes a,b] [--application UID]`: prints the key last."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from webhooks.management.arguments import application_option
from webhooks.management.base import Command as SafeCommand
from webhooks.management.base import one_line, positive_days
from webhooks.models import ApiKey
from webhooks.services import api_key_create


class Command(SafeCommand):
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
            "--expires-in-days",
            type=positive_days,
            default=None,
            help="the key stops working after this many days (above 0, at most 36500)",
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
            api_key, key = api_key_create(
                name=options["name"],
                scopes=scopes,
                application=application,
                expires_at=timezone.now() + timedelta(days=days) if days is not None else None,
                actor="cli:create_api_key",
            )
        except ValidationError as exc:
            raise CommandError(one_line(exc)) from exc
        self.stderr.write(
            f"Created API key {api_key.prefix!r} ({api_key.name}) with scopes "
            f"{', '.join(scopes)}. Store it now: it cannot be shown again."
        )
        self.stdout.write(key)
