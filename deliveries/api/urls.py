"""Routes for events and deliveries."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from .views import DeliveryViewSet, EventViewSet

router = SimpleRouter()
router.register("events", EventViewSet, basename="event")
router.register("deliveries", DeliveryViewSet, basename="delivery")
urlpatterns = router.urls
