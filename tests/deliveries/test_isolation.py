"""One bad claim costs only itself: whatever fails while a claim is prepared ends that claim,
recorded, and the other claims of its batch are sent."""

from __future__ import annotations

from typing import Any

import pytest

from deliveries.models import DeadLetter, Delivery, DeliveryAttempt, Event
from deliveries.services.dispatch import deliveries_dispatch
from schemas_app import payloads
from schemas_app.services import event_type_create
from tests.conftest import wait_until
from tests.sink import Sink
from webhooks.services import endpoint_create

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_claim_that_blows_up_while_prepared_ends_alone(
    sink: Sink, local_sender: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given two deliveries claimed in one batch, one whose payload cannot be built at all
    event_type_create(name="order.created", schema={})
    endpoint, _ = endpoint_create(url=sink.url("batch"))
    poisoned = Event.objects.create(event_type_id="order.created", data={"poison": True})
    healthy = Event.objects.create(event_type_id="order.created", data={"poison": False})
    ids = [
        Delivery.objects.create(event=poisoned, endpoint=endpoint).pk,
        Delivery.objects.create(event=healthy, endpoint=endpoint).pk,
    ]
    shape = payloads.shape

    def exploding(**kwargs: Any) -> Any:
        if kwargs["data"].get("poison"):
            raise RuntimeError("a bug nobody foresaw")
        return shape(**kwargs)

    monkeypatch.setattr(payloads, "shape", exploding)
    # when the batch is dispatched
    assert deliveries_dispatch(delivery_ids=ids) == 2
    # then the healthy one is delivered, and the poisoned one is failed and recorded, not stuck
    wait_until(lambda: Delivery.objects.filter(status__in=["succeeded", "failed"]).count() == 2)
    assert Delivery.objects.get(event=healthy).status == "succeeded"
    bad = Delivery.objects.get(event=poisoned)
    assert bad.status == "failed"
    attempt = DeliveryAttempt.objects.get(delivery=bad)
    assert attempt.error_class == "payload_invalid"
    assert "RuntimeError" in attempt.error
    assert DeadLetter.objects.filter(delivery=bad).exists()
    assert len(sink.requests("batch")) == 1


def test_a_mapping_that_explodes_fails_its_delivery_and_nothing_else(
    sink: Sink, local_sender: None
) -> None:
    event_type_create(name="order.created", schema={})
    bomb = {"order.created": {"x": "|".join(["[@,@]"] * 24)}}
    exploding, _ = endpoint_create(url=sink.url("bomb"), transforms=bomb)
    fine, _ = endpoint_create(url=sink.url("fine"))
    event = Event.objects.create(event_type_id="order.created", data={"a": "x" * 100})
    ids = [Delivery.objects.create(event=event, endpoint=e).pk for e in (exploding, fine)]
    deliveries_dispatch(delivery_ids=ids)
    wait_until(lambda: Delivery.objects.filter(status__in=["succeeded", "failed"]).count() == 2)
    assert Delivery.objects.get(endpoint=fine).status == "succeeded"
    attempt = DeliveryAttempt.objects.get(delivery__endpoint=exploding)
    assert attempt.error_class == "payload_invalid"
    assert "over 1048576 bytes" in attempt.error
    assert sink.requests("bomb") == []
