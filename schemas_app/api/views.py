"""API views for event types."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from schemas_app.models import EventType
from schemas_app.selectors import event_type_list
from schemas_app.services import event_type_create, event_type_update
from webhooks.scoping import refuse_if_limited
from webhooks_project.errors import from_django_validation

from .serializers import EventTypeSerializer


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

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return event_type_list()

    def create(self, request: Request, *args: object, **kwargs: object) -> Response:
        refuse_if_limited(request, "change the event types every application shares")
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if EventType.objects.filter(name=serializer.validated_data["name"]).exists():
            raise ValidationError({"name": ["An event type with this name already exists."]})
        try:
            event_type = event_type_create(**serializer.validated_data)
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
            event_type_update(event_type=instance, **serializer.validated_data)
        except DjangoValidationError as exc:
            raise from_django_validation(exc) from exc
        return Response(self.get_serializer(self.get_queryset().get(pk=instance.pk)).data)
