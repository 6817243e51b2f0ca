"""The WSGI application gunicorn serves; TOMOGRAPH_WSGI_MIDDLEWARE=1 stacks tomograph's own."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integrations.django_site.settings")

from django.core.wsgi import get_wsgi_application

import tomograph

tomograph.configure(service="django-site", backends=[os.environ["ZIPKIN_URL"]], environ={})
if os.environ.get("TOMOGRAPH_DJANGO_SETUP") == "none":
    from tomograph.integrations import django as traced_django

    traced_django.patch()

application = get_wsgi_application()
if os.environ.get("TOMOGRAPH_WSGI_MIDDLEWARE"):
    application = tomograph.Middleware(application)
