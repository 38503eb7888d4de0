"""The Celery application; its configuration lives in settings.py under the CELERY_ prefix."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import beat_init, worker_init

from . import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webhooks_project.settings")

app = Celery("webhooks_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _trace_worker(**_: object) -> None:
    """Tracing in the worker, before its pool forks (off unless OTEL_EXPORTER_OTLP_ENDPOINT)."""
    tracing.setup("worker")


@beat_init.connect
def _trace_beat(**_: object) -> None:
    tracing.setup("beat")
