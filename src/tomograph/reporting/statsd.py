"""The statsd backend: a timer per span and a counter per note, over UDP.

URL form: ``statsd://host:8125?prefix=myapp``. Parameters: ``prefix`` (dot-separated),
``max_packet`` (bytes per datagram, default 1432: fits a 1500-byte Ethernet MTU with IPv6 and
UDP headers), ``tags=dogstatsd`` (DogStatsD ``|#service:..,span:..`` tags), ``sample_rate``
(0 < rate <= 1: that fraction of spans is sent, marked ``|@rate`` so statsd scales counts up),
and the transport's ``queue_size``, ``batch_size``, ``interval``.

Metric names (see :func:`metric_segment`): ``<prefix>.<service>.<span name>`` is a timer in
milliseconds; ``<prefix>.<service>.<span name>.<note>`` a counter incremented by one per note.
Each segment is cut to its first 200 characters.
"""

from __future__ import annotations

import random
import re
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tomograph._cache import BoundedCache, memoize
from tomograph.encoding.values import safe_text
from tomograph.reporting._url_options import TRANSPORT_PARAMETERS, parse_number, transport_options
from tomograph.reporting.transport import SendError, TransportBackend

if TYPE_CHECKING:
    from tomograph.span import Span

__all__ = ["StatsdBackend", "StatsdSender", "metric_segment"]

DEFAULT_MAX_PACKET = 1432
#: Characters of a name or note that make a metric name segment; the rest is cut.
MAX_SEGMENT_LENGTH = 200
_INVALID = re.compile(r"[^a-z0-9_-]+")


def metric_segment(text: str) -> str:
    """One segment of a metric name: lower case, runs of other than ``[a-z0-9_-]`` become ``_``.

    Underscores at either end are stripped; an empty result becomes ``unnamed``. Dots are
    replaced too, since they separate segments. Only the first 200 characters count.

    >>> metric_segment('GET /users/{id}')
    'get_users_id'
    >>> metric_segment('db.query')
    'db_query'
    """
    if text.__class__ is not str:
        text = safe_text(text)
    # Cut before the cache: it holds 8192 keys, which must not be 10 MB names.
    return _segment(text[:MAX_SEGMENT_LENGTH])


def _new_segment(text: str) -> str:
    return _INVALID.sub("_", text.lower()).strip("_") or "unnamed"


_segment = memoize(_new_segment, 8192)


def _prefix(text: str) -> str:
    return ".".join(metric_segment(part) for part in text.split(".") if part.strip())


def _milliseconds(span: Span) -> str:
    micros = max(1, -((span.start_ns - span.end_ns) // 1000))
    whole, fraction = divmod(micros, 1000)
    return f"{whole}.{fraction:03d}".rstrip("0").rstrip(".")


class StatsdSender:
    """Turns spans into statsd lines packed into datagrams, and sends them without blocking."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8125,
        *,
        prefix: str = "",
        max_packet: int = DEFAULT_MAX_PACKET,
        dogstatsd_tags: bool = False,
        sample_rate: float = 1.0,
    ) -> None:
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be above 0 and at most 1, not {sample_rate!r}")
        if not 64 <= max_packet <= 65_000:
            raise ValueError(f"max_packet must be 64 to 65000 bytes, not {max_packet!r}")
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1 to 65535, not {port!r}")
        self.name = f"statsd {host}:{port}"
        self.host = host
        self.port = port
        self.prefix = _prefix(prefix)
        self.max_packet = max_packet
        self.dogstatsd_tags = dogstatsd_tags
        self.sample_rate = sample_rate
        self._rate_suffix = "" if sample_rate == 1 else f"|@{sample_rate:g}"
        self._random = random.Random()
        self._socket: socket.socket | None = None
        # Span names with ids in them must not grow it without bound.
        self._names: BoundedCache[tuple[str | None, str], tuple[str, str]] = BoundedCache(10_000)

    def _base(self, service: str | None, name: str) -> tuple[str, str]:
        """(``prefix.service.span``, tag suffix) for a span, cached."""
        key = (service, name)
        cached = self._names.get(key)
        if cached is None:
            service_part = metric_segment(service or "unknown_service")
            span_part = metric_segment(name)
            base = ".".join(p for p in (self.prefix, service_part, span_part) if p)
            tags = f"|#service:{service_part},span:{span_part}" if self.dogstatsd_tags else ""
            cached = self._names[key] = (base, tags)
        return cached

    def lines(self, span: Span) -> list[str]:
        """The statsd lines for one span: its timer, then one counter per note.

        >>> import tomograph
        >>> from tomograph.reporting.memory import MemoryBackend
        >>> memory = MemoryBackend()
        >>> with tomograph.Tracer('Shop', backends=[memory]).span('Pay') as span:
        ...     span.annotate('card declined')
        >>> [line.split(':')[0] for line in StatsdSender(prefix='app').lines(memory.spans[0])]
        ['app.shop.pay', 'app.shop.pay.card_declined']
        """
        endpoint = span.local_endpoint
        service = safe_text(endpoint.service_name)[:MAX_SEGMENT_LENGTH] if endpoint else None
        name = span.name
        name = (name if name.__class__ is str else safe_text(name))[:MAX_SEGMENT_LENGTH]
        base, tags = self._base(service, name)
        rate = self._rate_suffix
        out = [f"{base}:{_milliseconds(span)}|ms{rate}{tags}"]
        for _mono, value, _duration in span.notes_raw:
            out.append(f"{base}.{metric_segment(value)}:1|c{rate}{tags}")
        return out

    def encode(self, spans: Sequence[Span]) -> list[tuple[int, bytes]]:
        """Datagrams of newline-separated lines, each at most ``max_packet`` bytes."""
        payloads: list[tuple[int, bytes]] = []
        limit = self.max_packet
        packet: list[bytes] = []
        size = 0
        count = 0
        skipped = 0
        sample = self.sample_rate < 1
        rand = self._random.random
        for span in spans:
            if sample and rand() >= self.sample_rate:
                skipped += 1  # left out by sampling: handled, not lost
                continue
            for index, line in enumerate(self.lines(span)):
                data = line.encode("utf-8")
                if packet and size + 1 + len(data) > limit:
                    payloads.append((count, b"\n".join(packet)))
                    packet, size, count = [], 0, 0
                packet.append(data)
                size += len(data) + (1 if size else 0)
                if index == 0:
                    count += 1
        if packet:
            payloads.append((count, b"\n".join(packet)))
        if skipped:
            if payloads:
                first_count, first = payloads[0]
                payloads[0] = (first_count + skipped, first)
            else:
                payloads.append((skipped, b""))
        return payloads

    def _connect(self) -> socket.socket:
        if self._socket is None:
            family, kind, proto, _, address = socket.getaddrinfo(
                self.host, self.port, 0, socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)  # never wait for a full send buffer: count and move on
            sock.connect(address)
            self._socket = sock
        return self._socket

    def send(self, payload: bytes) -> None:
        """Send one datagram; a refused port or a full buffer raises :class:`SendError`."""
        if not payload:
            return
        try:
            self._connect().send(payload)
        except BlockingIOError:
            raise SendError(
                "socket send buffer full", retryable=True, reason="buffer full"
            ) from None
        except OSError as error:
            # ECONNREFUSED: the previous datagram met a closed port (ICMP). Metrics are
            # ephemeral: do not retry, count as failed.
            self.reset()
            name = type(error).__name__
            raise SendError(f"{name}: {error}", retryable=False, reason=name) from None

    def reset(self) -> None:
        """Close the socket (reopened on the next send)."""
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()
        self._random.seed()  # from os.urandom: forked workers must not sample the same spans

    def close(self) -> None:
        """Close the socket."""
        self.reset()


class StatsdBackend(TransportBackend):
    """Sends a timer per span and a counter per note to statsd, from a background thread.

    >>> backend = StatsdBackend(prefix='shop')
    >>> backend.close(0)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8125,
        *,
        prefix: str = "",
        max_packet: int = DEFAULT_MAX_PACKET,
        dogstatsd_tags: bool = False,
        sample_rate: float = 1.0,
        **transport_options: Any,
    ) -> None:
        self.sender = StatsdSender(
            host,
            port,
            prefix=prefix,
            max_packet=max_packet,
            dogstatsd_tags=dogstatsd_tags,
            sample_rate=sample_rate,
        )
        options = {"max_retries": 2, "backoff": 0.01, **transport_options}
        super().__init__(self.sender, **options)

    @classmethod
    def from_url(cls, url: str) -> StatsdBackend:
        """``statsd://host:8125?prefix=app&tags=dogstatsd&sample_rate=0.5&max_packet=512``."""
        from tomograph.urls import url_query

        query = url_query(
            url, {"prefix", "max_packet", "tags", "sample_rate", *TRANSPORT_PARAMETERS}
        )
        parts = urlsplit(url)
        tags = query.get("tags", "")
        if tags not in ("", "dogstatsd"):
            raise ValueError(f"tags must be dogstatsd, not {tags!r}")
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 8125,
            prefix=query.get("prefix", ""),
            max_packet=parse_number("max_packet", query.get("max_packet", "1432"), int),
            dogstatsd_tags=tags == "dogstatsd",
            sample_rate=parse_number("sample_rate", query.get("sample_rate", "1"), float),
            **transport_options(query),
        )

    def __repr__(self) -> str:
        sender = self.sender
        return f"StatsdBackend({sender.host!r}, {sender.port}, prefix={sender.prefix!r})"
