"""Django configured in this process from the test project's settings (once per process)."""

from __future__ import annotations

import django
from django.conf import settings
from tests.integrations.django_site import settings as site_settings


def configure() -> None:
    """Configure and set up Django once; a ``postgres`` alias waits for its port to be set."""
    if settings.configured:
        return
    values = {name: getattr(site_settings, name) for name in dir(site_settings) if name.isupper()}
    values["DATABASES"] = {
        **values["DATABASES"],
        "postgres": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "postgres",
            "USER": "tomograph",
            "HOST": "127.0.0.1",
            "PORT": "",  # filled in by the PostgreSQL fixture
        },
    }
    settings.configure(**values)
    django.setup()
