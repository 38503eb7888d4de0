"""Routes for events and deliveries."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from .views import DeadLetterViewSet, DeliveryViewSet, EventViewSet

router = SimpleRouter()
router.register("events", EventViewSet, basename="event")
router.register("deliveries", DeliveryViewSet, basename="delivery")
router.register("dead-letters", DeadLetterViewSet, basename="dead-letter")
urlpatterns = router.urls
