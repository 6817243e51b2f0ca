"""Thin adapters between tomograph and the libraries a service already uses.

Each module imports its library only when imported itself, so none of them is a dependency of
the core: ``tomograph.integrations.sqlalchemy``, ``.logging``, ``.wsgi``, ``.asgi``,
``.requests``, ``.urllib3``, ``.urllib`` (http.client and urllib.request) and ``.httpx``.

The HTTP ones are adapters over two contracts, for integrations of other frameworks to build
on too: ``.http_server`` (:class:`~tomograph.integrations.http_server.HttpServerHandler`) and
``.http_client`` (:func:`~tomograph.integrations.http_client.begin`), with one status rule in
``.http_status``; ``.patching`` replaces a library's methods and restores them. See
``docs/http-contract.md``.
"""

from __future__ import annotations

import importlib

# Not bound as ``logging``: that name is the submodule tomograph.integrations.logging.
from logging import getLogger as _get_logger

__all__ = ["PATCHABLE", "patch_all", "unpatch_all"]

#: The integrations :func:`patch_all` knows, by the library each one needs.
PATCHABLE: dict[str, str] = {
    "requests": "tomograph.integrations.requests",
    "urllib3": "tomograph.integrations.urllib3",
    "http.client": "tomograph.integrations.urllib",
    "httpx": "tomograph.integrations.httpx",
}

_log = _get_logger("tomograph")


def patch_all() -> list[str]:
    """Monkey-patch every installed HTTP client library to trace its requests.

    Returns the libraries patched now; those not installed are skipped. Layers (requests on
    urllib3 on http.client) give one span per request: the outermost layer's.

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
