"""`manage.py create_source NAME [--application UID] [--unsigned]`: an event source, its signing
secret and its API key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from webhooks.management.arguments import application_option
from webhooks.management.base import Command as SafeCommand
from webhooks.services import source_create


class Command(SafeCommand):
    help = (
        "Create an event source with its signing secret and an events:write API key, and print "
        "both (shown only this once). Its requests must carry Standard Webhooks headers signed "
        "with the secret unless --unsigned."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--application", default=None, help="limit its key to this app uid")
        parser.add_argument(
            "--unsigned", action="store_true", help="accept its requests without a signature"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        application = application_option(options["application"])
        created = source_create(
            name=options["name"],
            require_signature=not options["unsigned"],
            application=application,
            actor="cli:create_source",
        )
        self.stderr.write(
            f"Created source {created.source.id} ({created.source.name}). Store both now: "
            "they cannot be shown again."
        )
        self.stdout.write(f"signing secret: {created.secret}")
        self.stdout.write(f"api key: {created.key}")
