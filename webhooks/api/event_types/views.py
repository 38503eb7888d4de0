"""API views for event types."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from schemas_app.models import EventType
from schemas_app.selectors import event_type_list
from schemas_app.services import (
    BreakingSchemaChange,
    PreviewRejected,
    SchemaRefused,
    event_type_create,
    event_type_preview,
    event_type_update,
    outbound_schema,
)
from webhooks.models import Endpoint
from webhooks.scoping import for_key, refuse_if_limited
from webhooks_project.errors import UnprocessableEntity, from_django_validation

from .serializers import EventTypeSerializer, PreviewResultSerializer, PreviewSerializer


class EventTypeViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Register event types and their JSON Schemas; look them up by name."""

    serializer_class = EventTypeSerializer
    lookup_field = "name"
    lookup_value_regex = r"[^/]+"
    write_scope = "event-types:manage"
    scope_for_action = {"preview": "read"}  # a POST that changes nothing

    def get_queryset(self):
        return event_type_list()

    def create(self, request: Request, *args: object, **kwargs: object) -> Response:
        refuse_if_limited(request, "change the event types every application shares")
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if EventType.objects.filter(name=serializer.validated_data["name"]).exists():
            raise ValidationError({"name": ["An event type with this name already exists."]})
        fields = dict(serializer.validated_data)
        fields.pop("allow_breaking", None)
        try:
            event_type = event_type_create(actor=str(request.user), **fields)
        except SchemaRefused as exc:
            raise UnprocessableEntity(exc.api_errors) from exc
        except DjangoValidationError as exc:
            raise from_django_validation(exc) from exc
        out = self.get_serializer(self.get_queryset().get(pk=event_type.pk))
        return Response(out.data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args: object, **kwargs: object) -> Response:
        refuse_if_limited(request, "change the event types every application shares")
        instance = self.get_object()
        serializer = self.get_serializer(instance, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        try:
            result = event_type_update(
                event_type=instance, actor=str(request.user), **serializer.validated_data
            )
        except SchemaRefused as exc:
            raise UnprocessableEntity(exc.api_errors) from exc
        except DjangoValidationError as exc:
            raise from_django_validation(exc) from exc
        except BreakingSchemaChange as exc:
            raise UnprocessableEntity(
                [
                    {
                        "pointer": "/schema" + change.pointer,
                        "detail": f"breaking change: {change.detail}; "
                        'send "allow_breaking": true to save it anyway',
                        "keyword": change.kind,
                    }
                    for change in exc.changes
                ]
            ) from exc
        data = self.get_serializer(self.get_queryset().get(pk=instance.pk)).data
        data["breaking_changes"] = [c.as_dict() for c in result.changes]
        return Response(data)

    @extend_schema(request=PreviewSerializer, responses={200: PreviewResultSerializer})
    @action(detail=True, methods=["post"])
    def preview(self, request: Request, name: str | None = None) -> Response:
        """Exactly the body an event with this `data` would be sent with (to `endpoint`, if
        given): validated against the schema, transformed, checked against the output schema.
        Nothing is stored or sent."""
        event_type = self.get_object()
        options = PreviewSerializer(data=request.data)
        options.is_valid(raise_exception=True)
        endpoint = None
        if options.validated_data.get("endpoint"):
            endpoint = (
                for_key(request, Endpoint.objects.all(), "application_id")
                .filter(pk=options.validated_data["endpoint"])
                .first()
            )
            if endpoint is None:
                raise ValidationError({"endpoint": ["No such endpoint."]})
        try:
            result = event_type_preview(
                event_type=event_type, data=options.validated_data["data"], endpoint=endpoint
            )
        except PreviewRejected as exc:
            raise UnprocessableEntity(exc.errors) from exc
        return Response(result)

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"], url_path="schema")
    def payload_schema(self, request: Request, name: str | None = None) -> Response:
        """The JSON Schema of the webhook payloads this event type sends, for consumers to
        validate what they receive: the envelope, with `data` described by the output schema
        (or, without a transformation, by the current input schema)."""
        event_type = self.get_object()
        return Response(outbound_schema(event_type))
