"""Database helpers shared by the hot paths."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from django.db import connection


@contextmanager
def binding_cursor() -> Iterator[psycopg.Cursor[Any]]:
    """A server-side-binding cursor on Django's connection, inside its current transaction.

    Django's own cursors bind parameters client-side, quoting every value into the SQL text in
    Python; for the hot statements with thousands of values that was most of the worker's CPU
    (measured with py-spy). Errors are wrapped into Django's exceptions like any query's.
    """
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        yield cursor
