"""The collector's settings: one explicit object, filled from the command line or environment."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tomograph.collector.span_limits import SpanLimits
from tomograph.config import data_home
from tomograph.errors import ConfigurationError

__all__ = [
    "DEFAULT_AUTOCOMPLETE_KEYS",
    "CollectorSettings",
    "check_token",
    "default_db_path",
    "is_loopback",
    "is_postgres_url",
]

#: Tag keys offered for value completion in the search form (``/api/v2/autocompleteKeys``).
DEFAULT_AUTOCOMPLETE_KEYS = (
    "http.method",
    "http.status_code",
    "http.route",
    "db.system",
    "rpc.service",
    "otel.status_code",
)


def is_loopback(host: str) -> bool:
    """True for a name or address that only this machine can reach.

    Any 127.0.0.0/8 address, ``::1`` (also IPv4-mapped or bracketed), ``localhost`` and names
    under ``.localhost`` (RFC 6761 reserves them for loopback).

    >>> [is_loopback(h) for h in ("127.0.0.2", "[::1]", "Localhost.", "0.0.0.0", "evil.example")]
    [True, True, True, False, False]
    """
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def is_postgres_url(text: str) -> bool:
    """True if ``--db`` names a PostgreSQL database rather than a SQLite file.

    >>> is_postgres_url("postgres://spans@db/traces"), is_postgres_url("traces.db")
    (True, False)
    """
    return text.lower().startswith(("postgresql://", "postgres://"))


def default_db_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where traces are kept unless ``--db`` says otherwise: the user's data directory.

    ``$XDG_DATA_HOME/tomograph/traces.db``, else ``~/.local/share/tomograph/traces.db``.

    >>> default_db_path({"XDG_DATA_HOME": "/data"}).as_posix()
    '/data/tomograph/traces.db'
    """
    return data_home(environ) / "tomograph" / "traces.db"


@dataclass(frozen=True)
class CollectorSettings:
    """Everything ``tomograph serve`` can be told.

    ``db_url``: a ``postgresql://`` URL; when set, spans are kept in that PostgreSQL database
    (shared by every collector given the same URL) instead of the SQLite file ``db_path``.
    ``token``: when set, every API call (ingest and query) needs ``Authorization: Bearer <token>``.
    ``cors_origins``: browser origins allowed to call the API from other pages (none by default).
    ``max_body_bytes``: largest upload, before and after decompression (413 beyond).
    ``span_limits``: the most one span may hold; longer texts are cut at ingest
    (see :mod:`tomograph.collector.span_limits`).
    ``request_timeout``: seconds a request's headers, then its body, may take to arrive (408);
    a body gets one more second per ``min_body_rate`` bytes received.
    ``max_uploads``: uploads inflated, decoded and stored at once; ``max_buffered_bytes``:
    bytes of bodies held while they arrive (default four bodies of ``max_body_bytes``). An
    upload that finds no room within ``request_timeout`` gets 503 with Retry-After.
    ``max_connections``: open connections (503 and closed beyond; fewer when the process may
    not open that many files).
    ``max_age`` (seconds) / ``max_bytes``: retention, applied every ``retention_interval`` s.
    ``query_lookback_ms``: the search window when a query gives no ``lookback`` (Zipkin's
    ``QUERY_LOOKBACK``).
    ``max_concurrent_queries`` run at once and ``max_queued_queries`` more wait, each for half
    of ``query_timeout`` at most; a query running longer than ``query_timeout`` seconds is
    stopped. Refused and stopped queries are answered 503 with Retry-After. Ingest is never
    queued behind queries.
    ``shutdown_timeout``: on SIGTERM or Ctrl-C, how long batches being received may take to
    finish (queries stop at once).

    >>> CollectorSettings(port=0).host
    '127.0.0.1'
    """

    host: str = "127.0.0.1"
    port: int = 9411
    db_path: Path = field(default_factory=default_db_path)
    db_url: str | None = field(default=None, repr=False)  # it may hold a password
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 10 * 1024 * 1024
    span_limits: SpanLimits = field(default_factory=SpanLimits)
    request_timeout: float = 30.0
    min_body_rate: int = 65_536
    max_uploads: int = 4
    max_buffered_bytes: int | None = None
    max_connections: int = 1000
    max_age: float | None = 7 * 86400.0
    max_bytes: int | None = 1024 * 1024 * 1024
    retention_interval: float = 60.0
    query_lookback_ms: int = 86_400_000
    autocomplete_keys: tuple[str, ...] = DEFAULT_AUTOCOMPLETE_KEYS
    query_timeout: float = 10.0
    max_concurrent_queries: int = 4
    max_queued_queries: int = 16
    shutdown_timeout: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"port must be a number from 0 to 65535, not {self.port}")
        if not self.host:
            raise ConfigurationError("host must not be empty (127.0.0.1 serves this machine)")
        if self.token is not None:
            check_token(self.token)
        if self.db_url is not None and not is_postgres_url(self.db_url):
            raise ConfigurationError("db_url must be a postgresql:// or postgres:// URL")
        if not 0 < self.query_timeout <= 86400:
            raise ConfigurationError(
                f"the query timeout must be more than 0 and at most a day, not {self.query_timeout}"
            )
        if self.max_concurrent_queries < 1 or self.max_queued_queries < 0:
            raise ConfigurationError("at least one query must be able to run")
        if self.shutdown_timeout < 0:
            raise ConfigurationError("shutdown_timeout must not be negative")

    @property
    def db_location(self) -> str:
        """Where spans are kept, for logs: the SQLite file, or the database without password.

        >>> CollectorSettings(db_url="postgresql://spans:s3cret@db/traces").db_location
        'postgresql://spans@db/traces'
        """
        if self.db_url is None:
            return str(self.db_path)
        from tomograph.collector.postgres_pool import database_location

        return database_location(self.db_url)

    @property
    def loopback_only(self) -> bool:
        """True when bound to a loopback address (then only loopback Host headers are served)."""
        return is_loopback(self.host)


def check_token(token: str) -> None:
    """Raise ConfigurationError unless ``token`` can be sent as ``Authorization: Bearer <token>``
    and compared as is: printable ASCII without spaces. The message never shows the token.

    >>> check_token("s3cret-Token_1")
    """
    if not token or not all("!" <= char <= "~" for char in token):
        raise ConfigurationError(
            "the token must be printable ASCII without spaces (it travels in an HTTP"
            " header), e.g. the output of: python -c 'import secrets;"
            " print(secrets.token_urlsafe())'"
        )
