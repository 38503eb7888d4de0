"""`manage.py bootstrap`: the first admin user and the first API key, once.

Idempotent: run it again and it creates nothing (an admin user exists, a usable key named
`bootstrap` exists) and says so. Meant for a fresh installation, e.g. with compose:
`docker compose run --rm web python manage.py bootstrap`. What it creates is printed once, on
stdout, as `ADMIN_USERNAME=...`, `ADMIN_PASSWORD=...` and `API_KEY=...` lines; explanations go
to stderr.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandParser
from django.db import transaction

from webhooks.management.base import Command as SafeCommand
from webhooks.models import ApiKey
from webhooks.services import api_key_create

KEY_NAME = "bootstrap"


class Command(SafeCommand):
    help = (
        "Create the first admin user and an API key with every scope, if there are none yet; "
        "print them once. The password is DJANGO_SUPERUSER_PASSWORD if set, else generated."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin", help="the admin user's name")
        parser.add_argument("--email", default="", help="the admin user's email")

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        with transaction.atomic():
            if user_model.objects.filter(is_superuser=True).exists():
                self.stderr.write("An admin user exists: none created.")
            else:
                password = os.environ.get("DJANGO_SUPERUSER_PASSWORD") or secrets.token_urlsafe(18)
                user_model.objects.create_superuser(
                    username=options["username"], email=options["email"], password=password
                )
                self.stderr.write(
                    f"Created admin user {options['username']!r}: sign in at /admin/ "
                    "(the password is shown this once)."
                )
                self.stdout.write(f"ADMIN_USERNAME={options['username']}")
                self.stdout.write(f"ADMIN_PASSWORD={password}")
            existing = ApiKey.objects.get_usable_keys().filter(name=KEY_NAME).first()
            if existing is not None:
                self.stderr.write(
                    f"An API key named {KEY_NAME!r} exists (prefix {existing.prefix}): none "
                    "created; make another with `manage.py create_api_key NAME`."
                )
                return
            _, key = api_key_create(
                name=KEY_NAME, scopes=list(ApiKey.Scope.values), actor="cli:bootstrap"
            )
            self.stderr.write(
                f"Created API key {KEY_NAME!r} with every scope (shown this once): send it as "
                "'Authorization: Bearer <key>'."
            )
            self.stdout.write(f"API_KEY={key}")
