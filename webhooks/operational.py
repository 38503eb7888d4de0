"""Operational events: what the service itself tells subscribed endpoints about their health.

They fan out like business events, but only to endpoints that list the type explicitly: an
endpoint subscribed to "all types" does not get them unasked.
"""

from __future__ import annotations

ENDPOINT_DISABLED = "endpoint.disabled"
WEBHOOK_TEST = "webhook.test"

DELIVERY_DEAD = "delivery.dead"
ENDPOINT_FAILING = "endpoint.failing"
ENDPOINT_RECOVERED = "endpoint.recovered"
NOTICE_TYPES = (DELIVERY_DEAD, ENDPOINT_FAILING, ENDPOINT_RECOVERED)

OPERATIONAL_EVENT_TYPES = frozenset({ENDPOINT_DISABLED, WEBHOOK_TEST, *NOTICE_TYPES})

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

# Failure notices (Svix's message.attempt.exhausted / message.attempt.failing): sent before
# anything is disabled, to endpoints that subscribe to them by name (README "Routing").

# A failure run is announced when it starts, and again once it has lasted each of these.
FAILING_THRESHOLDS = (("1h", 3600), ("24h", 24 * 3600))

_ENDPOINT = {
    "endpoint_id": {"type": "string"},
    "url": {"type": "string"},
    "application": {"type": ["string", "null"]},
}
DELIVERY_DEAD_SCHEMA = {
    "type": "object",
    "required": ["delivery_id", "event_id", "event_type", "endpoint_id", "attempts", "dead_at"],
    "properties": {
        **_ENDPOINT,
        "delivery_id": {"type": "string"},
        "event_id": {"type": "string"},
        "event_type": {"type": "string"},
        "attempts": {"type": "integer"},
        "last_status_code": {"type": ["integer", "null"]},
        "reason": {"type": "string"},
        "dead_at": {"type": "string", "format": "date-time"},
        "suppressed": {"type": "integer"},
    },
    "additionalProperties": False,
}
DELIVERY_DEAD_DESCRIPTION = (
    "Operational: a delivery used up its attempts and waits as a dead letter. At most one a "
    "minute per endpoint; `suppressed` counts those not announced since the last one."
)
ENDPOINT_FAILING_SCHEMA = {
    "type": "object",
    "required": ["endpoint_id", "url", "failing_since", "threshold"],
    "properties": {
        **_ENDPOINT,
        "failing_since": {"type": "string", "format": "date-time"},
        "threshold": {"enum": ["started", *(name for name, _ in FAILING_THRESHOLDS)]},
        "disabled_after": {"type": "string", "format": "date-time"},
    },
    "additionalProperties": False,
}
ENDPOINT_FAILING_DESCRIPTION = (
    "Operational: an endpoint that was healthy started failing (threshold `started`), and is "
    "still failing after 1 h and after 24 h; `disabled_after` is when it will be disabled if "
    "nothing succeeds."
)
ENDPOINT_RECOVERED_SCHEMA = {
    "type": "object",
    "required": ["endpoint_id", "url", "failing_since", "recovered_at"],
    "properties": {
        **_ENDPOINT,
        "failing_since": {"type": "string", "format": "date-time"},
        "recovered_at": {"type": "string", "format": "date-time"},
    },
    "additionalProperties": False,
}
ENDPOINT_RECOVERED_DESCRIPTION = (
    "Operational: an endpoint that was failing answered with success again."
)
NOTICE_SCHEMAS = {
    DELIVERY_DEAD: (DELIVERY_DEAD_SCHEMA, DELIVERY_DEAD_DESCRIPTION),
    ENDPOINT_FAILING: (ENDPOINT_FAILING_SCHEMA, ENDPOINT_FAILING_DESCRIPTION),
    ENDPOINT_RECOVERED: (ENDPOINT_RECOVERED_SCHEMA, ENDPOINT_RECOVERED_DESCRIPTION),
}
