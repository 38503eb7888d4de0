"""Template filters for the dashboard."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def percent(rate: float | None) -> str:
    """0.99661 -> "99.66%": two decimals below 100%, so 2 failures in 600 never read "100%"."""
    if rate is None:
        return "–"
    if rate >= 1:
        return "100%"
    return f"{min(rate * 100, 99.99):.2f}%"
