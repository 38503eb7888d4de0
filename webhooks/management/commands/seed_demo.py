"""`manage.py seed_demo [--port 9100]`: a sample event type and an endpoint on the local
listener, so a newcomer sees a signed delivery within a minute of `make run`."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import CommandParser

from schemas_app.models import EventType
from schemas_app.services import event_type_create
from webhooks.management.base import Command as SafeCommand
from webhooks.models import Endpoint
from webhooks.services import endpoint_create

DEMO_TYPE = "demo.order.created"
SCHEMA = {
    "type": "object",
    "required": ["order", "customer"],
    "properties": {
        "order": {
            "type": "object",
            "required": ["id", "total_cents", "currency"],
            "properties": {
                "id": {"type": "string"},
                "total_cents": {"type": "integer", "minimum": 0},
                "currency": {"type": "string", "minLength": 3, "maxLength": 3},
            },
        },
        "customer": {
            "type": "object",
            "properties": {"email": {"type": "string", "format": "email"}},
        },
    },
}
EXAMPLE = {
    "order": {"id": "o-1001", "total_cents": 4200, "currency": "EUR"},
    "customer": {"email": "ada@example.com"},
}


class Command(SafeCommand):
    help = (
        "Register the demo.order.created event type (with a transformation and masking) and an "
        "endpoint on the local listener; print how to listen and send. Safe to run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=9100, help="the listener's port")

    def handle(self, *args: Any, **options: Any) -> None:
        if not EventType.objects.filter(name=DEMO_TYPE).exists():
            event_type_create(
                name=DEMO_TYPE,
                description="Demo: an order was placed (seed_demo)",
                schema=SCHEMA,
                example=EXAMPLE,
                sensitive_fields=["/customer/email"],
                transform={
                    "order_id": "order.id",
                    "total": {"amount": "order.total_cents", "currency": "order.currency"},
                    "customer_email": "customer.email",
                },
                masking=[{"path": "/customer_email", "action": "mask", "keep": 11}],
                actor="cli:seed_demo",
            )
        url = f"http://127.0.0.1:{options['port']}/demo"
        endpoint = Endpoint.objects.filter(url=url, event_types=[DEMO_TYPE]).first()
        if endpoint is None:
            endpoint, _ = endpoint_create(
                url=url,
                description="Demo endpoint on `manage.py listen` (seed_demo)",
                event_types=[DEMO_TYPE],
                actor="cli:seed_demo",
            )
        self.stdout.write(
            f"Demo ready: event type {DEMO_TYPE}, endpoint {endpoint.pk} -> {url}\n"
            f"1. In a terminal: python manage.py listen --port {options['port']} "
            f"--endpoint {endpoint.pk}\n"
            "2. Send an event (KEY from .run/dev-api-key under make run):\n"
            f"   curl -s -X POST http://127.0.0.1:{os.environ.get('PORT', '8000')}/api/v1/events/ "
            '-H "Authorization: Bearer $KEY" -H "Content-Type: application/json" '
            f'-d \'{{"type": "{DEMO_TYPE}", "data": '
            '{"order": {"id": "o-1001", "total_cents": 4200, "currency": "EUR"}, '
            '"customer": {"email": "ada@example.com"}}}\'\n'
            f"   or: python manage.py send_test_event {endpoint.pk}\n"
        )
