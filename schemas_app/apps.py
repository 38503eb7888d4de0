"""App config for the `schemas_app` app."""

from __future__ import annotations

from django.apps import AppConfig


class SchemasAppConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "schemas_app"
    verbose_name = "Event types and schemas"

    def ready(self) -> None:
        from webhooks_project import generation

        from .models import EventType, SchemaVersion

        generation.watch([EventType, SchemaVersion])
