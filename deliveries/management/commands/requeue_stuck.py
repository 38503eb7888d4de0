"""`manage.py requeue_stuck`: run one sweep by hand (the beat job does it every few seconds)."""

from __future__ import annotations

import json
from typing import Any

from deliveries.services.sweeper import deliveries_requeue_stuck
from webhooks.management.base import Command as SafeCommand


class Command(SafeCommand):
    help = "Take back expired leases and publish due deliveries that have no live message."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(json.dumps(deliveries_requeue_stuck()))
