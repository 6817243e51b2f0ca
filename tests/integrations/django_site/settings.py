"""Settings of the test project: SQLite by default, PostgreSQL when DATABASE_PORT is set.

In process the tests configure Django from these names; under gunicorn this is
DJANGO_SETTINGS_MODULE, with the middleware or the app chosen by TOMOGRAPH_DJANGO_SETUP.
"""

from __future__ import annotations

import os
import tempfile

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.integrations.django_site.urls"
USE_TZ = True
INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "tomograph.integrations.django.TracingMiddleware",
    "django.middleware.common.CommonMiddleware",
]
_setup = os.environ.get("TOMOGRAPH_DJANGO_SETUP", "middleware")
if _setup == "middleware" and os.environ.get("ZIPKIN_URL"):  # under gunicorn
    # The middleware traces requests; SQL statements are one call away (safe in settings).
    from tomograph.integrations.django import trace_database

    trace_database()
elif _setup == "app":
    INSTALLED_APPS = ["tomograph.integrations.django"]
    MIDDLEWARE = MIDDLEWARE[1:]
elif _setup == "none":  # patched from outside (tomograph run)
    MIDDLEWARE = MIDDLEWARE[1:]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SQLITE_PATH")
        or os.path.join(tempfile.mkdtemp(prefix="tomograph-django-"), "site.db"),
    },
}
if os.environ.get("DATABASE_PORT"):
    DATABASES["postgres"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "postgres",
        "USER": "tomograph",
        "HOST": "127.0.0.1",
        "PORT": os.environ["DATABASE_PORT"],
    }
LOGGING_CONFIG = None
