"""Content filters and wildcard subscriptions: the pure modules (webhooks.filters,
webhooks.subscriptions)."""

from __future__ import annotations

from typing import Any

import pytest

from webhooks.filters import MAX_NODES, FilterError, compile_filter
from webhooks.subscriptions import PatternError, check_pattern, matches, subscribed

ORDER = {
    "id": "o1",
    "total": 120.5,
    "paid": True,
    "currency": "EUR",
    "customer": {"country": "DE", "tier": "gold", "email": None},
    "tags": ["new", "vip"],
    "items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 3}],
}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, True),
        ({"currency": "EUR"}, True),
        ({"currency": "USD"}, False),
        ({"total": {"$gt": 100}}, True),
        ({"total": {"$gt": 100, "$lte": 120}}, False),
        ({"total": {"$gte": 120.5}}, True),
        ({"customer.country": {"$in": ["DE", "AT"]}}, True),
        ({"customer.country": {"$nin": ["DE", "AT"]}}, False),
        ({"customer.tier": {"$neq": "gold"}}, False),
        ({"customer.missing": {"$neq": "x"}}, True),  # a missing field is not equal
        ({"customer.email": None}, True),  # null is a value
        ({"customer.email": {"$exist": True}}, True),
        ({"customer.phone": {"$exist": False}}, True),
        ({"customer.phone": {"$exist": True}}, False),
        ({"tags": "vip"}, True),  # any element of an array
        ({"tags": ["new", "vip"]}, True),  # or the array itself
        ({"tags": ["vip", "new"]}, False),
        ({"items.sku": "B"}, True),  # a path through an array looks into each element
        ({"items.qty": {"$gt": 2}}, True),
        ({"items.0.sku": "B"}, False),  # a numeric segment indexes
        ({"items.1.sku": "B"}, True),
        ({"paid": 1}, False),  # a boolean is not a number
        ({"paid": True}, True),
        ({"total": {"$gt": "100"}}, False),  # strings compare with strings only
        ({"id": {"$gte": "o0"}}, True),
        ({"$or": [{"currency": "USD"}, {"customer.tier": "gold"}]}, True),
        ({"$and": [{"currency": "EUR"}, {"paid": False}]}, False),
        ({"$not": {"currency": "USD"}}, True),
        ({"customer": {"country": "DE", "tier": "gold", "email": None}}, True),  # an object
    ],
)
def test_conditions(spec: dict[str, Any], expected: bool) -> None:
    assert compile_filter(spec).matches(ORDER) is expected


def test_a_miss_names_its_clause_and_what_was_found() -> None:
    condition = compile_filter({"currency": "EUR", "$or": [{"total": {"$lt": 10}}, {"x": 1}]})
    miss = condition.explain(ORDER)
    assert miss is not None
    assert miss.pointer == "/$or"
    assert "/$or/0/total/$lt" in miss.reason
    assert "120.5" in miss.reason
    miss = compile_filter({"customer.country": {"$in": ["FR"]}}).explain(ORDER)
    assert miss is not None
    assert (miss.pointer, miss.reason) == ("/customer.country/$in", '"DE" is not in ["FR"]')


@pytest.mark.parametrize(
    ("spec", "pointer"),
    [
        ([], ""),
        ({"total": {"$regex": "^1"}}, "/total/$regex"),
        ({"total": {"$gt": [1]}}, "/total/$gt"),
        ({"total": {"$in": 3}}, "/total/$in"),
        ({"total": {"$exist": "yes"}}, "/total/$exist"),
        ({"total": {"$gt": 1, "plain": 2}}, "/total"),
        ({"$and": []}, "/$and"),
        ({"$or": [{"a": 1}, "b"]}, "/$or/1"),
        ({"$nope": {}}, "/$nope"),
        ({"a..b": 1}, "/a..b"),
        ({"": 1}, "/"),
        ({"a/b": {"$gt": None}}, "/a~1b/$gt"),
    ],
)
def test_bad_filters_are_refused_with_a_pointer(spec: Any, pointer: str) -> None:
    with pytest.raises(FilterError) as caught:
        compile_filter(spec)
    assert caught.value.pointer == pointer


def test_filters_are_bounded_in_size_and_depth() -> None:
    deep: dict[str, Any] = {"a": 1}
    for _ in range(10):
        deep = {"$not": deep}
    with pytest.raises(FilterError, match="levels deep"):
        compile_filter(deep)
    wide = {"$or": [{f"f{i}": i} for i in range(MAX_NODES)]}
    with pytest.raises(FilterError, match="at most"):
        compile_filter(wide)
    with pytest.raises(FilterError, match="bytes"):
        compile_filter({"a": "x" * 9000})


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("order.*", "order.created", True),
        ("order.*", "order.item.added", True),
        ("order.*", "order", False),
        ("order.*", "orders.created", False),
        ("order.*.paid", "order.eu.paid", True),
        ("order.*.paid", "order.eu.x.paid", False),
        ("*", "anything.at.all", True),
        ("*.created", "order.created", True),
        ("order.created", "order.created", True),
    ],
)
def test_wildcards(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


def test_wildcards_never_take_operational_events() -> None:
    operational = {"endpoint.disabled"}
    assert not subscribed(["*"], "endpoint.disabled", operational)
    assert not subscribed(["endpoint.*"], "endpoint.disabled", operational)
    assert subscribed(["endpoint.disabled"], "endpoint.disabled", operational)
    assert not subscribed([], "endpoint.disabled", operational)
    assert subscribed([], "order.created", operational)


@pytest.mark.parametrize("pattern", ["order*", "order.", "*x.y", "a..*"])
def test_bad_patterns(pattern: str) -> None:
    with pytest.raises(PatternError):
        check_pattern(pattern)
