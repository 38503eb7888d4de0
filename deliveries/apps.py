"""App config for the `deliveries` app."""

from __future__ import annotations

from django.apps import AppConfig


class DeliveriesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "deliveries"
    verbose_name = "Events and deliveries"
