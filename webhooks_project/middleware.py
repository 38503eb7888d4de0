"""Request body limits that hold before anything parses the body.

Django reads a body through `LimitedStream(wsgi.input, CONTENT_LENGTH)`: a chunked request has no
Content-Length, so Django (and DRF's parsers on top of it) saw an empty body, and a parser that
read `wsgi.input` itself would have no bound at all (DRF's parsers bypass
DATA_UPLOAD_MAX_MEMORY_SIZE, PYSEC-2026-3827). This middleware refuses a declared length over
WEBHOOKS_MAX_PAYLOAD_BYTES at once, and reads a chunked body itself, at most one byte past the
limit, handing the rest of the stack an ordinary body with its length.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse, JsonResponse

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status)


class BodyLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method in _BODY_METHODS:
            refused = self._limit(request, settings.WEBHOOKS_MAX_PAYLOAD_BYTES)
            if refused is not None:
                return refused
        return self.get_response(request)

    @staticmethod
    def _limit(request: HttpRequest, limit: int) -> HttpResponse | None:
        declared = request.META.get("CONTENT_LENGTH")
        if declared:
            try:
                length = int(declared)
            except ValueError:
                return _error(400, "parse_error", "Content-Length is not a number.")
            if length > limit:
                return _error(413, "payload_too_large", f"Request body exceeds {limit} bytes.")
            return None
        if "chunked" not in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            return None
        source = request.META.get("wsgi.input")
        if source is None:
            return None
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = source.read(min(64 * 1024, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            # Read on (and discard) up to the limit again before answering, so a client that is
            # still sending a body a little too large gets the 413 rather than a reset
            # connection; a larger one is cut off when the server closes.
            drained = 0
            while drained < limit and source.read(min(64 * 1024, limit - drained + 1)):
                drained += 64 * 1024
            return _error(413, "payload_too_large", f"Request body exceeds {limit} bytes.")
        body = b"".join(chunks)
        request.META["CONTENT_LENGTH"] = str(len(body))
        # WSGIRequest itself sets a LimitedStream here; the stubs say BinaryIO
        request._stream = LimitedStream(io.BytesIO(body), len(body))  # type: ignore[assignment]
        return None


class NulCharacterMiddleware:
    """Refuse NUL characters in the path and query with 400: PostgreSQL cannot store or compare
    text containing them, so a filter like `?endpoint=%00` would otherwise end as a 500."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path or any(
            "\x00" in key or any("\x00" in value for value in values)
            for key, values in request.GET.lists()
        ):
            return _error(400, "bad_request", "NUL characters are not allowed in the URL.")
        return self.get_response(request)
