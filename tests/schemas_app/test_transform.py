"""The transformation engine: mappings compiled once, applied safely, errors named by pointer."""

from __future__ import annotations

from typing import Any

import pytest

from schemas_app import transform
from schemas_app.transform import TransformError, compile_mapping

ORDER: dict[str, Any] = {
    "order": {
        "id": "o-1",
        "total_cents": 1250,
        "currency": "EUR",
        "lines": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}],
    },
    "customer": {"email": "ada@example.com", "name": "Ada"},
}


def test_the_issues_example_maps_an_order_to_the_partner_shape() -> None:
    mapping = compile_mapping(
        {
            "order_id": "order.id",
            "total": {"amount": "order.total_cents", "currency": "order.currency"},
            "customer_email": "customer.email",
            "skus": "order.lines[*].sku",
            "items": "length(order.lines)",
            "source": {"$literal": "shop"},
            "version": 2,
            "pair": ["order.id", {"$literal": "order.id"}],
        }
    )
    assert mapping.apply(ORDER) == {
        "order_id": "o-1",
        "total": {"amount": 1250, "currency": "EUR"},
        "customer_email": "ada@example.com",
        "skus": ["a", "b"],
        "items": 2,
        "source": "shop",
        "version": 2,
        "pair": ["o-1", "order.id"],
    }


def test_a_missing_field_is_null() -> None:
    assert compile_mapping({"x": "order.nope.deeper"}).apply(ORDER) == {"x": None}


@pytest.mark.parametrize(
    ("document", "pointer", "message"),
    [
        ({"total": {"amount": "order.["}}, "/total/amount", "invalid expression 'order.['"),
        ({"a": ["ok", "x ||| y"]}, "/a/1", "invalid expression"),
        ({"a/b": "foo("}, "/a~1b", "invalid expression"),
        ({"x": {"$literal": 1, "y": 2}}, "/x", "must be the only key"),
        ({"x": "a" * 1001}, "/x", "longer than 1000"),
    ],
)
def test_a_bad_mapping_is_refused_with_its_pointer(
    document: Any, pointer: str, message: str
) -> None:
    with pytest.raises(TransformError) as caught:
        compile_mapping(document)
    assert caught.value.pointer == pointer
    assert message in caught.value.message


def test_hostile_mappings_are_bounded() -> None:
    deep: Any = "a"
    for _ in range(20):
        deep = {"k": deep}
    with pytest.raises(TransformError, match="nested deeper"):
        compile_mapping(deep)
    with pytest.raises(TransformError, match="more than 1000 entries"):
        compile_mapping({f"k{i}": "a" for i in range(1001)})
    with pytest.raises(TransformError, match="invalid expression"):
        compile_mapping({"x": "(" * 900 + "a" + ")" * 90})


def test_a_runtime_error_names_the_leaf() -> None:
    mapping = compile_mapping({"n": {"m": "length(order.total_cents)"}})
    with pytest.raises(TransformError) as caught:
        mapping.apply(ORDER)
    assert caught.value.pointer == "/n/m"


def test_a_huge_output_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transform, "MAX_OUTPUT_BYTES", 1000)
    data = {"items": list(range(1000))}
    with pytest.raises(TransformError, match="over 1000"):
        compile_mapping({"a": "items", "b": "items"}).apply(data)


def test_deep_and_large_inputs_are_fine() -> None:
    deep: Any = {"v": 1}
    for _ in range(30):
        deep = {"n": deep}
    path = ".".join(["n"] * 30) + ".v"
    assert compile_mapping({"v": path}).apply(deep) == {"v": 1}
    rows = {"rows": [{"id": i} for i in range(50_000)]}
    assert len(compile_mapping({"ids": "rows[*].id"}).apply(rows)["ids"]) == 50_000


def test_an_expression_that_doubles_its_input_is_stopped_while_it_grows() -> None:
    from schemas_app.transform import MAX_OUTPUT_BYTES, TransformError, compile_mapping

    # 131 characters that would build 2**22 copies of the input, and strings that double
    for expression in ("|".join(["[@,@]"] * 22), "a | " + "|".join(["join('', [@,@])"] * 30)):
        mapping = compile_mapping({"x": expression})  # a legal mapping: only its cost is wrong
        with pytest.raises(TransformError, match=f"over {MAX_OUTPUT_BYTES} bytes") as caught:
            mapping.apply({"a": "xy" * 50})
        assert caught.value.pointer == "/x"
    # shared parts across leaves count too
    wide = compile_mapping({f"k{i}": "@" for i in range(600)})
    with pytest.raises(TransformError, match="over"):
        wide.apply({"blob": "x" * 4000})
