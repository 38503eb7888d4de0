"""One JSON error shape for every API failure, with JSON pointers to the offending fields.

{"error": "validation_error", "detail": "human summary",
 "errors": [{"pointer": "/data/amount", "detail": "...", "keyword": "minimum"}]}
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from webhooks_project.pointers import escape_pointer_token

logger = logging.getLogger(__name__)


class ServiceUnavailable(exceptions.APIException):
    """A dependency (the database) is away: the client should retry; nothing was stored."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The service is temporarily unavailable; nothing was stored. Retry later."
    default_code = "service_unavailable"


class UnprocessableEntity(exceptions.ValidationError):
    """Well-formed JSON that breaks a rule (unknown event type, schema violation)."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "invalid"


class Conflict(exceptions.ValidationError):
    """The request contradicts what was stored before (an idempotency key reused with another
    body); `errors` name the original."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


def from_django_validation(exc: DjangoValidationError) -> exceptions.ValidationError:
    """A service's Django ValidationError (per field, or not) as a DRF one for the API. An
    error raised with `params={"pointer": ...}` points inside its field (`/filter/$or/0`)."""
    if not hasattr(exc, "error_dict"):
        return exceptions.ValidationError(exc.messages)
    detail: dict[str, list[Any]] = {}
    for field, errors in exc.error_dict.items():
        for error in errors:
            params = error.params if isinstance(error.params, dict) else {}
            for message in error.messages:
                if "pointer" in params:
                    entry = {"pointer": params["pointer"], "detail": message}
                    detail.setdefault(field, []).append(entry | {"code": error.code or ""})
                else:
                    detail.setdefault(field, []).append(message)
    return exceptions.ValidationError(detail)


def flatten_errors(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    """Turn DRF's nested error detail into a flat list of {"pointer", "detail", "code"}."""
    if isinstance(detail, dict):
        # Errors that already carry their own pointer (raised by our validators) pass through.
        if "pointer" in detail and "detail" in detail:
            entry = {key: str(value) for key, value in detail.items()}
            entry["pointer"] = prefix + entry["pointer"]
            return [entry]
        out: list[dict[str, str]] = []
        for key, value in detail.items():
            token = "" if key == "non_field_errors" else "/" + escape_pointer_token(key)
            out.extend(flatten_errors(value, prefix + token))
        return out
    if isinstance(detail, list):
        out = []
        for index, item in enumerate(detail):
            if isinstance(item, dict) and "pointer" in item and "detail" in item:
                out.extend(flatten_errors(item, prefix))
            elif isinstance(item, dict | list):
                out.extend(flatten_errors(item, f"{prefix}/{index}"))
            else:
                out.append(
                    {"pointer": prefix, "detail": str(item), "code": getattr(item, "code", "")}
                )
        return out
    return [{"pointer": prefix, "detail": str(detail), "code": getattr(detail, "code", "")}]


_CODES = {
    400: "bad_request",
    401: "authentication_failed",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "throttled",
    503: "service_unavailable",
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler: DRF's statuses and headers, our body shape; DB outages become 503."""
    if isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DatabaseError) and "connection" in str(exc).lower()
    ):
        logger.warning("database unavailable while serving %s: %s", context.get("view"), exc)
        exc = ServiceUnavailable()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = _CODES.get(response.status_code, "error")
    if isinstance(exc, exceptions.ParseError):
        code = "parse_error"
    body: dict[str, Any] = {"error": code}
    if isinstance(exc, exceptions.ValidationError):
        errors = flatten_errors(exc.detail)
        body["detail"] = (
            errors[0]["detail"] if len(errors) == 1 else f"{len(errors)} problems in the request"
        )
        body["errors"] = errors
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        body["detail"] = str(detail)
    response.data = body
    return response


def _json_error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse(
        {
            "error": code,
            "detail": detail,
            "errors": [{"pointer": "", "detail": detail, "code": code}],
        },
        status=status,
    )


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """`handler404`: under /api/ the API's error shape (a route that does not exist, such as
    `/api/v1/endpoints//`, answered Django's HTML page); elsewhere Django's page."""
    if request.path.startswith("/api/"):
        return _json_error(
            404, "not_found", f"No such route: {request.method} {request.path} (see /api/docs/)."
        )
    return defaults.page_not_found(request, exception or Http404())


def server_error(request: HttpRequest) -> HttpResponse:
    """`handler500`: under /api/ the API's error shape, never an HTML page or a traceback."""
    if request.path.startswith("/api/"):
        return _json_error(500, "server_error", "The server failed to answer; it is logged.")
    return defaults.server_error(request)
