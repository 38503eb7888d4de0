"""Custom endpoint headers: secrets on read (names only, values behind a manage-scope route),
and only headers HTTP can carry are accepted, with the offending name in the error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from webhooks.headers import MASK, MAX_HEADERS
from webhooks.models import Endpoint

pytestmark = pytest.mark.django_db

TOKEN = "Bearer partner-secret-token"


def _create(api: APIClient, headers: Any) -> Any:
    return api.post(
        "/api/v1/endpoints/", {"url": "http://127.0.0.1:9/h", "headers": headers}, format="json"
    )


def test_reads_show_header_names_only_and_manage_keys_can_reveal_them(
    api: APIClient, make_api_client: Callable[..., APIClient]
) -> None:
    created = _create(api, {"Authorization": TOKEN, "X-Tenant": "acme"})
    assert created.status_code == 201
    assert TOKEN not in created.content.decode()
    endpoint_id = created.json()["id"]
    reader = make_api_client(["read"])
    for answer in (
        reader.get("/api/v1/endpoints/"),
        reader.get(f"/api/v1/endpoints/{endpoint_id}/"),
    ):
        assert answer.status_code == 200
        assert TOKEN not in answer.content.decode()
        assert "acme" not in answer.content.decode()
    detail = reader.get(f"/api/v1/endpoints/{endpoint_id}/").json()
    assert detail["headers"] == {"authorization": MASK, "x-tenant": MASK}
    # a read key cannot reveal them; a manage key can
    assert reader.get(f"/api/v1/endpoints/{endpoint_id}/headers/").status_code == 403
    revealed = api.get(f"/api/v1/endpoints/{endpoint_id}/headers/")
    assert revealed.json() == {"headers": {"authorization": TOKEN, "x-tenant": "acme"}}
    # sending back what a read showed is refused, so a masked read never overwrites a value
    put_back = api.patch(
        f"/api/v1/endpoints/{endpoint_id}/", {"headers": detail["headers"]}, format="json"
    )
    assert put_back.status_code == 400
    assert Endpoint.objects.get(pk=endpoint_id).headers["authorization"] == TOKEN
    # and a PATCH without headers keeps them
    assert (
        api.patch(
            f"/api/v1/endpoints/{endpoint_id}/", {"description": "x"}, format="json"
        ).status_code
        == 200
    )
    assert Endpoint.objects.get(pk=endpoint_id).headers["authorization"] == TOKEN


@pytest.mark.parametrize(
    ("headers", "pointer"),
    [
        ({"X-Bad\x01": "v"}, "/headers/X-Bad\x01"),
        ({"X Space": "v"}, "/headers/X Space"),
        ({"X-Ünicode": "v"}, "/headers/X-Ünicode"),
        ({"X-Ctl": "a\x07b"}, "/headers/X-Ctl"),
        ({"X-Crlf": "a\r\nInjected: yes"}, "/headers/X-Crlf"),
        ({"X-Tab-End": "a\t"}, "/headers/X-Tab-End"),
        ({"X-Empty": ""}, "/headers/X-Empty"),
        ({"X-Euro": "5 €"}, "/headers/X-Euro"),
        ({"X-Big": "v" * 1025}, "/headers/X-Big"),
        ({"Webhook-Anything": "v"}, "/headers/Webhook-Anything"),
        ({"Host": "evil.example"}, "/headers/Host"),
        ({"Transfer-Encoding": "chunked"}, "/headers/Transfer-Encoding"),
        ({"X-A": "1", "x-a": "2"}, "/headers/x-a"),
        ({f"X-{i}": "v" for i in range(MAX_HEADERS + 1)}, "/headers"),
        ({f"X-{i}": "v" * 1000 for i in range(5)}, "/headers"),
        ({"X-Mask": MASK}, "/headers/X-Mask"),
    ],
)
def test_headers_http_cannot_carry_are_refused_with_their_name(
    api: APIClient, headers: dict[str, str], pointer: str
) -> None:
    answer = _create(api, headers)
    assert answer.status_code == 400, answer.json()
    assert answer.json()["errors"][0]["pointer"] == pointer
    assert not Endpoint.objects.exists()


def test_latin1_values_and_token_names_are_accepted(api: APIClient) -> None:
    answer = _create(api, {"X-Name_1.~!": "café, tab\tinside"})
    assert answer.status_code == 201, answer.json()
