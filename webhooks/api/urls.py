"""Routes for applications and endpoints."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from .views import ApplicationViewSet, AuditRecordViewSet, EndpointViewSet

router = SimpleRouter()
router.register("applications", ApplicationViewSet, basename="application")
router.register("endpoints", EndpointViewSet, basename="endpoint")
router.register("audit-records", AuditRecordViewSet, basename="audit-record")
urlpatterns = router.urls
