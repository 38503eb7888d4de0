"""App config for the `webhooks` app."""

from __future__ import annotations

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "webhooks"
    verbose_name = "Consumers and endpoints"

    def ready(self) -> None:
        from webhooks_project import generation

        from .models import ApiKey, Application, Endpoint, Source

        # what requests read on every call is cached until one of these changes
        generation.watch(
            [Application, ApiKey, Source, Endpoint], volatile={"last_used_at", "failing_since"}
        )
