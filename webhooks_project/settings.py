"""Django settings: every value comes from an environment variable, with production-safe defaults.

`WEBHOOKS_ENV=dev` (set by `make run` and `make test`) relaxes the defaults for a laptop: DEBUG on,
a throwaway secret key, loopback targets allowed. Anything else is treated as production.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from .env import (
    dev_key,
    env_bool,
    env_float,
    env_int,
    env_int_list,
    env_list,
    env_str,
    parse_cidrs,
    parse_rate,
)

BASE_DIR = Path(__file__).resolve().parent.parent

WEBHOOKS_ENV = env_str("WEBHOOKS_ENV", "production") or "production"
DEV = WEBHOOKS_ENV == "dev"

DEBUG = env_bool("DJANGO_DEBUG", DEV)
SECRET_KEY = env_str("DJANGO_SECRET_KEY") or ""
if not SECRET_KEY:
    if not DEV:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set outside WEBHOOKS_ENV=dev")
    SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production"  # noqa: S105

# Keys that encrypt endpoint secrets at rest (Fernet keys, comma-separated; the first encrypts,
# all decrypt). Outside dev they must be set; dev derives one from SECRET_KEY.
WEBHOOKS_ENCRYPTION_KEYS = env_list("WEBHOOKS_ENCRYPTION_KEYS", [])
if not WEBHOOKS_ENCRYPTION_KEYS:
    if not DEV:
        raise ImproperlyConfigured(
            "WEBHOOKS_ENCRYPTION_KEYS must be set outside WEBHOOKS_ENV=dev; make one with: "
            "python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'"
        )
    WEBHOOKS_ENCRYPTION_KEYS = [dev_key(SECRET_KEY)]
else:
    from cryptography.fernet import Fernet

    for _key in WEBHOOKS_ENCRYPTION_KEYS:
        try:
            Fernet(_key)
        except ValueError as exc:
            raise ImproperlyConfigured(
                "WEBHOOKS_ENCRYPTION_KEYS holds a value that is not a Fernet key "
                "(32 url-safe base64-encoded bytes)"
            ) from exc

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["*"] if DEV else ["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "rest_framework_api_key",  # only for its abstract model; its own table stays unused
    "webhooks",
    "schemas_app",
    "deliveries",
    "portal",
]

MIDDLEWARE = [
    "webhooks_project.generation.RequestScope",  # the configuration generation: read once
    "webhooks_project.middleware.BodyLimitMiddleware",
    "webhooks_project.middleware.NulCharacterMiddleware",
    "webhooks.replay.ReplayWindowMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webhooks_project.urls"
WSGI_APPLICATION = "webhooks_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "webhooks_project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_database_url = env_str("DATABASE_URL")
if not _database_url:
    raise ImproperlyConfigured(
        "DATABASE_URL must be set (make run / make test start a local PostgreSQL and set it)"
    )
DATABASES = {
    "default": dj_database_url.parse(
        _database_url,
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if not DATABASES["default"]["ENGINE"].endswith("postgresql"):
    raise ImproperlyConfigured("DATABASE_URL must point at PostgreSQL (postgres://...)")
DATABASES["default"].setdefault("OPTIONS", {})
# Fail fast instead of hanging when PostgreSQL is away: the API answers 503, workers retry.
DATABASES["default"]["OPTIONS"].setdefault(
    "connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5)
)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# one date format in the admin: webhooks_project/formats/en/formats.py
FORMAT_MODULE_PATH = ["webhooks_project.formats"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".run" / "static"
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEV)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True

# --- REST framework -----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "webhooks.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["webhooks.permissions.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": ["webhooks.throttling.ApiKeyRateThrottle"],
    "DEFAULT_PARSER_CLASSES": ["webhooks_project.parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": (
        ["rest_framework.renderers.JSONRenderer", "rest_framework.renderers.BrowsableAPIRenderer"]
        if DEBUG
        else ["rest_framework.renderers.JSONRenderer"]
    ),
    "DEFAULT_PAGINATION_CLASS": "webhooks_project.pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "webhooks_project.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Webhook delivery service",
    "DESCRIPTION": "Schema-checked events in, Standard Webhooks signed notifications out.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI assets are served from the installed package: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "webhooks_project.openapi.add_error_responses",
    ],
}

# --- Redis and Celery ---------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0") or "redis://127.0.0.1:6379/0"

# The cache (rate limits, replay protection of signed sources): a Redis database of its own
# beside the broker's, with short timeouts so an outage costs a request little.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env_str("CACHE_REDIS_URL", "") or REDIS_URL,
        "KEY_PREFIX": "webhooks",
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
}
# Requests per API key: "N/s", "N/min", "N/h" or "off"; over it, 429 with Retry-After.
WEBHOOKS_THROTTLE_RATE = env_str("WEBHOOKS_THROTTLE_RATE", "100/s") or "100/s"
try:
    parse_rate(WEBHOOKS_THROTTLE_RATE)
except ValueError as exc:
    raise ImproperlyConfigured(f"WEBHOOKS_THROTTLE_RATE: {exc}") from exc

CELERY_BROKER_URL = REDIS_URL
# kombu's Redis transport with one fix: a worker survives Redis restarting under load (see
# webhooks_project/broker.py). For a rediss:// URL, TLS with certificate checks.
CELERY_BROKER_TRANSPORT = "webhooks_project.broker:Transport"
if REDIS_URL.startswith("rediss://"):
    import ssl

    CELERY_BROKER_USE_SSL = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker waits out a broker outage of any length (Celery's default gives up after 100 tries,
# about an hour, and exits); the rows wait in PostgreSQL meanwhile.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BROKER_CONNECTION_TIMEOUT = env_float("CELERY_BROKER_CONNECTION_TIMEOUT", 2.0)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # A message not acknowledged within this many seconds is handed to another worker. It must be
    # longer than any task can run; long retry delays never use ETAs (see deliveries/tasks.py).
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=1),
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
# Named queues; a bare `celery worker` consumes all three, taking from each in turn.
# `deliveries`: first attempts (and replays); `retries`: retries, sweeps and deferrals, so a
# backlog there never delays new events; `maintenance`: the beat jobs, so a flood of
# deliveries never delays the sweeper. Run workers with `-Q` to split them across machines.
CELERY_TASK_QUEUES = (Queue("deliveries"), Queue("retries"), Queue("maintenance"))
CELERY_TASK_DEFAULT_QUEUE = "deliveries"
CELERY_TASK_ROUTES = {
    "deliveries.tasks.requeue_stuck": {"queue": "maintenance"},
    "deliveries.tasks.disable_failing_endpoints": {"queue": "maintenance"},
    "deliveries.tasks.prune": {"queue": "maintenance"},
    "portal.tasks.portal_prune": {"queue": "maintenance"},
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 1, minimum=1)
# Two worker processes per core: a process does not wait on HTTP (its sender's threads do),
# but while one claims or records, another's threads can send. Measured on 2 cores (make
# bench-quick, 3,000 events x 10, one run each): 2 / 4 / 8 processes deliver 1750 / 1639 /
# 1648 per second, with p50 at half peak 37 / 31 / 26 ms; with half the endpoints hanging, the
# healthy ones' p99 is 74 / 57 / 1478 ms and peak RSS 373 / 626 / 1058 MB. 4 is the balance.
CELERY_WORKER_CONCURRENCY = env_int(
    "CELERY_WORKER_CONCURRENCY", 2 * (os.cpu_count() or 1), minimum=1
)
# Celery's Django fixup closes the database connection around every task unless this is set:
# a new PostgreSQL connection per task cost ~10 ms of latency (measured with bench/ probes).
# Connections are still closed when broken or older than CONN_MAX_AGE (close_old_connections in
# the delivery task), and recycled after this many tasks.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000, minimum=1)
# Workers log through LOGGING below (JSON or plain), not through Celery's own root handler.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False  # Flower turns events on while it runs (enable_events)
CELERY_TASK_SEND_SENT_EVENT = False  # one more publish per message; Flower shows received on
# At ingest the broker may be down; give up quickly and let the rows wait in PostgreSQL.
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
_REQUEUE_INTERVAL = env_int("WEBHOOKS_REQUEUE_INTERVAL", 15, minimum=1)
_HEALTH_INTERVAL = env_int("WEBHOOKS_HEALTH_INTERVAL", 300, minimum=1)
_PRUNE_INTERVAL = env_int("WEBHOOKS_PRUNE_INTERVAL", 3600, minimum=1)
# django-celery-beat copies these into its PeriodicTask table at start (visible in the admin).
CELERY_BEAT_SCHEDULE = {
    "requeue_stuck": {
        "task": "deliveries.tasks.requeue_stuck",
        "schedule": float(_REQUEUE_INTERVAL),
        "options": {"expires": float(_REQUEUE_INTERVAL)},  # a backlog of sweeps is useless
    },
    "disable_failing_endpoints": {
        "task": "deliveries.tasks.disable_failing_endpoints",
        "schedule": float(_HEALTH_INTERVAL),
        "options": {"expires": float(_HEALTH_INTERVAL)},
    },
    "prune": {
        "task": "deliveries.tasks.prune",
        "schedule": float(_PRUNE_INTERVAL),
        "options": {"expires": float(_PRUNE_INTERVAL)},
    },
    "portal_prune": {
        "task": "portal.tasks.portal_prune",
        "schedule": float(_PRUNE_INTERVAL),
        "options": {"expires": float(_PRUNE_INTERVAL)},
    },
}
CELERY_TIMEZONE = TIME_ZONE

# --- This service's own knobs (read at call time through django.conf.settings) ------------------
WEBHOOKS_ALLOW_PRIVATE_TARGETS = env_bool("WEBHOOKS_ALLOW_PRIVATE_TARGETS", False)
# Networks endpoints may be on although they are not public (e.g. a partner over a VPN).
WEBHOOKS_ALLOWED_TARGET_CIDRS = env_list("WEBHOOKS_ALLOWED_TARGET_CIDRS", [])
try:
    WEBHOOKS_ALLOWED_TARGET_NETWORKS = parse_cidrs(WEBHOOKS_ALLOWED_TARGET_CIDRS)
except ValueError as exc:
    raise ImproperlyConfigured(f"WEBHOOKS_ALLOWED_TARGET_CIDRS: {exc}") from exc
# An HTTP proxy every delivery leaves through (e.g. smokescreen), asked for the address the SSRF
# check resolved, never for the name: http://host:port, credentials in the URL if it needs them.
WEBHOOKS_EGRESS_PROXY = env_str("WEBHOOKS_EGRESS_PROXY") or None
if WEBHOOKS_EGRESS_PROXY is not None and (
    urlsplit(WEBHOOKS_EGRESS_PROXY).scheme not in ("http", "https")
    or not urlsplit(WEBHOOKS_EGRESS_PROXY).hostname
):
    raise ImproperlyConfigured(
        "WEBHOOKS_EGRESS_PROXY must be an http:// or https:// URL of the proxy "
        "(e.g. http://smokescreen:4750)"
    )
# The partner portal (README "Partner portal"): links, sessions, branding, embedding.
WEBHOOKS_PORTAL_LINK_SECONDS = env_int("WEBHOOKS_PORTAL_LINK_SECONDS", 3600, minimum=60)
WEBHOOKS_PORTAL_SESSION_SECONDS = env_int("WEBHOOKS_PORTAL_SESSION_SECONDS", 8 * 3600, minimum=60)
WEBHOOKS_PORTAL_NAME = env_str("WEBHOOKS_PORTAL_NAME", "Webhooks") or "Webhooks"
WEBHOOKS_PORTAL_LOGO_URL = env_str("WEBHOOKS_PORTAL_LOGO_URL", "") or ""
WEBHOOKS_PORTAL_ACCENT = env_str("WEBHOOKS_PORTAL_ACCENT", "#1f5fbf") or "#1f5fbf"
if not re.fullmatch(r"#[0-9a-fA-F]{6}", WEBHOOKS_PORTAL_ACCENT):
    raise ImproperlyConfigured("WEBHOOKS_PORTAL_ACCENT must be a colour like #1f5fbf")
if WEBHOOKS_PORTAL_LOGO_URL and urlsplit(WEBHOOKS_PORTAL_LOGO_URL).scheme not in ("https", "http"):
    raise ImproperlyConfigured("WEBHOOKS_PORTAL_LOGO_URL must be an http(s) URL")
# Origins whose pages may show the portal in a frame (CSP frame-ancestors); none by default.
WEBHOOKS_PORTAL_FRAME_ANCESTORS = env_list("WEBHOOKS_PORTAL_FRAME_ANCESTORS", [])
for _origin in WEBHOOKS_PORTAL_FRAME_ANCESTORS:
    if not re.fullmatch(r"https?://[A-Za-z0-9.\-*]+(:\d+)?", _origin):
        raise ImproperlyConfigured(
            f"WEBHOOKS_PORTAL_FRAME_ANCESTORS: {_origin!r} is not an origin like "
            "https://app.example.com"
        )
try:
    _enter_rate = parse_rate(env_str("WEBHOOKS_PORTAL_ENTER_RATE", "10/min") or "")
except ValueError as exc:
    raise ImproperlyConfigured(f"WEBHOOKS_PORTAL_ENTER_RATE: {exc}") from exc
if _enter_rate is None:
    raise ImproperlyConfigured("WEBHOOKS_PORTAL_ENTER_RATE cannot be off: links are guessed at")
# tries of portal link codes per client address: (count, window seconds)
WEBHOOKS_PORTAL_ENTER_RATE: tuple[int, int] = _enter_rate
if WEBHOOKS_PORTAL_FRAME_ANCESTORS:
    # in a frame of another site every cookie is a third party's: a Lax cookie is not sent
    # with the portal's own form posts (CSRF, messages), so they go SameSite=None, over https
    CSRF_COOKIE_SAMESITE = SESSION_COOKIE_SAMESITE = "None"
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE = True
# `/metrics` (Prometheus): answered to `Authorization: Bearer <token>`, or to clients in these
# networks that did not come through a proxy. Loopback only in dev: behind a reverse proxy on
# the same host every request would come from loopback, so production needs a token or a list.
WEBHOOKS_METRICS_TOKEN = env_str("WEBHOOKS_METRICS_TOKEN", "") or ""
WEBHOOKS_METRICS_ALLOW = env_list(
    "WEBHOOKS_METRICS_ALLOW", ["127.0.0.1/32", "::1/128"] if DEV else []
)
try:
    WEBHOOKS_METRICS_NETWORKS = parse_cidrs(WEBHOOKS_METRICS_ALLOW)
except ValueError as exc:
    raise ImproperlyConfigured(f"WEBHOOKS_METRICS_ALLOW: {exc}") from exc
# The labels of the `/metrics` counters and histograms: `endpoint,event_type`, `event_type`,
# `endpoint`, or `none` (one series per metric). Fewer labels, fewer series with many endpoints.
WEBHOOKS_METRICS_LABELS = [
    label
    for label in env_list("WEBHOOKS_METRICS_LABELS", ["endpoint", "event_type"])
    if label.lower() != "none"
]
if not set(WEBHOOKS_METRICS_LABELS) <= {"endpoint", "event_type"} or len(
    set(WEBHOOKS_METRICS_LABELS)
) != len(WEBHOOKS_METRICS_LABELS):
    raise ImproperlyConfigured(
        "WEBHOOKS_METRICS_LABELS: a comma-separated choice of endpoint and event_type, or none; "
        f"got {','.join(WEBHOOKS_METRICS_LABELS)!r}"
    )
# The rollup behind the metrics is kept this long (days); it must cover the 7-day window.
WEBHOOKS_METRICS_RETENTION_DAYS = env_int("WEBHOOKS_METRICS_RETENTION_DAYS", 90, minimum=8)
# Endpoints must use https (registration refuses http; a stored http URL fails as ssrf_blocked).
WEBHOOKS_HTTPS_ONLY = env_bool("WEBHOOKS_HTTPS_ONLY", not DEV)
# How long a claimed delivery stays claimed without a renewal: a worker killed mid-request has
# its deliveries sent again this long after. It must outlast a whole request (checked below, with
# WEBHOOKS_HTTP_TIMEOUT); 65 s covers the longest endpoint timeout, 60 s, plus 5.
WEBHOOKS_LEASE_SECONDS = env_int("WEBHOOKS_LEASE_SECONDS", 65, minimum=1)
WEBHOOKS_REQUEUE_INTERVAL = _REQUEUE_INTERVAL
# A due row whose message was published longer ago than this is published again (the message
# was lost, e.g. Redis restarted empty). Longer than any normal queue wait.
WEBHOOKS_REDISPATCH_AFTER = env_int("WEBHOOKS_REDISPATCH_AFTER", 120, minimum=1)
WEBHOOKS_RETENTION_DAYS = env_int("WEBHOOKS_RETENTION_DAYS", 30, minimum=1)
# Days after it succeeded that a delivery keeps the bodies it sent and its answers' bodies and
# headers (Svix's payloadRetentionPeriod); 0: as long as its rows. Anything not succeeded keeps
# everything. Shorter than WEBHOOKS_RETENTION_DAYS, or it would never act.
WEBHOOKS_PAYLOAD_RETENTION_DAYS = env_int("WEBHOOKS_PAYLOAD_RETENTION_DAYS", 0, minimum=0)
if WEBHOOKS_PAYLOAD_RETENTION_DAYS >= WEBHOOKS_RETENTION_DAYS:
    raise ImproperlyConfigured(
        f"WEBHOOKS_PAYLOAD_RETENTION_DAYS ({WEBHOOKS_PAYLOAD_RETENTION_DAYS}) must be shorter "
        f"than WEBHOOKS_RETENTION_DAYS ({WEBHOOKS_RETENTION_DAYS}), or 0 to keep payloads as "
        "long as the rows: the rows go with their day, payloads and all"
    )
# Day partitions made ahead of time by the `prune` beat job (deliveries/services/partitions.py).
WEBHOOKS_PARTITIONS_AHEAD = env_int("WEBHOOKS_PARTITIONS_AHEAD", 7, minimum=2)
WEBHOOKS_COUNTDOWN_MAX = env_int("WEBHOOKS_COUNTDOWN_MAX", 60)
# The delivery pipeline (deliveries/sender.py), per worker process: ids per task message, HTTP
# threads, deliveries between claim and record, and per endpoint: requests at once, and
# deliveries queued before the rest go back to the database for later.
WEBHOOKS_BATCH_SIZE = env_int("WEBHOOKS_BATCH_SIZE", 100, minimum=1)
# New deliveries go to worker processes on a Redis list of their own, without a Celery message
# (deliveries/services/enqueue.py); false: on the Celery `deliveries` queue.
WEBHOOKS_DIRECT_FEED = env_bool("WEBHOOKS_DIRECT_FEED", True)
WEBHOOKS_SEND_THREADS = env_int("WEBHOOKS_SEND_THREADS", 64, minimum=1)
WEBHOOKS_MAX_IN_FLIGHT = env_int("WEBHOOKS_MAX_IN_FLIGHT", 4000, minimum=1)
WEBHOOKS_ENDPOINT_CONCURRENCY = env_int("WEBHOOKS_ENDPOINT_CONCURRENCY", 8, minimum=1)
WEBHOOKS_ENDPOINT_QUEUE = env_int("WEBHOOKS_ENDPOINT_QUEUE", 256, minimum=1)
# An endpoint with a request running this long is slow: it keeps its own concurrency, but slow
# endpoints together may hold at most half of a process's sending threads (endpoints that hang
# never take every thread from the ones that answer).
WEBHOOKS_SLOW_AFTER = env_float("WEBHOOKS_SLOW_AFTER", 2.0, minimum=0.1)
# A delivery task returns once its requests have started, or after this many seconds: while it
# waits, Celery gives the next messages to the worker's other processes (their lanes are free).
WEBHOOKS_HANDOFF_WAIT = env_float("WEBHOOKS_HANDOFF_WAIT", 1.0, minimum=0.0)
# After this many failed requests in a row (5xx, 408, 429, timeouts, connection errors), an
# endpoint gets nothing for the cooldown; its deliveries wait without using up attempts.
WEBHOOKS_BREAKER_THRESHOLD = env_int("WEBHOOKS_BREAKER_THRESHOLD", 20, minimum=1)
WEBHOOKS_BREAKER_COOLDOWN = env_float("WEBHOOKS_BREAKER_COOLDOWN", 30.0, minimum=0.1)
# The sweeper publishes at most this many due deliveries per failing endpoint per sweep.
WEBHOOKS_FAILING_ENDPOINT_BATCH = env_int("WEBHOOKS_FAILING_ENDPOINT_BATCH", 100, minimum=1)
# Delays in seconds before each retry (Standard Webhooks / Svix): 5 s, 5 min, 30 min, 2 h, 5 h,
# 10 h, 10 h. Attempts = 1 + len(schedule).
WEBHOOKS_RETRY_SCHEDULE = env_int_list(
    "WEBHOOKS_RETRY_SCHEDULE", [5, 300, 1800, 7200, 18000, 36000, 36000]
)
WEBHOOKS_RETRY_JITTER = env_float("WEBHOOKS_RETRY_JITTER", 0.1)
WEBHOOKS_DISABLE_AFTER = env_int("WEBHOOKS_DISABLE_AFTER", 5 * 24 * 3600, minimum=1)
# At most one `delivery.dead` notice per endpoint in this many seconds (failure notices).
WEBHOOKS_NOTICE_INTERVAL = env_int("WEBHOOKS_NOTICE_INTERVAL", 60, minimum=1)
WEBHOOKS_MAX_PAYLOAD_BYTES = env_int("WEBHOOKS_MAX_PAYLOAD_BYTES", 1024 * 1024, minimum=1024)
# The key of `hash` masking (HMAC-SHA256): consumers can join on hashed values without seeing
# them. Derived from SECRET_KEY unless set; changing it changes every hashed value.
WEBHOOKS_HASH_KEY = (
    env_str("WEBHOOKS_HASH_KEY", "")
    or hashlib.sha256(b"webhooks-hash:" + SECRET_KEY.encode()).hexdigest()
).encode()
# After a secret rotation the old secret keeps signing beside the new one this long (seconds).
WEBHOOKS_SECRET_ROTATION_GRACE = env_int("WEBHOOKS_SECRET_ROTATION_GRACE", 24 * 3600, minimum=0)
# Arrays and objects nested deeper than this are refused (400) before any schema sees them.
WEBHOOKS_MAX_JSON_DEPTH = env_int("WEBHOOKS_MAX_JSON_DEPTH", 32, minimum=2)
WEBHOOKS_HTTP_TIMEOUT = env_float("WEBHOOKS_HTTP_TIMEOUT", 15.0, minimum=0.1)
# A lease shorter than a request would let the sweeper take back a claim whose request is still
# running, and the delivery would be sent a second time meanwhile (seen: 127 such sends in one
# run with an 8 s lease and the 15 s timeout). Refused here, where every process reads it
# (Celery workers do not run Django's system checks). The margin is not a knob.
WEBHOOKS_LEASE_MARGIN_SECONDS = 5
if WEBHOOKS_LEASE_SECONDS < WEBHOOKS_HTTP_TIMEOUT + WEBHOOKS_LEASE_MARGIN_SECONDS:
    raise ImproperlyConfigured(
        f"WEBHOOKS_LEASE_SECONDS ({WEBHOOKS_LEASE_SECONDS}) must be at least "
        f"WEBHOOKS_HTTP_TIMEOUT + {WEBHOOKS_LEASE_MARGIN_SECONDS} "
        f"({WEBHOOKS_HTTP_TIMEOUT + WEBHOOKS_LEASE_MARGIN_SECONDS:g}): a claim's lease must "
        "outlast a whole request, or a slow request is sent again while it is still running"
    )
WEBHOOKS_CONNECT_TIMEOUT = env_float("WEBHOOKS_CONNECT_TIMEOUT", 5.0, minimum=0.1)
WEBHOOKS_RESPONSE_MAX_BYTES = env_int("WEBHOOKS_RESPONSE_MAX_BYTES", 4096, minimum=0)
# Each attempt keeps the body it sent, up to this many bytes, for the admin and the API.
WEBHOOKS_STORED_BODY_MAX_BYTES = env_int("WEBHOOKS_STORED_BODY_MAX_BYTES", 65536, minimum=0)
WEBHOOKS_USER_AGENT = env_str("WEBHOOKS_USER_AGENT", "webhook-delivery/0.1")

DATA_UPLOAD_MAX_MEMORY_SIZE = WEBHOOKS_MAX_PAYLOAD_BYTES

# `json`: one object per line (every delivery attempt is one, see `deliveries.attempts`);
# `plain`: readable lines for a terminal.
WEBHOOKS_LOG_FORMAT = env_str("WEBHOOKS_LOG_FORMAT", "plain" if DEV else "json")
if WEBHOOKS_LOG_FORMAT not in ("json", "plain"):
    raise ImproperlyConfigured("WEBHOOKS_LOG_FORMAT must be 'json' or 'plain'")
# One record per delivery attempt (logger `deliveries.attempts`); about 5% of a worker's CPU at
# full speed (py-spy), so it can be turned off where the attempt table and metrics suffice.
WEBHOOKS_ATTEMPT_LOG = env_bool("WEBHOOKS_ATTEMPT_LOG", True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "webhooks_project.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": WEBHOOKS_LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # off: its own level, since Celery sets the root's from `worker -l`; on: the root's level
    "loggers": {} if WEBHOOKS_ATTEMPT_LOG else {"deliveries.attempts": {"level": "WARNING"}},
}
