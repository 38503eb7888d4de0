"""API views for applications and endpoints."""

from __future__ import annotations

from typing import Any, cast

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.relations import RelatedField
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer, Serializer

from audit.models import AuditRecord
from schemas_app.models import EventType
from webhooks import subscriptions
from webhooks.models import Application, Endpoint
from webhooks.operational import OPERATIONAL_EVENT_TYPES
from webhooks.scoping import for_key, key_application, refuse_if_limited
from webhooks.selectors import endpoint_active_secrets, endpoint_condition, endpoint_list
from webhooks.services import (
    application_create,
    application_delete,
    application_update,
    endpoint_create,
    endpoint_delete,
    endpoint_secret_rotate,
    endpoint_update,
)
from webhooks_project.errors import UnprocessableEntity, from_django_validation
from webhooks_project.pagination import NewestFirst

from .serializers import (
    ApplicationSerializer,
    AuditRecordFilterSerializer,
    AuditRecordSerializer,
    EndpointCreatedSerializer,
    EndpointHeadersSerializer,
    EndpointSecretSerializer,
    EndpointSerializer,
    FilterTestResultSerializer,
    FilterTestSerializer,
    SecretRotatedSerializer,
    SecretRotateSerializer,
    credentials,
)


class ApplicationViewSet(viewsets.ModelViewSet[Application]):
    """Consumer organisations; an event posted for one goes only to its endpoints."""

    serializer_class = ApplicationSerializer
    lookup_field = "uid"
    write_scope = "endpoints:manage"

    def get_queryset(self):
        return for_key(self.request, Application.objects.all(), "pk")

    def perform_destroy(self, instance: Application) -> None:
        refuse_if_limited(self.request, "delete its application")
        application_delete(application=instance, actor=str(self.request.user))

    def perform_create(self, serializer: BaseSerializer[Application]) -> None:
        refuse_if_limited(self.request, "create applications")
        try:
            serializer.instance = application_create(
                actor=str(self.request.user), **serializer.validated_data
            )
        except DjangoValidationError as exc:
            raise from_django_validation(exc) from exc

    def perform_update(self, serializer: BaseSerializer[Application]) -> None:
        assert serializer.instance is not None  # an update has its instance
        try:
            serializer.instance = application_update(
                application=serializer.instance,
                actor=str(self.request.user),
                **serializer.validated_data,
            )
        except DjangoValidationError as exc:
            raise from_django_validation(exc) from exc


class EndpointViewSet(viewsets.ModelViewSet[Endpoint]):
    """Endpoints that receive signed webhooks."""

    serializer_class = EndpointSerializer
    write_scope = "endpoints:manage"
    scope_for_action = {
        "secret": "endpoints:manage",
        "reveal_headers": "endpoints:manage",
        "filter_test": ("read", "endpoints:manage"),  # it stores nothing
    }

    def get_queryset(self):
        return for_key(self.request, endpoint_list(), "application_id")

    def get_serializer(self, *args: Any, **kwargs: Any) -> Any:
        serializer = super().get_serializer(*args, **kwargs)
        if kwargs.get("many"):
            return serializer  # lists are read-only
        field = cast(Serializer, serializer).fields.get("application")
        if isinstance(field, RelatedField) and not field.read_only:
            # another application's uid is "does not exist", like one that does not
            # (the stubs read RelatedField.queryset as a manager descriptor)
            field.queryset = for_key(self.request, Application.objects.all(), "pk")  # type: ignore[arg-type]
        return serializer

    @extend_schema(responses={201: EndpointCreatedSerializer})
    def create(self, request: Request, *args: object, **kwargs: object) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        limited = key_application(request)
        if limited is not None and fields.get("application") is None:
            fields["application"] = limited  # a limited key's endpoints are its application's
        try:
            endpoint, secret = endpoint_create(actor=str(request.user), **fields)
        except DjangoValidationError as exc:
            raise from_django_validation(exc) from exc
        data = EndpointSerializer(endpoint).data
        data.update(credentials(secret))
        return Response(data, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer: BaseSerializer[Endpoint]) -> None:
        assert serializer.instance is not None  # an update has its instance
        try:
            serializer.instance = endpoint_update(
                endpoint=serializer.instance,
                actor=str(self.request.user),
                **serializer.validated_data,
            )
        except DjangoValidationError as exc:
            raise from_django_validation(exc) from exc

    def perform_destroy(self, instance) -> None:
        endpoint_delete(endpoint=instance, actor=str(self.request.user))

    @extend_schema(request=None, responses=EndpointSecretSerializer)
    @action(detail=True, methods=["get"])
    def secret(self, request: Request, pk: str | None = None) -> Response:
        """The endpoint's current signing secret."""
        endpoint = self.get_object()
        secrets = endpoint_active_secrets(endpoint_id=endpoint.pk)
        return Response(EndpointSecretSerializer(secrets[0] if secrets else None).data)

    @extend_schema(request=None, responses=EndpointHeadersSerializer)
    @action(detail=True, methods=["get"], url_path="headers")
    def reveal_headers(self, request: Request, pk: str | None = None) -> Response:
        """The endpoint's custom headers with their values (reads of the endpoint mask them)."""
        endpoint = self.get_object()
        return Response({"headers": dict(endpoint.headers or {})})

    @extend_schema(request=FilterTestSerializer, responses=FilterTestResultSerializer)
    @action(detail=True, methods=["post"], url_path="filter-test")
    def filter_test(self, request: Request, pk: str | None = None) -> Response:
        """Whether an event of `type` with `data` would be delivered to this endpoint (its
        subscription and its filters), and if not, which clause said no. Stores nothing."""
        endpoint = self.get_object()
        given = FilterTestSerializer(data=request.data)
        given.is_valid(raise_exception=True)  # a missing or unknown field: 400
        event_type, data = given.validated_data["type"], given.validated_data["data"]
        if not EventType.objects.filter(name=event_type).exists():
            raise UnprocessableEntity(
                [
                    {
                        "pointer": "/type",
                        "detail": f"Unknown event type {event_type!r}.",
                        "code": "unknown_event_type",
                    }
                ]
            )
        answer: dict[str, Any] = {"matches": False, "subscribed": False, "clause": None}
        if not subscriptions.subscribed(endpoint.event_types, event_type, OPERATIONAL_EVENT_TYPES):
            answer["reason"] = f"the endpoint does not subscribe to {event_type!r}"
            return Response(answer)
        answer["subscribed"] = True
        condition = endpoint_condition(endpoint.filter, endpoint.filters, event_type)
        miss = condition.explain(data) if condition is not None else None
        if miss is None:
            return Response(answer | {"matches": True, "reason": None})
        return Response(answer | {"clause": miss.pointer, "reason": miss.reason})

    @extend_schema(request=SecretRotateSerializer, responses=SecretRotatedSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, pk: str | None = None) -> Response:
        """A new signing secret, shown once; the old one keeps signing beside it for the grace
        (`WEBHOOKS_SECRET_ROTATION_GRACE`, or `grace_seconds` in the body)."""
        endpoint = self.get_object()
        options = SecretRotateSerializer(data=request.data or {})
        options.is_valid(raise_exception=True)
        rotated = endpoint_secret_rotate(
            endpoint=endpoint,
            actor=str(request.user),
            grace_seconds=options.validated_data.get("grace_seconds"),
        )
        return Response(
            SecretRotatedSerializer(
                {**credentials(rotated.secret), "previous_expire_at": rotated.previous_expire_at}
            ).data
        )


class AuditRecordViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log of configuration changes, newest first; filters `object_type`,
    `object_id`, `action`, `actor` (exact), `since` and `until` (ISO-8601). A key limited to an
    application sees its application's records only."""

    serializer_class = AuditRecordSerializer
    pagination_class = NewestFirst

    def get_queryset(self):
        qs = AuditRecord.objects.order_by("-id")
        limited = key_application(self.request)
        if limited is not None:
            qs = qs.filter(application=limited.uid)
        if self.action != "list":
            return qs
        filters = AuditRecordFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        lookups = {"since": "at__gte", "until": "at__lt"}
        return qs.filter(
            **{lookups.get(name, name): value for name, value in filters.validated_data.items()}
        )

    @extend_schema(parameters=[AuditRecordFilterSerializer])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)
