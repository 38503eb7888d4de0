from __future__ import annotations

from django.urls import path

from .api import PortalAccessRevokeView, PortalAccessView

urlpatterns = [
    path(
        "applications/<str:uid>/portal-access/",
        PortalAccessView.as_view(),
        name="portal-access",
    ),
    path(
        "applications/<str:uid>/portal-access/<str:access_id>/",
        PortalAccessRevokeView.as_view(),
        name="portal-access-revoke",
    ),
]
