"""The applications' admin gets the portal: "Copy portal link" (a link made and shown once, to
send to the partner) and "Open the portal as this application" (a link made and opened here)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.html import format_html

from webhooks.admin import ApplicationAdmin
from webhooks.models import Application

from .models import PortalAccess
from .scope import link_url
from .services import access_create, access_revoke


def _link(request: HttpRequest, application: Application, rights: str) -> str:
    made = access_create(application=application, rights=rights, actor=f"admin:{request.user}")
    return link_url(request, made.token)


admin.site.unregister(Application)


@admin.register(Application)
class ApplicationPortalAdmin(ApplicationAdmin):
    actions = ["copy_portal_link", "copy_portal_link_read_only", "open_portal"]

    @admin.action(description="Copy portal link (manage rights; works once, for an hour)")
    def copy_portal_link(self, request: HttpRequest, queryset: QuerySet[Application]) -> None:
        self._links(request, queryset, PortalAccess.Rights.MANAGE)

    @admin.action(description="Copy portal link (read only; works once, for an hour)")
    def copy_portal_link_read_only(
        self, request: HttpRequest, queryset: QuerySet[Application]
    ) -> None:
        self._links(request, queryset, PortalAccess.Rights.READ)

    def _links(self, request: HttpRequest, queryset: QuerySet[Application], rights: str) -> None:
        for application in queryset:
            url = _link(request, application, rights)
            self.message_user(
                request,
                format_html(
                    'Portal link for {} (shown once): <input type="text" readonly size="90" '
                    'value="{}" aria-label="Portal link for {}" onfocus="this.select()">',
                    application.uid,
                    url,
                    application.uid,
                ),
                messages.SUCCESS,
            )

    @admin.action(description="Open the portal as this application")
    def open_portal(
        self, request: HttpRequest, queryset: QuerySet[Application]
    ) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Choose one application to open.", messages.WARNING)
            return None
        return HttpResponseRedirect(_link(request, queryset.get(), PortalAccess.Rights.MANAGE))


@admin.register(PortalAccess)
class PortalAccessAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "application",
        "rights",
        "created_by",
        "expires_at",
        "used_at",
        "revoked_at",
    ]
    list_filter = ["rights"]
    search_fields = ["id", "application__uid", "created_by"]
    readonly_fields = [f.name for f in PortalAccess._meta.fields]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # links are made from an application (their token is shown once)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the audit log refers to them; revoke instead

    @admin.action(description="Revoke (the link and the session it opened)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[PortalAccess]) -> None:
        for access in queryset.select_related("application"):
            access_revoke(access=access, actor=f"admin:{request.user}")
        self.message_user(request, f"{queryset.count()} revoked.", messages.SUCCESS)
