"""An HTTP response status on a span: the ``http.status_code`` tag and whether it is an error.

One rule for every integration, with the threshold the side of the call chooses: a server fails
on 5xx only (a 404 is the client's mistake, not the server's), a client on 4xx and 5xx (the
call did not do what the caller asked).
"""

from __future__ import annotations

from tomograph.span import Span

__all__ = ["CLIENT_ERRORS_FROM", "SERVER_ERRORS_FROM", "record_status"]

#: The lowest status that makes a server span an error.
SERVER_ERRORS_FROM = 500
#: The lowest status that makes a client span an error.
CLIENT_ERRORS_FROM = 400


def record_status(span: Span, status: int, errors_from: int = SERVER_ERRORS_FROM) -> None:
    """Tag ``span`` with ``status``; from ``errors_from`` on, the span is an error.

    ``errors_from`` is :data:`SERVER_ERRORS_FROM` (the default) for a server span,
    :data:`CLIENT_ERRORS_FROM` for a client span.

    An error status also sets the ``error`` tag to the code, unless an exception already
    explained the failure. Unsampled spans only get the error flag.

    >>> import tomograph
    >>> span = tomograph.Tracer('svc').start_span('GET')
    >>> record_status(span, 503, SERVER_ERRORS_FROM)
    >>> span.error, span.tags['http.status_code'], span.tags['error']
    (True, 503, '503')
    """
    if span.sampled:
        tags = span.tags
        tags["http.status_code"] = status
        if status >= errors_from and "error" not in tags:
            tags["error"] = str(status)
    if status >= errors_from:
        span.error = True
