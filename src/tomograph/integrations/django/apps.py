"""The app config Django finds when ``tomograph.integrations.django`` is in INSTALLED_APPS."""

from __future__ import annotations

from django.apps import AppConfig

from tomograph.integrations.django._patch import patch


class TomographConfig(AppConfig):  # type: ignore[misc]  # Django has no type information
    """Traces the project's requests and SQL statements once Django is set up (see ``patch``)."""

    name = "tomograph.integrations.django"
    label = "tomograph"
    verbose_name = "tomograph tracing"

    def ready(self) -> None:
        patch()
