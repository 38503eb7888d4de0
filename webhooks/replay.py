"""The replay window of signed sources: a webhook-id reserved while its request runs is
released when the request was not accepted, so the source may send that message again."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)

REPLAY_KEY = "webhooks.replay_key"  # request.META entry: the webhook-id reserved by this request


class ReplayWindowMiddleware:
    """Release a reserved webhook-id when its request was not accepted (not 2xx)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        key = request.META.get(REPLAY_KEY)
        if key and not 200 <= response.status_code < 300:
            try:
                cache.delete(key)
            except Exception:  # noqa: BLE001 - it expires by itself
                logger.warning("could not release replay key %s", key)
        return response
