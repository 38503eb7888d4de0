"""Operational events: what the service itself tells subscribed endpoints about their health.

They fan out like business events, but only to endpoints that list the type explicitly: an
endpoint subscribed to "all types" does not get them unasked.
"""

from __future__ import annotations

ENDPOINT_DISABLED = "endpoint.disabled"
WEBHOOK_TEST = "webhook.test"

OPERATIONAL_EVENT_TYPES = frozenset({ENDPOINT_DISABLED, WEBHOOK_TEST})

# The payload of `endpoint.disabled` (its JSON Schema is registered by a migration).
ENDPOINT_DISABLED_SCHEMA = {
    "type": "object",
    "required": ["endpoint_id", "url", "reason", "disabled_at"],
    "properties": {
        "endpoint_id": {"type": "string"},
        "url": {"type": "string"},
        "application": {"type": ["string", "null"]},
        "reason": {"type": "string"},
        "disabled_at": {"type": "string", "format": "date-time"},
        "failing_since": {"type": ["string", "null"], "format": "date-time"},
    },
    "additionalProperties": False,
}
ENDPOINT_DISABLED_DESCRIPTION = (
    "Operational: an endpoint was disabled automatically (410 Gone, or every attempt failed for "
    "WEBHOOKS_DISABLE_AFTER). Sent only to endpoints that subscribe to it by name."
)

# The payload of `webhook.test`, sent to one endpoint on request (API, admin, command).
WEBHOOK_TEST_SCHEMA = {
    "type": "object",
    "required": ["endpoint_id", "message", "sent_at"],
    "properties": {
        "endpoint_id": {"type": "string"},
        "message": {"type": "string"},
        "sent_by": {"type": "string"},
        "sent_at": {"type": "string", "format": "date-time"},
    },
}
WEBHOOK_TEST_DESCRIPTION = (
    "Operational: a test event sent to one endpoint on request, to check that it receives and "
    "verifies deliveries. Never fanned out."
)
