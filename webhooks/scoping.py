"""A key limited to one application sees and acts on that application's objects only.

Every API view narrows its queryset with `for_key`, so another application's objects are simply
not found (404), the same answer as for objects that do not exist. Staff sessions and keys
without an application see everything.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework.exceptions import PermissionDenied

from .models import ApiKey, Application


def key_application(request: Any) -> Application | None:
    """The application the request's API key is limited to, if any."""
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiKey) and auth.application_id is not None:
        return auth.application
    return None


def for_key(request: Any, queryset: QuerySet[Any], path: str) -> QuerySet[Any]:
    """`queryset` narrowed to the key's application through the relation `path`."""
    application = key_application(request)
    if application is None:
        return queryset
    return queryset.filter(**{path: application.pk})


def refuse_if_limited(request: Any, what: str) -> None:
    """Refuse an action on shared objects (applications, event types) to a limited key."""
    application = key_application(request)
    if application is not None:
        raise PermissionDenied(
            f"This API key is limited to application {application.uid!r}; it cannot {what}."
        )
