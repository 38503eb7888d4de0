"""API views for events (ingestion and reading), deliveries and their attempts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from django.db.models import Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from deliveries import metrics_reading
from deliveries.models import DeadLetter, Delivery, Event
from deliveries.selectors import (
    attempt_list,
    dead_letter_list,
    deliveries_between,
    delivery_counts,
    delivery_list,
    event_list,
    events_between,
)
from deliveries.services.dead_letters import AlreadyHandled, dead_letter_skip, dead_letters_replay
from deliveries.services.ingest import (
    EventInput,
    IdempotencyConflict,
    IngestRejected,
    events_ingest,
)
from deliveries.services.resend import NotNow, delivery_resend, delivery_retry_now
from schemas_app.models import EventType
from webhooks.models import Endpoint
from webhooks.scoping import for_key, key_application
from webhooks_project.errors import Conflict, UnprocessableEntity
from webhooks_project.pagination import InOrder, NewestFirst
from webhooks_project.strict import refuse_body, unknown_fields

from .serializers import (
    MAX_BATCH,
    AcceptedEventSerializer,
    AttemptSerializer,
    DeadLetterFilterSerializer,
    DeadLetterSerializer,
    DeliverySerializer,
    EventCreateSerializer,
    EventDetailSerializer,
    EventSerializer,
    MetricsQuerySerializer,
    MetricsSerializer,
    ReplayResultSerializer,
    TimeRangeSerializer,
)

# An event's fields, checked before its serializer runs: an unknown one is a 400 (a field that
# is not ours), where the serializer's own errors are 422 (a rule the event breaks).
EVENT_FIELDS = frozenset(EventCreateSerializer().fields)


class EventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Post business events; read them with their deliveries."""

    write_scope = "events:write"
    pagination_class = NewestFirst

    def get_queryset(self):
        if self.action == "retrieve":
            deliveries = Delivery.objects.of_events([self.kwargs.get("pk", "")])
            qs = Event.objects.select_related("application", "schema_version").prefetch_related(
                Prefetch("deliveries", queryset=deliveries)
            )
        else:
            qs = events_between(
                event_list().select_related("schema_version"), **_time_range(self.request)
            )
            params = self.request.query_params
            event_type = params.get("type") or params.get("event_type")
            if event_type:
                qs = qs.filter(event_type_id=event_type)  # type: ignore[misc]  # the stubs type a string primary key's _id as int
            if params.get("application"):
                qs = qs.filter(application__uid=params["application"])
        return for_key(self.request, qs, "application_id")

    def get_serializer_class(self):
        return EventDetailSerializer if self.action == "retrieve" else EventSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("type", OpenApiTypes.STR, description="an event type name"),
            OpenApiParameter("event_type", OpenApiTypes.STR, description="the same as type"),
            OpenApiParameter("application", OpenApiTypes.STR, description="an application uid"),
            OpenApiParameter(
                "created_after", OpenApiTypes.DATETIME, description="accepted at or after"
            ),
            OpenApiParameter(
                "created_before", OpenApiTypes.DATETIME, description="accepted before"
            ),
            OpenApiParameter(
                "since", OpenApiTypes.DATETIME, description="created_after's old name"
            ),
            OpenApiParameter(
                "until", OpenApiTypes.DATETIME, description="created_before's old name"
            ),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset())) or []
        counts = delivery_counts([event.pk for event in page])
        for event in page:
            event.delivery_count = counts.get(event.pk, 0)  # read by EventSerializer
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        request=EventCreateSerializer,
        responses={202: AcceptedEventSerializer, 409: OpenApiTypes.OBJECT},
    )
    def create(self, request: Request) -> Response:
        """Validate one event against its schema, store it and fan it out (202)."""
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["Send one JSON object."]})
        unknown = unknown_fields(request.data, EVENT_FIELDS)
        if unknown:
            raise ValidationError(unknown)  # 400: not a rule broken, a field that is not ours
        serializer = EventCreateSerializer(data=request.data)
        if not serializer.is_valid():
            raise UnprocessableEntity(serializer.errors)
        try:
            (result,) = events_ingest(
                items=_bound(
                    request, [EventCreateSerializer.input_from(serializer.validated_data)]
                ),
                single=True,
                only_application=_limit(request),
            )
        except IngestRejected as exc:
            raise UnprocessableEntity(exc.errors) from exc
        except IdempotencyConflict as exc:
            raise Conflict(exc.errors) from exc
        return Response(AcceptedEventSerializer(result).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=EventCreateSerializer(many=True),
        responses={202: AcceptedEventSerializer(many=True), 409: OpenApiTypes.OBJECT},
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
        unknown = {
            str(i): u
            for i, item in enumerate(request.data)
            if (u := unknown_fields(item, EVENT_FIELDS))
        }
        if unknown:
            raise ValidationError(unknown)
        plain = EventCreateSerializer.plain_inputs(request.data)
        if plain is None:
            serializer = EventCreateSerializer(data=request.data, many=True)
            if not serializer.is_valid():
                raise UnprocessableEntity(_by_index(serializer.errors))
            plain = [EventCreateSerializer.input_from(v) for v in serializer.validated_data]
        items = _bound(request, plain)
        try:
            results = events_ingest(items=items, only_application=_limit(request))
        except IngestRejected as exc:
            raise UnprocessableEntity(exc.errors) from exc
        except IdempotencyConflict as exc:
            raise Conflict(exc.errors) from exc
        return Response(
            {"count": len(results), "results": AcceptedEventSerializer(results, many=True).data},
            status=status.HTTP_202_ACCEPTED,
        )


def _by_index(errors: Any) -> dict[str, Any]:
    """A list serializer's errors keyed by item index: DRF gives a list with an entry per item,
    or (3.16) a dict of only the failing indexes; enumerating that dict named its keys as
    indexes ("/0" with detail "1" for item 1's problem)."""
    pairs = errors.items() if isinstance(errors, dict) else enumerate(errors)
    return {str(i): e for i, e in pairs if e}


def _bound(request: Request, items: list[EventInput]) -> list[EventInput]:
    """A limited key's events belong to its application: one that names no application gets it;
    one that names another is left as is, and is refused as an unknown application."""
    application = key_application(request)
    if application is None:
        return items
    return [
        replace(item, application=application.uid) if item.application is None else item
        for item in items
    ]


def _time_range(request: Request) -> dict[str, Any]:
    """`since`/`until` from the query (400 naming the parameter when not a date-time)."""
    serializer = TimeRangeSerializer(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    given = serializer.validated_data
    return {
        "since": given.get("created_after") or given.get("since"),
        "until": given.get("created_before") or given.get("until"),
    }


def _limit(request: Request) -> str | None:
    application = key_application(request)
    return application.uid if application is not None else None


class DeliveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Deliveries (event x endpoint) and the audit log of their attempts."""

    serializer_class = DeliverySerializer
    write_scope = None
    # sending again is what replaying a dead letter is
    scope_for_action = {"resend": "dead-letters:replay", "retry_now": "dead-letters:replay"}
    pagination_class = NewestFirst

    def get_queryset(self):
        params = self.request.query_params
        status_filter = params.get("status")
        if status_filter and status_filter not in Delivery.Status.values:
            raise ValidationError(
                {"status": [f"Choose one of {', '.join(Delivery.Status.values)}."]}
            )
        qs = delivery_list(
            event=params.get("event"),
            endpoint=params.get("endpoint"),
            status=status_filter,
            event_type=params.get("event_type"),
            application=params.get("application"),
        )
        return for_key(
            self.request,
            deliveries_between(qs, **_time_range(self.request)),
            "endpoint__application_id",
        )

    @extend_schema(
        parameters=[
            OpenApiParameter("event", OpenApiTypes.STR),
            OpenApiParameter("endpoint", OpenApiTypes.STR),
            OpenApiParameter("status", OpenApiTypes.STR, enum=Delivery.Status.values),
            OpenApiParameter("event_type", OpenApiTypes.STR, description="its event's type"),
            OpenApiParameter(
                "application", OpenApiTypes.STR, description="its endpoint's application uid"
            ),
            OpenApiParameter(
                "created_after", OpenApiTypes.DATETIME, description="made at or after"
            ),
            OpenApiParameter("created_before", OpenApiTypes.DATETIME, description="made before"),
            OpenApiParameter(
                "since", OpenApiTypes.DATETIME, description="created_after's old name"
            ),
            OpenApiParameter(
                "until", OpenApiTypes.DATETIME, description="created_before's old name"
            ),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(request=None, responses={202: DeliverySerializer, 409: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def resend(self, request: Request, pk: str | None = None) -> Response:
        """Send a finished delivery (succeeded, failed, dead) again: a new series of attempts
        with a fresh schedule and the same `webhook-id`. 409 if it is not finished or its
        endpoint is disabled. Audited."""
        return self._operate(request, delivery_resend)

    @extend_schema(request=None, responses={202: DeliverySerializer, 409: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"], url_path="retry-now")
    def retry_now(self, request: Request, pk: str | None = None) -> Response:
        """A pending delivery waiting on its backoff goes now (attempt count unchanged). 409 if
        it is not pending or its endpoint is disabled. Audited."""
        return self._operate(request, delivery_retry_now)

    def _operate(self, request: Request, operation: Any) -> Response:
        refuse_body(request.data)
        delivery = self.get_object()
        try:
            changed = operation(delivery_id=delivery.pk, actor=_actor(request))
        except NotNow as exc:
            return _nothing_done(exc)
        return Response(DeliverySerializer(changed).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses=AttemptSerializer(many=True))
    @action(detail=True, methods=["get"])
    def attempts(self, request: Request, pk: str | None = None) -> Response:
        """Every attempt of this delivery: number, time, duration, status, error, response."""
        delivery = self.get_object()
        paginator = InOrder()
        page = paginator.paginate_queryset(attempt_list(delivery_id=delivery.pk), request, self)
        return paginator.get_paginated_response(AttemptSerializer(page, many=True).data)


def _nothing_done(refusal: Exception) -> Response:
    """409: an operator action that does not apply to the object as it stands, and why."""
    reason = str(refusal)
    ending = "" if reason.endswith(".") else "."
    return Response(
        {"error": "conflict", "detail": f"Nothing done: {reason}{ending}"},
        status=status.HTTP_409_CONFLICT,
    )


def _actor(request: Request) -> str:
    return str(request.user)


class DeadLetterViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Deliveries that ended without success, waiting for a replay."""

    serializer_class = DeadLetterSerializer
    write_scope = "dead-letters:replay"
    pagination_class = NewestFirst

    def _filters(self, data: Any) -> dict[str, Any]:
        serializer = DeadLetterFilterSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def get_queryset(self):
        if self.action in ("list", "replay_many"):
            params = self.request.query_params if self.action == "list" else self.request.data
            include = str(self.request.query_params.get("include_replayed", "")).lower()
            qs = dead_letter_list(
                **self._filters(params), include_replayed=include in ("1", "true", "yes")
            )
        else:
            qs = DeadLetter.objects.all()
        return for_key(self.request, qs, "endpoint__application_id")

    @extend_schema(
        parameters=[
            OpenApiParameter("endpoint", OpenApiTypes.STR),
            OpenApiParameter("event_type", OpenApiTypes.STR),
            OpenApiParameter("since", OpenApiTypes.DATETIME),
            OpenApiParameter("until", OpenApiTypes.DATETIME),
            OpenApiParameter("include_replayed", OpenApiTypes.BOOL),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(request=None, responses={202: ReplayResultSerializer})
    @action(detail=True, methods=["post"])
    def replay(self, request: Request, pk: str | None = None) -> Response:
        """Put this dead letter's delivery back to pending with a fresh retry schedule."""
        refuse_body(request.data)
        dead_letter = self.get_object()
        if dead_letter.replayed_at is not None:
            raise ValidationError({"non_field_errors": ["This dead letter was already replayed."]})
        result = dead_letters_replay(
            dead_letters=DeadLetter.objects.filter(pk=dead_letter.pk), actor=_actor(request)
        )
        return Response(ReplayResultSerializer(result).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={200: DeadLetterSerializer, 409: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def skip(self, request: Request, pk: str | None = None) -> Response:
        """Mark this dead letter handled without sending its delivery again: the delivery stays
        as it ended, and under `ordering_on_dead: block` its ordering key moves on to the next
        delivery. 409 if it was already replayed or skipped. Audited."""
        refuse_body(request.data)
        dead_letter = self.get_object()
        try:
            skipped = dead_letter_skip(dead_letter_id=dead_letter.pk, actor=_actor(request))
        except AlreadyHandled as exc:
            return _nothing_done(exc)
        return Response(DeadLetterSerializer(skipped).data)

    @extend_schema(request=DeadLetterFilterSerializer, responses={202: ReplayResultSerializer})
    @action(detail=False, methods=["post"], url_path="replay")
    def replay_many(self, request: Request) -> Response:
        """Replay every waiting dead letter matching the filters in the body (all if none)."""
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["Send a JSON object of filters."]})
        result = dead_letters_replay(dead_letters=self.get_queryset(), actor=_actor(request))
        return Response(ReplayResultSerializer(result).data, status=status.HTTP_202_ACCEPTED)


class MetricsView(APIView):
    """The three delivery metrics over the last hour, day or week."""

    @extend_schema(parameters=[MetricsQuerySerializer], responses=MetricsSerializer)
    def get(self, request: Request) -> Response:
        """Success rate, latency to the consumer (mean, p50, p95, p99), attempt durations,
        failed attempts retried and dead letters, in total and as a time series. Filter by
        `endpoint` and `event_type`; a key limited to an application sees its own endpoints."""
        query = MetricsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        endpoints = for_key(request, Endpoint.objects.all(), "application_id")
        endpoint_ids: list[str] | None = None
        if "endpoint" in params:
            if not endpoints.filter(pk=params["endpoint"]).exists():
                raise ValidationError({"endpoint": [f"No endpoint {params['endpoint']!r}."]})
            endpoint_ids = [params["endpoint"]]
        elif key_application(request) is not None:
            endpoint_ids = list(endpoints.values_list("pk", flat=True))
        event_type = params.get("event_type")
        if event_type is not None and not EventType.objects.filter(name=event_type).exists():
            raise ValidationError({"event_type": [f"No event type {event_type!r}."]})
        scope = metrics_reading.window_scope(
            params["window"], endpoint_ids=endpoint_ids, event_type=event_type
        )
        report = metrics_reading.report(scope, window=params["window"])
        return Response(MetricsSerializer(report).data)
