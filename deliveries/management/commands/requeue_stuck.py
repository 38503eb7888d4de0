"""`manage.py requeue_stuck`: run one sweep by hand (the beat job does it every few seconds)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from deliveries.services import deliveries_requeue_stuck


class Command(BaseCommand):
    help = "Take back expired leases and publish due deliveries that have no live message."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(json.dumps(deliveries_requeue_stuck()))
