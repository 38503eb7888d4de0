"""Retry schedules as endpoints and event types give them: a list of delays in seconds."""

from __future__ import annotations

from typing import Any

MAX_SCHEDULE_LENGTH = 20
MAX_RETRY_DELAY = 7 * 24 * 3600


def schedule_problem(schedule: Any) -> str | None:
    """Why `schedule` is not a retry schedule (None: it is, or it is None, meaning unset)."""
    if schedule is None:
        return None
    if (
        not isinstance(schedule, list)
        or len(schedule) > MAX_SCHEDULE_LENGTH
        or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_RETRY_DELAY
            for d in schedule
        )
    ):
        return (
            f"Give a list of at most {MAX_SCHEDULE_LENGTH} whole numbers of seconds, each "
            f"from 0 to {MAX_RETRY_DELAY}."
        )
    return None
