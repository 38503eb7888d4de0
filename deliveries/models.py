"""Events, one Delivery per (event, endpoint), every DeliveryAttempt, and DeadLetters.

Events, deliveries and attempts are partitioned by day (`deliveries.services.partitions`): a
unique index there must include the partition key, so the rules that cannot are kept elsewhere
(idempotency keys in `IdempotencyKey`; `(event, endpoint)` by a unique index on each day's
deliveries, which is whole-table unique because an event's deliveries share its day), and no
foreign key points into a partitioned table (`db_constraint=False`; the ORM still cascades).

A Delivery moves pending -> in_flight -> succeeded, or back to pending with `next_attempt_at`
(retryable failure), or to failed (not retryable) / dead (attempts exhausted) with a DeadLetter.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.utils import timezone

from deliveries.partition_keys import LEGACY_END, delivery_id_span
from schemas_app.models import EventType, SchemaVersion
from webhooks.models import Application, Endpoint
from webhooks_project.identifiers import new_id


def _event_id() -> str:
    return new_id("evt")


class Event(models.Model):
    """A business event accepted from an internal system, already validated against its schema."""

    # time-ordered, and the partition key: byte order ("C"), so a day is one range of ids
    id = models.CharField(
        primary_key=True, max_length=40, default=_event_id, editable=False, db_collation="C"
    )
    event_type = models.ForeignKey(
        EventType,
        to_field="name",
        db_column="type",
        on_delete=models.PROTECT,
        related_name="events",
        db_index=False,  # event_type_newest_idx leads with it
    )
    schema_version = models.ForeignKey(
        SchemaVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="events"
    )
    application = models.ForeignKey(
        Application,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="events",
        db_index=False,  # event_app_newest_idx leads with it
    )
    data = models.JSONField()
    # NULL (not "") means "no key"; the key is unique per application through IdempotencyKey.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    # SHA-256 of the request's type, data and occurred_at (canonical JSON), kept with a key:
    # the same key with another body is a conflict, not a silent replay of the first answer.
    request_hash = models.CharField(max_length=64, blank=True, default="", editable=False)
    occurred_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    # Routing (README "Routing"): the channels it was sent on, and the endpoints it was aimed
    # at; null: none given (every subscribed endpoint)
    channels = ArrayField(models.CharField(max_length=128), null=True, blank=True)
    endpoints = ArrayField(models.CharField(max_length=40), null=True, blank=True)
    # Ordered delivery: endpoints with ordering "per_key" get the events of one key one at a
    # time, in the order accepted (services/ordering.py). Null: no key.
    ordering_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    # Tracing (webhooks_project/tracing.py): the W3C traceparent of the span that accepted it,
    # so every attempt of every delivery joins that trace. Null: tracing was off.
    traceparent = models.CharField(max_length=100, null=True, blank=True, editable=False)  # noqa: DJ001

    class Meta:
        ordering = ["-created_at"]
        # the API's pages, newest first (ids are time-ordered), by type and by application
        indexes = [
            models.Index(fields=["event_type", "-id"], name="event_type_newest_idx"),
            models.Index(fields=["application", "-id"], name="event_app_newest_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.event_type_id}"


class DeliveryQuerySet(models.QuerySet["Delivery"]):
    def of_events(self, event_ids: Iterable[str]) -> DeliveryQuerySet:
        """The deliveries of these events, read from their days' partitions only (a plain
        `event_id` filter would look in every day's)."""
        ids = list(event_ids)
        low, high = delivery_id_span(ids)
        return self.filter(Q(id__gte=low, id__lt=high) | Q(id__lt=LEGACY_END), event_id__in=ids)


class Delivery(models.Model):
    """The delivery of one event to one endpoint, and where it stands."""

    class Status(models.TextChoices):
        PENDING = "pending"
        IN_FLIGHT = "in_flight"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        DEAD = "dead"

    # (day of the event << DAY_SHIFT) + a sequence: the partition key (services.partitions)
    id = models.BigAutoField(primary_key=True)
    event = models.ForeignKey(
        Event,
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_constraint=False,
        db_index=False,  # each day's unique (event_id, endpoint_id) index leads with it
    )
    endpoint = models.ForeignKey(
        Endpoint,
        on_delete=models.CASCADE,
        related_name="deliveries",
        db_index=False,  # delivery_endpoint_newest_idx leads with it
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    # When a task message for the current attempt was last published (None: parked, no message).
    # The sweeper re-publishes a due row only when this is older than WEBHOOKS_REDISPATCH_AFTER.
    dispatched_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    # Attempts made before the latest replay: the retry schedule restarts after a replay.
    retry_base = models.PositiveSmallIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # The body as sent (after transformation and masking, up to WEBHOOKS_STORED_BODY_MAX_BYTES),
    # stored once, by the first attempt recorded; a later attempt that sent another body keeps
    # its own (DeliveryAttempt.request_body). The digest is of this stored text.
    request_body = models.TextField(null=True, blank=True, editable=False)  # noqa: DJ001
    request_body_digest = models.CharField(max_length=32, null=True, blank=True, editable=False)  # noqa: DJ001
    # When the bodies sent and the answers' bodies and headers of this (succeeded) delivery were
    # cleared, WEBHOOKS_PAYLOAD_RETENTION_DAYS after it succeeded (services.payloads); the rows
    # stay until the day is dropped.
    payload_expired_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Ordered delivery (services/ordering.py): to an endpoint with ordering "per_key", the
    # event's key and this delivery's place among the key's deliveries to that endpoint (1, 2,
    # ...: the `webhook-sequence` header). A pending one whose turn has not come has no
    # next_attempt_at: it waits for its key, and nothing publishes it until then.
    ordering_key = models.CharField(max_length=200, null=True, blank=True, editable=False)  # noqa: DJ001
    sequence = models.BigIntegerField(null=True, blank=True, editable=False)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "deliveries"
        # unique (event, endpoint): an index on each day partition (services.partitions)
        indexes = [
            # The sweeper: pending rows that are due, and in-flight rows whose lease ran out.
            models.Index(
                fields=["next_attempt_at"], condition=Q(status="pending"), name="delivery_due_idx"
            ),
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(status="in_flight"),
                name="delivery_lease_idx",
            ),
            models.Index(fields=["endpoint", "status"], name="delivery_endpoint_status_idx"),
            models.Index(fields=["status", "completed_at"], name="delivery_status_done_idx"),
            # the API's pages, newest first, by endpoint and by status
            models.Index(fields=["endpoint", "-id"], name="delivery_endpoint_newest_idx"),
            models.Index(fields=["status", "-id"], name="delivery_status_newest_idx"),
            # ordered delivery: a key's pending deliveries in order (its head first), the
            # ones ended without success (which may hold it), and the few not waiting
            models.Index(
                fields=["endpoint", "ordering_key", "sequence"],
                condition=Q(ordering_key__isnull=False, status="pending"),
                name="delivery_key_pending_idx",
            ),
            models.Index(
                fields=["endpoint", "ordering_key", "sequence"],
                condition=Q(ordering_key__isnull=False, status__in=["failed", "dead"]),
                name="delivery_key_ended_idx",
            ),
            models.Index(
                fields=["endpoint", "ordering_key"],
                condition=Q(
                    ordering_key__isnull=False, status="pending", next_attempt_at__isnull=False
                ),
                name="delivery_key_ready_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} of {self.event_id} to {self.endpoint_id}: {self.status}"


class DeliveryAttempt(models.Model):
    """One HTTP try of a delivery: the audit log. Unique on (delivery, number)."""

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded"
        RETRYING = "retrying"  # failed, another attempt is scheduled
        FAILED = "failed"  # failed, no further attempt
        # its worker was lost (killed, or its lease expired) before it recorded the answer:
        # the request may or may not have reached the consumer
        UNKNOWN = "unknown"

    delivery = models.ForeignKey(
        Delivery,
        on_delete=models.CASCADE,
        related_name="attempts",
        db_constraint=False,
        db_index=False,  # attempt_delivery_number leads with it
    )
    number = models.PositiveSmallIntegerField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    started_at = models.DateTimeField()
    duration_ms = models.FloatField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True, default="")
    error_class = models.CharField(max_length=40, blank=True, default="")
    request_headers = models.JSONField(default=dict, blank=True)
    # The body exactly as sent (after transformation and masking), up to
    # WEBHOOKS_STORED_BODY_MAX_BYTES, when it is not the delivery's `request_body` (NULL: it is;
    # a body is stored once per delivery, not once per try); `request_body_bytes` is its size.
    request_body = models.TextField(null=True, blank=True)  # noqa: DJ001
    request_body_bytes = models.PositiveIntegerField(null=True, blank=True)
    response_headers = models.JSONField(default=dict, blank=True)
    response_body = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="attempt_delivery_number")
        ]
        indexes = [
            models.Index(fields=["started_at"], name="attempt_started_idx"),
            # not unique in the database (it is not the partition key); the sequence makes it so
            models.Index(fields=["id"], name="attempt_id_idx"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}: {self.outcome}"

    @property
    def sent_body(self) -> str | None:
        """The body this attempt sent, as stored: its own, or its delivery's; None once it has
        expired (WEBHOOKS_PAYLOAD_RETENTION_DAYS)."""
        if self.request_body is not None:
            return self.request_body
        if self.delivery.payload_expired_at is not None:
            return None
        return self.delivery.request_body or ""


class DeadLetter(models.Model):
    """A delivery that ended without success; replaying puts it back to pending.

    A delivery that dies again after a replay gets a new dead letter; the old one keeps who
    replayed it and when.
    """

    delivery = models.ForeignKey(
        Delivery, on_delete=models.CASCADE, related_name="dead_letters", db_constraint=False
    )
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="dead_letters")
    event_type = models.CharField(max_length=200, db_index=True)
    reason = models.CharField(max_length=500)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    # when it was handled and by whom: replayed, or skipped (`skipped`: its delivery stays as it
    # ended and an ordering key it held moves on)
    replayed_at = models.DateTimeField(null=True, blank=True)
    replayed_by = models.CharField(max_length=200, blank=True, default="")
    skipped = models.BooleanField(default=False, db_default=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # At most one waiting (not yet replayed) dead letter per delivery.
            models.UniqueConstraint(
                fields=["delivery"],
                condition=Q(replayed_at__isnull=True),
                name="dead_letter_one_waiting",
            )
        ]
        indexes = [
            models.Index(
                fields=["endpoint", "created_at"],
                condition=Q(replayed_at__isnull=True),
                name="dead_letter_waiting_idx",
            ),
            # the API's pages of waiting dead letters, newest first, and by endpoint
            models.Index(
                fields=["-id"],
                condition=Q(replayed_at__isnull=True),
                name="dead_letter_newest_idx",
            ),
            models.Index(
                fields=["endpoint", "-id"],
                condition=Q(replayed_at__isnull=True),
                name="dead_letter_ep_newest_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"dead letter of delivery {self.delivery_id}: {self.reason}"


class OrderingKey(models.Model):
    """The turn of one ordering key of one ordered endpoint: the delivery of it in flight (at
    most one: a claim takes this slot), and where its deliveries start (services/ordering.py).
    Its sequence counter is a row of its own (`OrderingSequence`), so that the claims and the
    recording of answers never wait for an ingestion that holds the counter."""

    endpoint = models.ForeignKey(
        Endpoint, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    key = models.CharField(max_length=200)
    in_flight = models.BigIntegerField(null=True, blank=True)  # a delivery id
    claimed_at = models.DateTimeField(null=True, blank=True)
    # No delivery of the key that is not done has a lower id (null: none is): the first of
    # its day partitions to read. Lowered when deliveries are made or reopened, cleared when
    # none is left.
    low_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "key"], name="ordering_key_unique")
        ]
        indexes = [
            models.Index(
                fields=["claimed_at"],
                condition=Q(in_flight__isnull=False),
                name="ordering_key_busy_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint_id} key {self.key!r}"


class OrderingSequence(models.Model):
    """The last sequence given to one ordering key of one ordered endpoint: taken by ingestion
    under this row's lock, held until the events commit (services/ordering.py)."""

    endpoint = models.ForeignKey(
        Endpoint, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    key = models.CharField(max_length=200)
    last_sequence = models.BigIntegerField(default=0)
    used_at = models.DateTimeField(default=timezone.now)  # when it last gave a sequence

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "key"], name="ordering_sequence_unique")
        ]
        indexes = [models.Index(fields=["used_at"], name="ordering_sequence_used_idx")]

    def __str__(self) -> str:
        return f"{self.endpoint_id} key {self.key!r} at {self.last_sequence}"


class PayloadExpiredDay(models.Model):
    """A day partition whose succeeded deliveries have had their payloads cleared
    (services.payloads): the job passes over each day once."""

    day = models.DateField(primary_key=True)
    expired_at = models.DateTimeField(default=timezone.now)
    deliveries = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"payloads of {self.day} expired"


class IdempotencyKey(models.Model):
    """An idempotency key in use: unique per application, which a partitioned events table
    cannot enforce. Goes with its event (services.partitions, services.retention)."""

    application = models.ForeignKey(
        Application, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    key = models.CharField(max_length=200)
    event_id = models.CharField(max_length=40, db_collation="C", db_index=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["application", "key"], nulls_distinct=False, name="idempotency_key_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.key} -> {self.event_id}"


class _Counters(models.Model):
    """What the metrics are made of: finished deliveries by outcome, attempts, and two
    histograms (bucket counts over `deliveries.metrics.BOUNDS_MS`)."""

    succeeded = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)  # ended without retry (4xx, 410, refusals)
    dead = models.BigIntegerField(default=0)  # every attempt used up
    dead_lettered = models.BigIntegerField(default=0)
    attempts = models.BigIntegerField(default=0)  # HTTP requests made
    retried = models.BigIntegerField(default=0)  # failed attempts followed by another one
    # tries whose worker died before recording them (the sweeper records them as `unknown`)
    lost = models.BigIntegerField(default=0, db_default=0)
    # (event, endpoint) pairs an endpoint's filter kept from becoming deliveries (at ingest)
    filtered = models.BigIntegerField(default=0, db_default=0)
    attempt_ms_sum = models.FloatField(default=0.0)
    attempt_hist = ArrayField(models.BigIntegerField(), default=list)
    latency_ms_sum = models.FloatField(default=0.0)  # event accepted -> consumer's 2xx
    latency_hist = ArrayField(models.BigIntegerField(), default=list)
    # the largest of each (0: none recorded, or rows from before these were kept): percentiles
    # read from the histograms are never above it
    attempt_ms_max = models.FloatField(default=0.0, db_default=0.0)
    latency_ms_max = models.FloatField(default=0.0, db_default=0.0)

    class Meta:
        abstract = True


class DeliveryStat(_Counters):
    """One bucket (a minute, a quarter of an hour or an hour: `span` seconds) of one endpoint
    and event type: the rollup the metrics are read from.

    Written at every span by the delivery path in the transaction that records the outcome, so
    it is exact, and each window reads the coarsest span that draws its series (a week is 168
    hourly rows per endpoint and type). Kept after `prune` deletes the attempts. Endpoint ids
    are plain strings: the history outlives a deleted endpoint.
    """

    span = models.PositiveIntegerField()  # seconds
    bucket = models.DateTimeField()
    endpoint_id = models.CharField(max_length=40)
    event_type = models.CharField(max_length=200)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["span", "bucket", "endpoint_id", "event_type"], name="delivery_stat_key"
            )
        ]
        # one endpoint's rows (the endpoint list's health columns, `?endpoint=`)
        indexes = [
            models.Index(fields=["endpoint_id", "span", "bucket"], name="delivery_stat_endpoint")
        ]

    def __str__(self) -> str:
        return f"{self.bucket:%Y-%m-%d %H:%M}/{self.span}s {self.endpoint_id} {self.event_type}"


class DeliveryTotal(_Counters):
    """All-time counters per endpoint and event type, for Prometheus (counters never go down,
    so they cannot be read from a pruned rollup)."""

    endpoint_id = models.CharField(max_length=40)
    event_type = models.CharField(max_length=200)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["endpoint_id", "event_type"], name="delivery_total_key")
        ]

    def __str__(self) -> str:
        return f"{self.endpoint_id} {self.event_type}"
