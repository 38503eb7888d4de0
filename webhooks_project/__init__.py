"""Django project package; exposes the Celery app so `celery -A webhooks_project` finds it."""

from __future__ import annotations

from .celery import app as celery_app

__all__ = ["celery_app"]
