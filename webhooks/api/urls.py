"""Routes for applications and the audit log. Endpoints are routed by `deliveries.api`, whose
viewset adds the actions that need the delivery engine."""

from __future__ import annotations

from rest_framework.routers import SimpleRouter

from .views import ApplicationViewSet, AuditRecordViewSet

router = SimpleRouter()
router.register("applications", ApplicationViewSet, basename="application")
router.register("audit-records", AuditRecordViewSet, basename="audit-record")
urlpatterns = router.urls
