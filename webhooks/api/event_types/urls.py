"""Routes for event types."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from .views import EventTypeViewSet

router = SimpleRouter()
router.register("event-types", EventTypeViewSet, basename="event-type")
urlpatterns = router.urls
