from __future__ import annotations

from django.urls import path

from . import views

app_name = "portal"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("enter/", views.enter, name="enter"),
    path("signed-out/", views.signed_out, name="signed-out"),
    path("sign-out/", views.sign_out, name="sign-out"),
    path("endpoints/", views.endpoints, name="endpoints"),
    path("endpoints/<str:endpoint_id>/", views.endpoint, name="endpoint"),
    path(
        "endpoints/<str:endpoint_id>/<str:action>/",
        views.endpoint_action,
        name="endpoint-action",
    ),
    path("deliveries/", views.deliveries, name="deliveries"),
    path("deliveries/<str:delivery_id>/", views.delivery, name="delivery"),
    path(
        "deliveries/<str:delivery_id>/resend/",
        views.delivery_resend_view,
        name="delivery-resend",
    ),
    path("events/<str:event_id>/", views.event, name="event"),
    path("dead-letters/", views.dead_letters, name="dead-letters"),
    path("dead-letters/replay/", views.dead_letters_replay_view, name="dead-letters-replay"),
    path("catalog/", views.catalog, name="catalog"),
]
