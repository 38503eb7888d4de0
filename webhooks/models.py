"""Applications (consumer organisations), their endpoints and signing secrets, and API keys."""

from __future__ import annotations

from typing import Any, ClassVar, cast

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.core.validators import MinValueValidator, RegexValidator, URLValidator
from django.db import models
from django.utils import timezone
from rest_framework_api_key.models import AbstractAPIKey, APIKeyManager

from audit.models import AuditRecord  # noqa: F401 - the audit log's model is this app's (app_label)
from webhooks_project.identifiers import new_id

uid_validator = RegexValidator(
    r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]{0,63}$",
    "Use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit.",
)


def _endpoint_id() -> str:
    return new_id("ep")


accent_validator = RegexValidator(r"^#[0-9a-fA-F]{6}$", "Give a colour like #1f5fbf.")


class Application(models.Model):
    """A consumer organisation; its endpoints receive only events posted for it."""

    uid = models.CharField(max_length=64, unique=True, validators=[uid_validator])
    name = models.CharField(max_length=200)
    # The partner portal's branding for this application's partners (empty: the settings')
    portal_name = models.CharField(max_length=100, blank=True, default="")
    portal_logo_url = models.URLField(
        max_length=500, blank=True, default="", validators=[URLValidator(schemes=["https", "http"])]
    )
    portal_accent = models.CharField(
        max_length=7, blank=True, default="", validators=[accent_validator]
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["uid"]

    def __str__(self) -> str:
        return self.uid


class Endpoint(models.Model):
    """A URL that receives signed POSTs for the event types it subscribes to (none = all)."""

    id = models.CharField(primary_key=True, max_length=40, default=_endpoint_id, editable=False)
    application = models.ForeignKey(
        Application, null=True, blank=True, on_delete=models.CASCADE, related_name="endpoints"
    )
    url = models.URLField(max_length=2048)
    description = models.CharField(max_length=500, blank=True, default="")
    event_types = ArrayField(models.CharField(max_length=200), default=list, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True, default="")
    disabled_at = models.DateTimeField(null=True, blank=True)
    # Start of the current run of failed attempts (None after any success): the health job
    # disables an endpoint that has failed without a break for WEBHOOKS_DISABLE_AFTER.
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    headers = models.JSONField(default=dict, blank=True)
    rate_limit_per_second = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Requests per second across all workers; over it, deliveries wait. Empty: none.",
    )
    retry_schedule = ArrayField(models.PositiveIntegerField(), null=True, blank=True)
    timeout_seconds = models.PositiveSmallIntegerField(null=True, blank=True)

    class SignatureScheme(models.TextChoices):
        HMAC = "hmac-sha256", "HMAC-SHA256 (v1, a shared secret)"
        ED25519 = "ed25519", "Ed25519 (v1a, consumers verify with a public key)"

    signature_scheme = models.CharField(
        max_length=20, choices=SignatureScheme.choices, default=SignatureScheme.HMAC
    )
    transforms = models.JSONField(
        default=dict,
        blank=True,
        help_text="per event type name, a mapping used instead of the type's for this endpoint",
    )
    masking = models.JSONField(
        default=dict,
        blank=True,
        help_text="per event type name, masking rules used instead of the type's",
    )
    # Content filters (webhooks/filters.py): an event is delivered here only if its data
    # matches `filter` and, for its type, `filters[type]`. Null / {}: no condition.
    filter = models.JSONField(
        null=True, blank=True, help_text="a condition over the event's data, for every type"
    )
    filters = models.JSONField(
        default=dict, blank=True, help_text="per event type name, a condition over its data"
    )
    channels = ArrayField(
        models.CharField(max_length=128),
        default=list,
        blank=True,
        help_text="only events sent on one of these channels (empty: events on any or none)",
    )
    encryption_key = models.JSONField(
        null=True, blank=True, help_text="public JWK that `encrypt` masking encrypts for"
    )
    # Ordered delivery (README "Routing"): per ordering key, one delivery at a time, in the
    # order the events were accepted (deliveries/services/ordering.py)

    class Ordering(models.TextChoices):
        NONE = "none", "none: in parallel, in any order"
        PER_KEY = "per_key", "per key: one at a time per ordering_key, in the order accepted"

    class OnDead(models.TextChoices):
        SKIP = "skip", "skip: the next delivery of the key proceeds"
        BLOCK = "block", "block: the key waits until the dead letter is replayed or skipped"

    ordering = models.CharField(max_length=10, choices=Ordering.choices, default=Ordering.NONE)
    ordering_on_dead = models.CharField(
        max_length=10,
        choices=OnDead.choices,
        default=OnDead.SKIP,
        help_text="when an ordered delivery fails for good: skip it, or hold its key",
    )
    trace_propagation = models.BooleanField(
        default=False,
        help_text="send the W3C traceparent header of each request's span (when tracing is on)",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            # Fan-out: enabled endpoints of one application (or of none) subscribed to a type.
            models.Index(fields=["application", "enabled"], name="endpoint_fanout_idx"),
            GinIndex(fields=["event_types"], name="endpoint_event_types_gin"),
            models.Index(
                fields=["failing_since"],
                condition=models.Q(enabled=True, failing_since__isnull=False),
                name="endpoint_failing_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.url}"


class EndpointSecret(models.Model):
    """A signing secret; every secret not yet expired signs (several overlap during rotation).

    `secret` holds a Fernet token of the `whsec_` secret (webhooks/crypto.py), never the secret.
    """

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="secrets")
    secret = models.CharField(max_length=500, help_text="encrypted; see webhooks/crypto.py")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["endpoint", "expires_at"], name="secret_active_idx")]

    def __str__(self) -> str:
        return f"secret of {self.endpoint_id} from {self.created_at:%Y-%m-%d %H:%M}"


def _source_id() -> str:
    return new_id("src")


class Source(models.Model):
    """An internal system that sends events. When `require_signature` is on, every write made
    with one of its API keys must also carry Standard Webhooks headers signed with its secret
    (token *and* signature), within the timestamp tolerance, with a `webhook-id` not seen in
    that window."""

    id = models.CharField(primary_key=True, max_length=40, default=_source_id, editable=False)
    name = models.CharField(max_length=200)
    require_signature = models.BooleanField(default=True)
    secret = models.CharField(max_length=500, help_text="encrypted; see webhooks/crypto.py")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class ApiKeyManager(APIKeyManager):
    def get_usable_keys(self) -> models.QuerySet:
        # authentication reads the key's source and application on every request
        return super().get_usable_keys().select_related("source", "application")

    # the library types these as its abstract model; they return ours
    def get_from_key(self, key: str) -> ApiKey:
        return cast(ApiKey, super().get_from_key(key))

    def create_key(self, **kwargs: Any) -> tuple[ApiKey, str]:
        api_key, key = super().create_key(**kwargs)
        return cast(ApiKey, api_key), key


class ApiKey(AbstractAPIKey):
    """An API key for sources and operators; only its hash and 8-character prefix are kept."""

    class Scope(models.TextChoices):
        EVENTS_WRITE = "events:write", "Send events"
        ENDPOINTS_MANAGE = "endpoints:manage", "Manage applications and endpoints"
        EVENT_TYPES_MANAGE = "event-types:manage", "Manage event types and schemas"
        DEAD_LETTERS_REPLAY = "dead-letters:replay", "Replay dead letters"
        READ = "read", "Read everything visible to the key"

    scopes = ArrayField(
        models.CharField(max_length=40, choices=Scope.choices), default=list, blank=True
    )
    application = models.ForeignKey(
        Application, null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    objects: ClassVar[ApiKeyManager] = ApiKeyManager()
    source = models.ForeignKey(
        Source,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="api_keys",
        help_text="the event source this key belongs to; its signing rule applies to the key",
    )

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"
