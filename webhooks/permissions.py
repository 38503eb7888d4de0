"""Scope checks: a view names the scope its writes need; reads need `read` or that scope."""

from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request

from .authentication import ApiKeyUser

READ = "read"


class HasScope(permissions.BasePermission):
    """Allow staff sessions everything; allow an API key what its scopes cover.

    Views set `write_scope` (e.g. "events:write"); safe methods accept `read` or the write scope.
    `scope_for_action` maps an action to the one scope it needs (or a tuple: any of them),
    whatever the method.
    """

    message = "This API key lacks the scope this action needs."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if user is None or not user.is_authenticated:
            return False
        if not isinstance(user, ApiKeyUser):
            return bool(user.is_staff)
        scopes = set(user.api_key.scopes)
        write_scope = getattr(view, "write_scope", None)
        # An action may name its own scope (reading a secret needs more than `read`).
        needed = getattr(view, "scope_for_action", {}).get(getattr(view, "action", None))
        if needed is None and request.method in permissions.SAFE_METHODS:
            return READ in scopes or (write_scope is not None and write_scope in scopes)
        needed = needed or write_scope
        if needed is None:
            return False
        if isinstance(needed, tuple):  # any one of them
            self.message = f"This API key lacks one of the scopes {', '.join(needed)}."
            return any(scope in scopes for scope in needed)
        self.message = f"This API key lacks the {needed!r} scope."
        return needed in scopes
