"""eventlet's green HTTP clients carry the trace: ``eventlet.green.http.client`` (which
``eventlet.green.httplib`` and ``eventlet.green.urllib.request`` use).

A request made while a span is current becomes a client span and carries its context in
the default propagator's headers (B3, W3C ``traceparent``, ...). Requests made outside any
span are left alone, so background calls do not start traces of their own.
"""

from __future__ import annotations

from eventlet.green.http import client as green_client

from tomograph.integrations.urllib import patch_connection_class, unpatch_connection_class

__all__ = ["patch", "unpatch"]


def patch() -> None:
    """Trace green ``HTTPConnection`` (and ``HTTPSConnection``) requests made inside spans."""
    patch_connection_class(green_client.HTTPConnection, only_in_spans=True)


def unpatch() -> None:
    """Undo :func:`patch`."""
    unpatch_connection_class(green_client.HTTPConnection)
