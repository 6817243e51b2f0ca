"""What the WSGI and ASGI middlewares are configured with: one constructor for both."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

from tomograph.propagation import Propagator
from tomograph.tracer import Tracer

__all__ = ["ServerMiddlewareBase"]

App = TypeVar("App")


class ServerMiddlewareBase(Generic[App]):
    """Holds a server middleware's settings.

    ``service_name`` is the service the spans are reported under (default: the tracer's);
    ``name`` fixes the span name; ``tracer`` and ``propagator`` default to the default ones,
    looked up per request (so ``tomograph.configure()`` may run after the middleware is built);
    requests whose path is in ``excluded_paths`` (health checks) are not traced.
    """

    def __init__(
        self,
        app: App,
        service_name: str | None = None,
        name: str | None = None,
        *,
        tracer: Tracer | None = None,
        propagator: Propagator | None = None,
        excluded_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.service_name = service_name
        self.name = name
        self.tracer = tracer
        self.propagator = propagator
        self.excluded_paths = frozenset(excluded_paths)
