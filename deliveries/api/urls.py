"""Routes for endpoints (with the engine's actions), events, deliveries, dead letters, metrics."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from .endpoints import EndpointViewSet
from .views import DeadLetterViewSet, DeliveryViewSet, EventViewSet, MetricsView

router = SimpleRouter()
router.register("endpoints", EndpointViewSet, basename="endpoint")
router.register("events", EventViewSet, basename="event")
router.register("deliveries", DeliveryViewSet, basename="delivery")
router.register("dead-letters", DeadLetterViewSet, basename="dead-letter")
urlpatterns = [*router.urls, path("metrics/", MetricsView.as_view(), name="metrics")]
