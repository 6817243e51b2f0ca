"""The ASGI application uvicorn serves; TOMOGRAPH_ASGI_MIDDLEWARE=1 stacks tomograph's own."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integrations.django_site.settings")

from django.core.asgi import get_asgi_application

import tomograph
from tomograph.integrations.asgi import TracingMiddleware

tomograph.configure(service="django-site", backends=[os.environ["ZIPKIN_URL"]], environ={})
if os.environ.get("TOMOGRAPH_DJANGO_SETUP") == "none":
    from tomograph.integrations import django as traced_django

    traced_django.patch()

application: object = get_asgi_application()
if os.environ.get("TOMOGRAPH_ASGI_MIDDLEWARE"):
    application = TracingMiddleware(application)  # type: ignore[arg-type]
