"""API views for events (ingestion and reading), deliveries and their attempts."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from deliveries.models import Delivery, Event
from deliveries.selectors import attempt_list, delivery_list, event_list
from deliveries.services import IngestRejected, events_ingest
from webhooks_project.errors import UnprocessableEntity

from .serializers import (
    MAX_BATCH,
    AcceptedEventSerializer,
    AttemptSerializer,
    DeliverySerializer,
    EventCreateSerializer,
    EventDetailSerializer,
    EventSerializer,
)


class EventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Post business events; read them with their deliveries."""

    write_scope = "events:write"

    def get_queryset(self):  # type: ignore[no-untyped-def]
        if self.action == "retrieve":
            return Event.objects.select_related("application", "schema_version").prefetch_related(
                "deliveries"
            )
        qs = event_list().select_related("schema_version")
        event_type = self.request.query_params.get("type")
        if event_type:
            qs = qs.filter(event_type_id=event_type)
        return qs

    def get_serializer_class(self):  # type: ignore[no-untyped-def]
        return EventDetailSerializer if self.action == "retrieve" else EventSerializer

    @extend_schema(request=EventCreateSerializer, responses={202: AcceptedEventSerializer})
    def create(self, request: Request) -> Response:
        """Validate one event against its schema, store it and fan it out (202)."""
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["Send one JSON object."]})
        serializer = EventCreateSerializer(data=request.data)
        if not serializer.is_valid():
            raise UnprocessableEntity(serializer.errors)
        try:
            (result,) = events_ingest(
                items=[EventCreateSerializer.input_from(serializer.validated_data)], single=True
            )
        except IngestRejected as exc:
            raise UnprocessableEntity(exc.errors) from exc
        return Response(AcceptedEventSerializer(result).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=EventCreateSerializer(many=True),
        responses={202: AcceptedEventSerializer(many=True)},
    )
    @action(detail=False, methods=["post"])
    def batch(self, request: Request) -> Response:
        """Validate a list of events; all are stored, or none (422 with pointers like /3/data)."""
        if not isinstance(request.data, list):
            raise ValidationError({"non_field_errors": ["Send a JSON array of events."]})
        if not request.data:
            raise UnprocessableEntity({"non_field_errors": ["The batch is empty."]})
        if len(request.data) > MAX_BATCH:
            raise UnprocessableEntity(
                {"non_field_errors": [f"At most {MAX_BATCH} events per batch."]}
            )
        serializer = EventCreateSerializer(data=request.data, many=True)
        if not serializer.is_valid():
            raise UnprocessableEntity(
                {str(i): e for i, e in enumerate(serializer.errors) if e}  # type: ignore[arg-type]
            )
        items = [EventCreateSerializer.input_from(v) for v in serializer.validated_data]
        try:
            results = events_ingest(items=items)
        except IngestRejected as exc:
            raise UnprocessableEntity(exc.errors) from exc
        return Response(
            {"count": len(results), "results": AcceptedEventSerializer(results, many=True).data},
            status=status.HTTP_202_ACCEPTED,
        )


class DeliveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Deliveries (event x endpoint) and the audit log of their attempts."""

    serializer_class = DeliverySerializer
    write_scope = None

    def get_queryset(self):  # type: ignore[no-untyped-def]
        params = self.request.query_params
        status_filter = params.get("status")
        if status_filter and status_filter not in Delivery.Status.values:
            raise ValidationError(
                {"status": [f"Choose one of {', '.join(Delivery.Status.values)}."]}
            )
        return delivery_list(
            event=params.get("event"), endpoint=params.get("endpoint"), status=status_filter
        )

    @extend_schema(
        parameters=[
            OpenApiParameter("event", OpenApiTypes.STR),
            OpenApiParameter("endpoint", OpenApiTypes.STR),
            OpenApiParameter("status", OpenApiTypes.STR, enum=Delivery.Status.values),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(responses=AttemptSerializer(many=True))
    @action(detail=True, methods=["get"])
    def attempts(self, request: Request, pk: str | None = None) -> Response:
        """Every attempt of this delivery: number, time, duration, status, error, response."""
        delivery = self.get_object()
        page = self.paginate_queryset(attempt_list(delivery_id=delivery.pk))
        return self.get_paginated_response(AttemptSerializer(page, many=True).data)
