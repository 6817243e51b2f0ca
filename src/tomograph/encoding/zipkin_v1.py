"""Zipkin's v1 span model, and its conversion to v2 spans by the rules of Zipkin's own server.

A v1 span has no kind, no local endpoint and no tags: it carries *core annotations* (``cs``,
``sr``, ``ss``, ``cr`` for RPC; ``ms``, ``mr`` for messaging), each with the endpoint of the
host that logged it, and *binary annotations*: key/value pairs with an endpoint, among them the
address annotations ``ca``, ``sa`` and ``ma`` whose endpoint is the remote side. The v1 JSON and
v1 Thrift decoders read their format into :class:`V1Span`; :func:`to_v2` turns it into v2 span
dicts the way Zipkin's ``V1SpanConverter`` does:

- each distinct service (by the service names of the annotation endpoints) gets its own v2
  span, so a v1 span logged by both client and server (``cs``, ``sr``, ``ss``, ``cr`` under one
  id) becomes a CLIENT span and a ``shared`` SERVER span; annotations and binary annotations
  without an endpoint go to the first;
- ``cs``/``cr`` make a span CLIENT, ``sr``/``ss`` SERVER, ``ms`` PRODUCER, ``mr`` CONSUMER; the
  span's ``timestamp``/``duration`` win, else they come from the begin and end annotations;
  a server side that reused its client's id (``sr`` and no ``timestamp``) is ``shared``;
  a span with ``ws``/``wr`` (wire send/receive) but no messaging annotation keeps them as
  annotations, as it keeps a core annotation without an endpoint;
- ``ca`` is the remote endpoint of the server side, ``sa`` of the client side, ``ma`` of the
  producer and consumer; an ``lc`` (local component) annotation gives its endpoint to the span,
  and its value is kept as a tag unless empty; every other binary annotation becomes a tag.

>>> server = {'serviceName': 'backend'}
>>> span = V1Span('000000000000000a', '000000000000000b', name='get', annotations=[
...     V1Annotation(100, 'sr', server), V1Annotation(150, 'ss', server)],
...     binary_annotations=[V1BinaryAnnotation('ca', None, {'serviceName': 'frontend'})])
>>> [(s['kind'], s['timestamp'], s['duration'], s.get('shared')) for s in to_v2(span)]
[('SERVER', 100, 50, True)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tomograph.encoding import _zipkin_model, zipkin_json

__all__ = [
    "ADDRESS_KEYS",
    "V1Annotation",
    "V1BinaryAnnotation",
    "V1Span",
    "normalize_endpoint",
    "normalize_spans",
    "to_v2",
]

#: The binary annotation keys whose endpoint is an address, not their value.
ADDRESS_KEYS = frozenset(("ca", "sa", "ma"))

#: An endpoint in v2 JSON shape (``serviceName``, ``ipv4``, ``ipv6``, ``port``), never empty.
EndpointDict = dict[str, Any]


@dataclass(frozen=True)
class V1Annotation:
    """A timestamped event (epoch µs) logged by the host at ``endpoint``."""

    timestamp: int
    value: str
    endpoint: EndpointDict | None = None


@dataclass(frozen=True)
class V1BinaryAnnotation:
    """A key/value pair logged by the host at ``endpoint``; ``value`` None marks an address
    annotation (``ca``, ``sa``, ``ma``), whose ``endpoint`` is the address."""

    key: str
    value: str | None
    endpoint: EndpointDict | None = None


@dataclass
class V1Span:
    """A v1 span: ids as lower hex (trace id 16 or 32 characters), times in epoch µs, 0 when
    absent."""

    trace_id: str
    id: str
    parent_id: str | None = None
    name: str = ""
    timestamp: int = 0
    duration: int = 0
    annotations: list[V1Annotation] = field(default_factory=list)
    binary_annotations: list[V1BinaryAnnotation] = field(default_factory=list)
    debug: bool = False


def _service(endpoint: EndpointDict | None) -> str | None:
    return endpoint.get("serviceName") or None if endpoint is not None else None


class _Builder:
    """One v2 span being assembled (Zipkin's ``Span.Builder``: negative times count as unset)."""

    __slots__ = (
        "annotations",
        "duration",
        "kind",
        "local",
        "remote",
        "shared",
        "tags",
        "timestamp",
    )

    def __init__(self, local: EndpointDict | None = None) -> None:
        self.local = local
        self.remote: EndpointDict | None = None
        self.kind: str | None = None
        self.timestamp = 0
        self.duration = 0
        self.shared = False
        self.annotations: list[tuple[int, str]] = []
        self.tags: dict[str, str] = {}

    def set_timestamp(self, value: int) -> _Builder:
        self.timestamp = max(value, 0)
        return self

    def set_duration(self, value: int) -> _Builder:
        self.duration = max(value, 0)
        return self

    def build(self, source: V1Span) -> dict[str, Any]:
        span: dict[str, Any] = {"traceId": source.trace_id}
        if source.parent_id is not None:
            span["parentId"] = source.parent_id
        span["id"] = source.id
        if self.kind is not None:
            span["kind"] = self.kind
        if source.name:
            span["name"] = source.name
        if self.timestamp:
            span["timestamp"] = self.timestamp
        if self.duration:
            span["duration"] = self.duration
        if self.local is not None:
            span["localEndpoint"] = self.local
        if self.remote is not None:
            span["remoteEndpoint"] = self.remote
        if self.annotations:
            span["annotations"] = [
                {"timestamp": when, "value": value} for when, value in sorted(self.annotations)
            ]
        if self.tags:
            span["tags"] = self.tags
        if source.debug:
            span["debug"] = True
        if self.shared:
            span["shared"] = True
        return span


class _Conversion:
    """The state of converting one v1 span: its v2 spans, one per service, and the core
    annotations seen."""

    def __init__(self, source: V1Span) -> None:
        self.source = source
        self.spans = [_Builder()]
        self.core: dict[str, V1Annotation] = {}

    def for_endpoint(self, endpoint: EndpointDict | None) -> _Builder:
        """The v2 span of ``endpoint``'s service: data without an endpoint goes to the first
        span, which takes the first endpoint it is given as its own."""
        first = self.spans[0]
        if endpoint is None:
            return first
        for span in self.spans:
            if span.local is None:
                span.local = endpoint
                return span
            if _service(span.local) == _service(endpoint):
                return span
        return self.fork(endpoint)

    def fork(self, endpoint: EndpointDict) -> _Builder:
        span = _Builder(endpoint)
        self.spans.append(span)
        return span

    def timing(self, begin: V1Annotation, end: V1Annotation | None) -> None:
        """The span's own timestamp and duration when both are set, else the annotations'."""
        span = self.for_endpoint(begin.endpoint)
        source = self.source
        if source.timestamp and source.duration:
            span.set_timestamp(source.timestamp).set_duration(source.duration)
        else:
            span.set_timestamp(begin.timestamp)
            if end is not None:
                span.set_duration(end.timestamp - begin.timestamp)

    def annotations(self) -> None:
        source, core = self.source, self.core
        kinds = {"cs": "CLIENT", "cr": "CLIENT", "sr": "SERVER", "ss": "SERVER"}
        kinds.update(ms="PRODUCER", mr="CONSUMER")
        # in Zipkin's order (time, then value): the first endpoint seen names the first span
        for note in sorted(source.annotations, key=lambda note: (note.timestamp, note.value)):
            span = self.for_endpoint(note.endpoint)
            # a core annotation needs an endpoint; without one it is an ordinary annotation
            if note.endpoint is not None and note.value in kinds:
                span.kind = kinds[note.value]
                core[note.value] = note
            elif note.endpoint is not None and note.value in ("ws", "wr"):
                core[note.value] = note
            else:
                span.annotations.append((note.timestamp, note.value))

        # a span whose timestamp + duration is its end annotation lost only its begin annotation
        for begin, end in (("cs", "cr"), ("sr", "ss")):
            last = core.get(end)
            if (
                begin not in core
                and last is not None
                and source.timestamp
                and source.duration
                and source.timestamp + source.duration == last.timestamp
            ):
                core[begin] = V1Annotation(source.timestamp, begin, last.endpoint)

        cs, sr, ss, cr = (core.get(key) for key in ("cs", "sr", "ss", "cr"))
        if cs is not None and sr is not None:
            self.client_and_server(cs, sr, ss, cr)
        elif cs is not None and cr is not None:
            self.timing(cs, cr)
        elif sr is not None and ss is not None:
            self.timing(sr, ss)
        else:
            self.incomplete_rpc()

        # v1 has no shared flag: a server side without the span's timestamp joined its client's
        # span id (or, with ss but no duration, shares a stored row with its client)
        if (
            cs is None
            and sr is not None
            and (not source.timestamp or (ss is not None and not source.duration))
        ):
            self.for_endpoint(sr.endpoint).shared = True
        self.messaging()

    def client_and_server(
        self, cs: V1Annotation, sr: V1Annotation, ss: V1Annotation | None, cr: V1Annotation | None
    ) -> None:
        """Both sides of an RPC under one id: the client owns the span's timing, the server
        side becomes a shared span timed by its own annotations."""
        self.timing(cs, cr)
        client = self.for_endpoint(cs.endpoint)
        if _service(cs.endpoint) == _service(sr.endpoint):  # loopback: still two spans
            client.kind = "CLIENT"
            assert sr.endpoint is not None  # core annotations always have one
            server = self.fork(sr.endpoint)
            server.kind = "SERVER"
        else:
            server = self.for_endpoint(sr.endpoint)
        server.shared = True
        server.set_timestamp(sr.timestamp)
        if ss is not None:
            server.set_duration(ss.timestamp - sr.timestamp)
        if cr is None and not self.source.duration:
            client.duration = 0  # a one-way call has no duration

    def incomplete_rpc(self) -> None:
        """Only one end of each side: the begin annotation times the span, the end one stays
        an annotation."""
        core = self.core
        for span in self.spans:
            begin, end = {"CLIENT": ("cs", "cr"), "SERVER": ("sr", "ss")}.get(
                span.kind or "", (None, None)
            )
            if begin is None or end is None:
                continue
            if begin in core:
                span.set_timestamp(core[begin].timestamp)
            if end in core:
                span.annotations.append((core[end].timestamp, end))
        source = self.source
        if source.timestamp:
            self.spans[0].set_timestamp(source.timestamp).set_duration(source.duration)

    def messaging(self) -> None:
        core = self.core
        ms, mr, ws, wr = (core.get(key) for key in ("ms", "mr", "ws", "wr"))
        if ms is not None and mr is not None:  # not meant to share a span, but they may
            producer = self.for_endpoint(ms.endpoint)
            if _service(ms.endpoint) == _service(mr.endpoint):
                producer.kind = "PRODUCER"
                assert mr.endpoint is not None
                consumer = self.fork(mr.endpoint)
                consumer.kind = "CONSUMER"
            else:
                consumer = self.for_endpoint(mr.endpoint)
            consumer.shared = True
            if wr is not None:
                consumer.set_timestamp(wr.timestamp).set_duration(mr.timestamp - wr.timestamp)
            else:
                consumer.set_timestamp(mr.timestamp)
            producer.set_timestamp(ms.timestamp)
            producer.set_duration(ws.timestamp - ms.timestamp if ws is not None else 0)
        elif ms is not None:
            self.timing(ms, ws)
        elif mr is not None:
            if wr is not None:
                self.timing(wr, mr)
            else:
                self.timing(mr, None)
        else:
            for note in (ws, wr):
                if note is not None:
                    self.for_endpoint(note.endpoint).annotations.append(
                        (note.timestamp, note.value)
                    )

    def binary_annotations(self) -> None:
        addresses: dict[str, EndpointDict | None] = {}
        for binary in sorted(self.source.binary_annotations, key=lambda binary: binary.key):
            if binary.key in ADDRESS_KEYS:
                # leniently, as Zipkin: some old tracers wrote the address flag as "1"
                addresses[binary.key] = binary.endpoint
                continue
            if binary.value is None:
                continue
            span = self.for_endpoint(binary.endpoint)
            if binary.key == "lc" and not binary.value:
                continue  # an empty "lc" only marks the local endpoint
            span.tags[binary.key] = binary.value

        ca, sa, ma = addresses.get("ca"), addresses.get("sa"), addresses.get("ma")
        core = self.core
        if not core.keys() & {"cs", "cr", "sr", "ss"} and (ca is not None or sa is not None):
            if ca is not None and sa is not None:
                self.for_endpoint(ca).remote = sa
            elif sa is not None:
                # "sa" alone is just a remote address: it does not make a client span
                self.for_endpoint(None).remote = sa
            elif ca is not None:
                server = self.for_endpoint(None)
                server.kind = "SERVER"
                server.remote = ca
            return

        server_note = core.get("sr") or core.get("ss")
        if ca is not None and server_note is not None and ca != server_note.endpoint:
            if _service(ca) == _service(server_note.endpoint):
                # Finagle logs the client's socket under the server's own name: without the
                # name, the address does not make the service call itself
                ca = {key: value for key, value in ca.items() if key != "serviceName"} or None
            self.for_endpoint(server_note.endpoint).remote = ca
        client_note = core.get("cs") or core.get("cr")
        if sa is not None and client_note is not None:
            self.for_endpoint(client_note.endpoint).remote = sa
        if ma is not None:  # both sides get the broker, should one span hold both
            for key in ("ms", "mr"):
                if key in core:
                    self.for_endpoint(core[key].endpoint).remote = ma


def to_v2(span: V1Span) -> list[dict[str, Any]]:
    """The v2 spans (Zipkin v2 JSON field names) of one v1 span: one per service that logged
    it, the first always present. Values are as in ``span``; no validation happens here."""
    conversion = _Conversion(span)
    conversion.annotations()
    conversion.binary_annotations()
    return [builder.build(span) for builder in conversion.spans]


# The v2 codec's validation and normalization, applied to the converted spans.


def normalize_endpoint(index: int, where: str, value: object) -> EndpointDict | None:
    """A decoded endpoint in v2 JSON shape, validated and normalized as v2 ingest does it (service
    name lower-cased); None if it holds nothing. Raises ``DecodeError`` naming ``where``."""
    endpoint = _zipkin_model.normalize_endpoint(index, where, value)
    # Lower-cased now, not only when the v2 span is made: the conversion compares services
    # (which side logged an annotation, a "ca" naming the server itself), as Zipkin's does
    # with endpoints whose names it lower-cases when it reads them.
    if endpoint is not None and "serviceName" in endpoint:
        endpoint["serviceName"] = endpoint["serviceName"].lower()
    return endpoint


def normalize_spans(spans: list[V1Span]) -> list[dict[str, Any]]:
    """The v2 spans of ``spans``, each through the same normalization as a posted v2 span."""
    return [
        zipkin_json.span_from_object(index, v2)
        for index, span in enumerate(spans)
        for v2 in to_v2(span)
    ]
