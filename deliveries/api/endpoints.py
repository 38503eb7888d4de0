"""The endpoint API's engine actions: re-enabling with replay, test events.

The endpoint routes are registered with this viewset: it is the webhooks app's, plus the
actions that need the delivery engine (which depends on the webhooks app, not the reverse).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from deliveries.services.endpoints import (
    EndpointNotSendable,
    endpoint_enable,
    endpoint_ordering_changed,
    endpoint_send_test,
)
from webhooks.api import views as webhooks_views
from webhooks.api.serializers import (
    EndpointEnabledSerializer,
    EndpointEnableSerializer,
    EndpointSerializer,
    SentTestEventSerializer,
)
from webhooks.models import Endpoint
from webhooks_project.strict import refuse_body


class EndpointViewSet(webhooks_views.EndpointViewSet):
    __doc__ = webhooks_views.EndpointViewSet.__doc__

    def perform_update(self, serializer: BaseSerializer[Endpoint]) -> None:
        assert serializer.instance is not None  # an update has its instance
        before = serializer.instance.ordering_on_dead
        super().perform_update(serializer)
        endpoint_ordering_changed(endpoint=serializer.instance, on_dead_before=before)

    @extend_schema(request=EndpointEnableSerializer, responses=EndpointEnabledSerializer)
    @action(detail=True, methods=["post"])
    def enable(self, request: Request, pk: str | None = None) -> Response:
        """Re-enable the endpoint; with `replay_missed`, also send what it missed while off."""
        endpoint = self.get_object()
        serializer = EndpointEnableSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = endpoint_enable(
            endpoint_id=endpoint.pk,
            actor=str(request.user),
            replay_missed=serializer.validated_data["replay_missed"],
        )
        endpoint.refresh_from_db()
        data = {
            "endpoint": EndpointSerializer(endpoint).data,
            "was_disabled": result.was_disabled,
            "replayed": result.replayed,
            "backfilled": result.backfilled,
        }
        return Response(data)

    @extend_schema(request=None, responses={202: SentTestEventSerializer})
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str | None = None) -> Response:
        """Send this endpoint a signed `webhook.test` event, delivered like any other."""
        refuse_body(request.data)
        endpoint = self.get_object()
        try:
            sent = endpoint_send_test(endpoint_id=endpoint.pk, actor=str(request.user))
        except EndpointNotSendable as exc:
            return Response(
                {"error": "conflict", "detail": f"Not sent: {exc}."},
                status=status.HTTP_409_CONFLICT,
            )
        return Response(
            {"event": sent.event_id, "delivery": sent.delivery_id},
            status=status.HTTP_202_ACCEPTED,
        )
