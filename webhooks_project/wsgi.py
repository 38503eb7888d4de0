"""WSGI entry point for gunicorn."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from webhooks_project import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webhooks_project.settings")

# before the handler loads its middleware: Django's instrumentation adds one (off unless set)
tracing.setup("web")
application = get_wsgi_application()
