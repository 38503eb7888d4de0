"""The base of every management command here: a bad argument or a refused value is one clear
line on stderr and exit status 2 (the usage-error status argparse uses), never a traceback."""

from __future__ import annotations

import math
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import DataError, IntegrityError


def one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        if hasattr(exc, "error_dict"):
            return "; ".join(f"{field}: {' '.join(m)}" for field, m in exc.message_dict.items())
        return "; ".join(exc.messages)
    return " ".join(str(exc).split()) or type(exc).__name__


class Command(BaseCommand):
    """Commands subclass this instead of Django's BaseCommand."""

    def execute(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute(*args, **options)
        except CommandError as exc:
            if exc.returncode == 1:  # Django's default: ours are usage errors
                raise CommandError(str(exc), returncode=2) from exc
            raise
        except (ValidationError, DataError, IntegrityError, ValueError, OverflowError) as exc:
            raise CommandError(one_line(exc), returncode=2) from exc


def positive_days(value: str) -> float:
    """An argparse type: a finite number of days above zero and at most a century."""
    import argparse

    try:
        days = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of days") from exc
    if not math.isfinite(days) or not 0 < days <= 36_500:
        raise argparse.ArgumentTypeError(f"{value!r}: give a number of days above 0, at most 36500")
    return days
