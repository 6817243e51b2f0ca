"""Routes of the test project: path() with converters, include() prefixes, a regex route."""

from __future__ import annotations

from django.urls import include, path, re_path
from tests.integrations.django_site import views

api = [
    path("users/<int:user_id>", views.user, name="user"),
    path("orders/<slug:order>/items", views.OrderItems.as_view(), name="order-items"),
]

urlpatterns = [
    path("", views.home),
    path("users/<int:user_id>", views.user),
    path("api/v1/", include((api, "api"))),
    re_path(r"^legacy/(?P<code>[0-9]{4})/$", views.legacy),
    path("boom", views.boom),
    path("boom-async", views.boom_async),
    path("base-exception/<str:kind>", views.base_exception),
    path("status/<int:code>", views.status),
    path("stream", views.stream),
    path("stream-async", views.stream_async),
    path("stream-fails", views.stream_fails),
    path("async/<int:user_id>", views.async_user),
    path("sql/<str:alias>", views.sql),
    path("sql-many/<str:alias>", views.sql_many),
    path("sql-error/<str:alias>", views.sql_error),
    path("sql-detail/<str:alias>", views.sql_detail),
    path("async-sql", views.async_sql),
    path("slow-async", views.slow_async),
    path("echo-trace", views.echo_trace),
]
