"""The delivery engine: events, deliveries and their attempts, dead letters, Celery tasks."""
