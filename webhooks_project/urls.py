"""URL routes: the admin, the API under /api/v1/, OpenAPI, the partner portal, /healthz and
/metrics."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from deliveries.dashboard import dashboard_view
from deliveries.prometheus import metrics_view

from .health import healthz

# the admin's "View site" goes to the API's docs (there is no public site); the product's name
admin.site.site_url = "/api/docs/"
admin.site.site_header = "Webhook delivery"
admin.site.site_title = "Webhook delivery"
admin.site.index_title = "Operations"
# the lists get the page's width (the sidebar took 300 px of a 1280 px screen; the home page
# lists every model)
admin.site.enable_nav_sidebar = False

# a route that does not exist under /api/ answers the API's JSON error shape
handler404 = "webhooks_project.errors.not_found"
handler500 = "webhooks_project.errors.server_error"

api_v1 = [
    path("", include("webhooks.api.event_types.urls")),
    path("", include("webhooks.api.urls")),
    path("", include("deliveries.api.urls")),
    path("", include("portal.api_urls")),
]

urlpatterns = [
    path("admin/metrics/", admin.site.admin_view(dashboard_view), name="admin-metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("portal/", include("portal.urls")),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="prometheus-metrics"),
]
