"""`/api/v1/applications/{uid}/portal-access/`: make a portal link for an application (the
answer carries its URL, once), list the links made, revoke one (its session ends with it)."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webhooks.models import Application
from webhooks.scoping import for_key
from webhooks_project.strict import StrictFields

from .models import PortalAccess
from .scope import link_url
from .services import access_create, access_revoke

WEEK = 7 * 24 * 3600


class PortalAccessCreateSerializer(StrictFields, serializers.Serializer):
    rights = serializers.ChoiceField(
        choices=PortalAccess.Rights.choices,
        default=PortalAccess.Rights.READ,
        help_text="read: see everything of the application; manage: also change it.",
    )
    expires_in = serializers.IntegerField(
        required=False,
        min_value=60,
        max_value=WEEK,
        help_text="Seconds the link can be opened (once); default WEBHOOKS_PORTAL_LINK_SECONDS.",
    )
    session_seconds = serializers.IntegerField(
        required=False,
        min_value=60,
        max_value=WEEK,
        help_text="How long the session it opens lasts; default WEBHOOKS_PORTAL_SESSION_SECONDS.",
    )


class PortalAccessSerializer(serializers.ModelSerializer[PortalAccess]):
    application = serializers.CharField(source="application.uid", read_only=True)

    class Meta:
        model = PortalAccess
        fields = [
            "id",
            "application",
            "rights",
            "created_by",
            "created_at",
            "expires_at",
            "session_seconds",
            "used_at",
            "revoked_at",
        ]
        read_only_fields = fields


class PortalAccessCreatedSerializer(PortalAccessSerializer):
    url = serializers.CharField(
        read_only=True, help_text="The link to give the partner; shown only this once."
    )

    class Meta(PortalAccessSerializer.Meta):
        fields = [*PortalAccessSerializer.Meta.fields, "url"]
        read_only_fields = fields


def _application(request: Request, uid: str) -> Application:
    found = for_key(request, Application.objects.all(), "pk").filter(uid=uid).first()
    if found is None:
        raise Http404("No such application.")
    return found


class PortalAccessView(APIView):
    """Portal links of one application."""

    write_scope = "endpoints:manage"

    @extend_schema(request=None, responses=PortalAccessSerializer(many=True))
    def get(self, request: Request, uid: str) -> Response:
        """The links made for the application, newest first (none of their tokens)."""
        application = _application(request, uid)
        rows = PortalAccess.objects.filter(application=application).select_related("application")
        return Response(PortalAccessSerializer(rows[:200], many=True).data)

    @extend_schema(
        request=PortalAccessCreateSerializer, responses={201: PortalAccessCreatedSerializer}
    )
    def post(self, request: Request, uid: str) -> Response:
        """A one-time link to the application's portal. Its URL carries the token after `#`
        (never sent to a server, so no log keeps it): give it to the partner as it is."""
        application = _application(request, uid)
        given = PortalAccessCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        made = access_create(
            application=application, actor=str(request.user), **given.validated_data
        )
        answer: dict[str, Any] = dict(PortalAccessSerializer(made.access).data)
        answer["url"] = link_url(request, made.token)
        return Response(answer, status=status.HTTP_201_CREATED)


class PortalAccessRevokeView(APIView):
    write_scope = "endpoints:manage"

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, uid: str, access_id: str) -> Response:
        """Revoke a link: it no longer opens, and the session it opened ends."""
        application = _application(request, uid)
        access = PortalAccess.objects.filter(application=application, pk=access_id).first()
        if access is None:
            raise Http404("No such portal link.")
        access_revoke(access=access, actor=str(request.user))
        return Response(status=status.HTTP_204_NO_CONTENT)
