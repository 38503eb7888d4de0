"""The API's pagination.

Lists that grow with traffic (events, deliveries, attempts, dead letters, audit records) are
paged by cursor: `{"next", "previous", "results"}`, with `next` / `previous` links carrying an
opaque `?cursor=`. A page is one index range read (`WHERE id < last seen ORDER BY id DESC LIMIT
n + 1`), so page 10,000 costs what page 1 costs, and nothing counts the whole table (a `count`
over a month of deliveries took seconds). Lists of configuration (applications, endpoints, event
types, keys) are small and keep page numbers with a count.

`?page_size=` is 1 to 500 (default 50); anything else, or a cursor that is not one of ours, is a
400 naming the parameter.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination, PageNumberPagination
from rest_framework.request import Request

MAX_PAGE_SIZE = 500


def _page_size(request: Request, default: int) -> int:
    raw = request.query_params.get("page_size")
    if raw is None:
        return default
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ValidationError({"page_size": [f"Send an integer from 1 to {MAX_PAGE_SIZE}."]})
    return size


class Pagination(PageNumberPagination):
    """`?page=` and `?page_size=` (1 to 500), with a count: for the small configuration lists."""

    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def get_page_size(self, request: Request) -> int:
        return _page_size(request, self.page_size or 50)


class NewestFirst(CursorPagination):
    """Cursor pages, newest first by the (time-ordered, unique) primary key."""

    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def get_page_size(self, request: Request) -> int:
        return _page_size(request, self.page_size or 50)

    def decode_cursor(self, request: Request) -> Any:
        try:
            return super().decode_cursor(request)
        except NotFound as exc:
            raise ValidationError({"cursor": ["Not a cursor from this API's links."]}) from exc


class InOrder(NewestFirst):
    """Cursor pages in ascending order of `number` (a delivery's attempts)."""

    ordering = "number"
