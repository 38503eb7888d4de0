"""`manage.py send_test_event ENDPOINT`: send one signed `webhook.test` event to an endpoint."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from deliveries.services.endpoints import EndpointNotSendable, endpoint_send_test
from webhooks.management.base import Command as SafeCommand
from webhooks.models import Endpoint


class Command(SafeCommand):
    help = "Send a signed webhook.test event to one endpoint, delivered like any other event."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("endpoint", help="the endpoint id (ep_...)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            sent = endpoint_send_test(endpoint_id=options["endpoint"], actor="cli:send_test_event")
        except Endpoint.DoesNotExist as exc:
            raise CommandError(f"no endpoint {options['endpoint']!r}") from exc
        except EndpointNotSendable as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"queued webhook.test event {sent.event_id} as delivery {sent.delivery_id}; "
            f"follow it with GET /api/v1/deliveries/{sent.delivery_id}/attempts/"
        )
