"""Thin adapters between tomograph and the libraries a service already uses.

Each module imports its library only when imported itself, so none of them is a dependency of
the core: ``tomograph.integrations.sqlalchemy``, ``.logging``, ``.wsgi``, ``.asgi``,
``.requests``, ``.urllib3``, ``.urllib`` (http.client and urllib.request), ``.httpx``,
``.django``, ``.flask``, ``.starlette``, ``.celery``, ``.aiohttp``, ``.redis``, ``.psycopg`` and
``.psycopg2``.

The HTTP ones are adapters over two contracts, for integrations of other frameworks to build
on too: ``.http_server`` (:class:`~tomograph.integrations.http_server.HttpServerHandler`) and
``.http_client`` (:func:`~tomograph.integrations.http_client.begin`), with one status rule in
``.http_status``; ``.patching`` replaces a library's methods and restores them. See
``docs/http-contract.md``.

This package also holds the registry of the integrations that can patch their library
(:data:`INTEGRATIONS`): what ``tomograph run`` instruments (see ``docs/run.md``).
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass

# Not bound as ``logging``: that name is the submodule tomograph.integrations.logging.
from logging import getLogger as _get_logger
from types import ModuleType

from tomograph.integrations._post_import import when_imported

__all__ = [
    "INTEGRATIONS",
    "PATCHABLE",
    "Integration",
    "patch",
    "patch_all",
    "patch_when_imported",
    "select",
    "unpatch_all",
]


@dataclass(frozen=True)
class Integration:
    """An integration that can patch its library: ``patch()``, ``unpatch()`` and ``patched()``.

    ``name`` is how users choose it (``TOMOGRAPH_INSTRUMENT=flask,redis``), ``library`` the
    module whose import makes ``tomograph run`` patch it, ``module`` the integration itself.
    ``default``: patched unless ``TOMOGRAPH_INSTRUMENT`` names others; the ones that are not
    change more than tracing does and are patched only when named. ``needs``: modules the
    integration imports that themselves import the library (urllib.request imports
    http.client): while one of them is half imported the integration cannot be, so it is
    patched when that one's import is done.
    """

    name: str
    library: str
    module: str
    default: bool = True
    needs: tuple[str, ...] = ()


#: Every integration with ``patch()``, by the name users write.
INTEGRATIONS: dict[str, Integration] = {
    integration.name: integration
    for integration in (
        Integration("requests", "requests", "tomograph.integrations.requests"),
        Integration("urllib3", "urllib3", "tomograph.integrations.urllib3"),
        Integration(
            "http.client", "http.client", "tomograph.integrations.urllib", needs=("urllib.request",)
        ),
        Integration("httpx", "httpx", "tomograph.integrations.httpx"),
        Integration("aiohttp", "aiohttp", "tomograph.integrations.aiohttp"),
        Integration("django", "django", "tomograph.integrations.django"),
        Integration("flask", "flask", "tomograph.integrations.flask"),
        # FastAPI is built on Starlette: this one covers both.
        Integration("starlette", "starlette", "tomograph.integrations.starlette"),
        Integration("celery", "celery", "tomograph.integrations.celery"),
        Integration("sqlalchemy", "sqlalchemy", "tomograph.integrations.sqlalchemy"),
        Integration("psycopg", "psycopg", "tomograph.integrations.psycopg"),
        Integration("psycopg2", "psycopg2", "tomograph.integrations.psycopg2"),
        Integration("redis", "redis", "tomograph.integrations.redis"),
        # Spans made through the OpenTelemetry API (libraries, OpenTelemetry's own
        # instrumentations) become tomograph spans: tomograph is the API's SDK.
        Integration("opentelemetry", "opentelemetry.trace", "tomograph.opentelemetry"),
        # Adds trace_id/span_id to every log record: it changes the records (and clashes with
        # extra={"trace_id": ...}), so only when asked for.
        Integration("logging", "logging", "tomograph.integrations.logging", default=False),
    )
}

#: The HTTP client integrations :func:`patch_all` patches, by the library each one needs.
PATCHABLE: dict[str, str] = {
    name: INTEGRATIONS[name].module for name in ("requests", "urllib3", "http.client", "httpx")
}

_log = _get_logger("tomograph")
#: Integrations whose module could not be imported or whose patch() failed: never tried again,
#: so the failure is logged once.
_failed: set[str] = set()
_failed_lock = threading.Lock()
#: Integrations being patched by this thread: a patch() importing a watched module must not
#: start the same patch() again half-way.
_patching = threading.local()


def select(
    instrument: Iterable[str] | None = None, disable: Iterable[str] = ()
) -> list[Integration]:
    """The integrations ``instrument`` names (default: every default one), less ``disable``.

    Unknown names are logged as a warning listing the known ones, and ignored.

    >>> [integration.name for integration in select(['flask', 'redis'], ['redis'])]
    ['flask']
    """
    chosen = None if instrument is None else list(instrument)
    excluded = set(disable)
    unknown = [name for name in [*(chosen or ()), *excluded] if name not in INTEGRATIONS]
    if unknown:
        _log.warning(
            "tomograph: unknown integration %s (known: %s)",
            ", ".join(sorted(set(unknown))),
            ", ".join(INTEGRATIONS),
        )
    return [
        integration
        for name, integration in INTEGRATIONS.items()
        if name not in excluded and (name in chosen if chosen is not None else integration.default)
    ]


def patch(name: str) -> bool:
    """Patch the integration ``name`` (a key of :data:`INTEGRATIONS`) and so its library.

    True if it was patched now; False if it was already, or its library or integration module
    cannot be imported, or its ``patch()`` failed: the last two are logged once (a warning with
    the error), a library that is not installed only at debug level. Never raises for them.
    """
    integration = INTEGRATIONS[name]
    in_progress: set[str] = _patching.__dict__.setdefault("names", set())
    if name in _failed or name in in_progress:
        return False
    in_progress.add(name)
    try:
        return _patch(integration)
    finally:
        in_progress.discard(name)


def _patch(integration: Integration) -> bool:
    name = integration.name
    try:
        module = importlib.import_module(integration.module)
    except ImportError as error:
        if error.name == integration.library.partition(".")[0]:
            _log.debug("tomograph: %s is not installed: not patched", integration.library)
        else:
            _give_up(name, f"cannot import {integration.module}: {error}", with_traceback=False)
        return False
    except Exception:
        _give_up(name, f"importing {integration.module} failed", with_traceback=True)
        return False
    try:
        return bool(module.patch())
    except Exception:
        _give_up(name, f"{integration.module}.patch() failed", with_traceback=True)
        return False


def _give_up(name: str, why: str, *, with_traceback: bool) -> None:
    with _failed_lock:
        if name in _failed:
            return
        _failed.add(name)
    _log.warning(
        "tomograph: %s is not traced: %s; the program runs on without it",
        name,
        why,
        exc_info=with_traceback,
    )


def patch_when_imported(integrations: Iterable[Integration]) -> None:
    """Patch each integration right after the application first imports its library (at once
    for a library already imported), without importing any library itself.

    This is what ``tomograph run`` does at startup: frameworks the program never imports cost
    it nothing. A failing integration is logged once and never breaks the import.
    """
    for integration in integrations:
        # The integration's own module imports the library too: a program importing it (for
        # instrument_session, say) makes the library's import end half-way through it.
        waits_for = (*integration.needs, integration.module)

        def patch_now(
            module: ModuleType,
            integration: Integration = integration,
            waits_for: tuple[str, ...] = waits_for,
        ) -> None:
            # The module just imported is still marked as importing: only the others count.
            waiting = [name for name in waits_for if name != module.__name__]
            if not any(_half_imported(name) for name in waiting):
                patch(integration.name)

        for trigger in (integration.library, *waits_for):
            when_imported(trigger, patch_now)


def _half_imported(name: str) -> bool:
    """True while the module ``name`` runs its own code (it is importing something)."""
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def patch_all() -> list[str]:
    """Monkey-patch every installed HTTP client library to trace its requests.

    Returns the libraries patched now; those not installed are skipped. Layers (requests on
    urllib3 on http.client) give one span per request: the outermost layer's. Frameworks,
    databases and the other integrations of :data:`INTEGRATIONS` are patched one by one
    (:func:`patch`) or by ``tomograph run``.

    >>> import tomograph.integrations
    >>> patched = tomograph.integrations.patch_all()
    >>> _ = tomograph.integrations.unpatch_all()
    """
    done = []
    for library, module_name in PATCHABLE.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            _log.debug("tomograph: %s is not installed: not patched", library)
            continue
        if module.patch():
            done.append(library)
    return done


def unpatch_all() -> list[str]:
    """Undo :func:`patch_all`; returns the libraries restored."""
    done = []
    for library, module_name in PATCHABLE.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if module.unpatch():
            done.append(library)
    return done
