"""Thin adapters between tomograph and the libraries a service already uses.

Each module imports its library only when imported itself, so none of them is a dependency of
the core: ``tomograph.integrations.sqlalchemy``, ``.logging``, ``.wsgi``, ``.asgi``,
``.requests``, ``.urllib3``, ``.urllib`` (http.client and urllib.request) and ``.httpx``.
"""
