"""Which event types an endpoint subscribes to: names, and wildcards over dotted names.

`*` stands for a whole dotted segment: in the middle of a pattern it matches exactly one
segment (`order.*.paid` matches `order.eu.paid`), at its end one or more (`order.*` matches
`order.created` and `order.item.added`, not `order`). `*` alone matches every business event
(like an empty list). Wildcards never match the operational event types (`endpoint.disabled`
and the rest): those are received only when listed by name. This module is pure (no Django).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from functools import lru_cache


class PatternError(ValueError):
    pass


def is_pattern(name: str) -> bool:
    return "*" in name


def check_pattern(name: str) -> None:
    """Raise PatternError unless `name` is a valid wildcard pattern."""
    segments = name.split(".")
    if any(not s for s in segments):
        raise PatternError(f"{name!r}: dotted segments may not be empty.")
    if any("*" in s and s != "*" for s in segments):
        raise PatternError(f"{name!r}: '*' stands for a whole segment (order.*, not order*).")


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str]:
    segments = pattern.split(".")
    parts = []
    for i, segment in enumerate(segments):
        if segment != "*":
            parts.append(re.escape(segment))
        elif i == len(segments) - 1:
            parts.append(r"[^.]+(?:\.[^.]+)*")
        else:
            parts.append(r"[^.]+")
    return re.compile(r"\.".join(parts))


def matches(pattern: str, event_type: str) -> bool:
    if not is_pattern(pattern):
        return pattern == event_type
    return _regex(pattern).fullmatch(event_type) is not None


def subscribed(patterns: Sequence[str], event_type: str, operational: Collection[str]) -> bool:
    """Whether an endpoint listing `patterns` (empty: every business event) gets `event_type`."""
    if event_type in operational:
        return event_type in patterns
    if not patterns:
        return True
    return any(matches(p, event_type) for p in patterns)


def patterns_for(event_type: str, limit: int = 10) -> list[str] | None:
    """Every pattern that matches `event_type` (for an indexed lookup of the endpoints that
    list one), or None when the name has more than `limit` segments (too many to list)."""
    segments = event_type.split(".")
    if len(segments) > limit:
        return None
    out: set[str] = set()

    def spell(prefix: list[str]) -> list[list[str]]:
        variants: list[list[str]] = [[]]
        for segment in prefix:
            variants = [v + [s] for v in variants for s in (segment, "*")]
        return variants

    for variant in spell(segments):  # the same number of segments
        out.add(".".join(variant))
    for k in range(len(segments)):  # a trailing * for the rest (one or more segments)
        for variant in spell(segments[:k]):
            out.add(".".join([*variant, "*"]))
    out.discard(event_type)
    return sorted(out)


# Channels (Svix's model): an event may be sent on channels, an endpoint may listen to some.
CHANNEL = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
MAX_EVENT_CHANNELS = 10
MAX_ENDPOINT_CHANNELS = 50


def channels_problem(names: object, most: int) -> str | None:
    """Why `names` is not a list of channel names (None: it is)."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return "Give a list of channel names."
    if len(names) > most:
        return f"At most {most} channels."
    bad = [n for n in names if not CHANNEL.fullmatch(n)]
    if bad:
        return f"{bad[0]!r}: a channel is 1 to 128 letters, digits, and _ . : -"
    return None


def on_channels(listening: Collection[str], sent_on: Collection[str] | None) -> bool:
    """Whether an endpoint listening to `listening` gets an event sent on `sent_on`: one that
    listens to none gets every event; one that listens to some gets only events sent on at
    least one of them."""
    if not listening:
        return True
    return bool(sent_on) and any(c in listening for c in sent_on or ())
