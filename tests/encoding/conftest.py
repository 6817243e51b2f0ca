"""Fixtures and hypothesis strategies for the encoding tests (the reporting tests use them too)."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import strategies as st

from support.servers import SHARED
from tomograph import Tracer
from tomograph.model import Endpoint, SpanKind, TraceContext
from tomograph.reporting.memory import MemoryBackend
from tomograph.span import Span

ZIPKIN_SPECS = SHARED / "specs" / "zipkin"


@pytest.fixture(scope="session")
def zipkin_pb2(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """Zipkin's own ``zipkin.proto`` compiled by protoc into a temp dir (never committed)."""
    grpc_tools = pytest.importorskip("grpc_tools.protoc")
    proto = ZIPKIN_SPECS / "zipkin.proto"
    if not proto.exists():
        pytest.fail(f"{proto} is missing: the shared specs folder must sit beside the checkout")
    out = tmp_path_factory.mktemp("zipkin_proto")
    include = Path(grpc_tools.__file__).parent / "_proto"
    status = grpc_tools.main(
        ["protoc", f"-I{ZIPKIN_SPECS}", f"-I{include}", f"--python_out={out}", str(proto)]
    )
    assert status == 0, "protoc failed on zipkin.proto"
    spec = importlib.util.spec_from_file_location("zipkin_pb2", out / "zipkin_pb2.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["zipkin_pb2"] = module
    spec.loader.exec_module(module)
    return module


# -- strategies -------------------------------------------------------------------------------

# Text without lone surrogates: those cannot be UTF-8 and are replaced by the proto encoder.
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20)
services = st.text("abcdefghijklmnopqrstuvwxyzABC-_.0123456789", min_size=1, max_size=12)
ipv4s = st.ip_addresses(v=4).map(str)
ipv6s = st.ip_addresses(v=6).map(lambda address: address.compressed)
ports = st.integers(1, 65535)
tag_values = st.one_of(text, st.integers(-(2**63), 2**63), st.booleans(), st.floats(width=32))
epoch_us = st.integers(1, 2**53)


@st.composite
def endpoints(draw: st.DrawFn) -> Endpoint:
    """Endpoints with any combination of fields."""
    return Endpoint(
        draw(st.none() | services),
        draw(st.none() | ipv4s),
        draw(st.none() | ipv6s),
        draw(st.none() | ports),
    )


@st.composite
def finished_spans(draw: st.DrawFn) -> Span:
    """A finished span with random ids, kind, endpoints, notes, tags and flags."""
    tracer = Tracer(draw(services), backends=[MemoryBackend()])
    trace_id = draw(st.integers(1, 2**64 - 1) | st.integers(1, 2**128 - 1))
    # Ids come from hypothesis, not the random module: a parent context fixes the trace id,
    # and the span id is set below.
    parent = TraceContext(trace_id, draw(st.integers(1, 2**64 - 1)), sampled=True)
    kind = draw(st.none() | st.sampled_from(list(SpanKind)))
    start = draw(epoch_us)
    state = random.getstate()  # the tracer draws an id; hypothesis wants global random untouched
    span = tracer.start_span(
        draw(text),
        kind,
        draw(st.dictionaries(text, tag_values, max_size=4)),
        parent=parent,
        local_endpoint=draw(st.none() | endpoints()),
        remote_endpoint=draw(st.none() | endpoints()),
        timestamp_us=start,
    )
    random.setstate(state)
    span.span_id = draw(st.integers(1, 2**64 - 1))
    if draw(st.booleans()):
        span.parent_id = None
    for value in draw(st.lists(text, max_size=3)):
        span.annotate_at(value, draw(epoch_us))
    span.debug = draw(st.booleans())
    span.shared = draw(st.booleans())
    span.error = draw(st.booleans())
    span.finish(start + draw(st.integers(0, 10**9)))
    return span


def _nonzero_hex(chars: int) -> st.SearchStrategy[str]:
    return st.integers(1, 2 ** (chars * 4) - 1).map(lambda value: f"{value:0{chars}x}")


@st.composite
def endpoint_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Normalized endpoint dicts (at least one field)."""
    fields: dict[str, Any] = {}
    if draw(st.booleans()):
        fields["serviceName"] = draw(services).lower()
    if draw(st.booleans()):
        fields["ipv4"] = draw(ipv4s)
    if draw(st.booleans()):
        fields["ipv6"] = draw(ipv6s)
    if draw(st.booleans()) or not fields:
        fields["port"] = draw(ports)
    return fields


@st.composite
def span_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Spans in the normalized dict shape every decoder returns (lower-case names, annotations
    in time order, Zipkin's field order)."""
    span: dict[str, Any] = {
        "traceId": draw(_nonzero_hex(16) | st.integers(2**64, 2**128 - 1).map("{:032x}".format))
    }
    if draw(st.booleans()):
        span["parentId"] = draw(_nonzero_hex(16))
    span["id"] = draw(_nonzero_hex(16))
    optional = {
        "kind": st.sampled_from(["CLIENT", "SERVER", "PRODUCER", "CONSUMER"]),
        "name": names.map(str.lower),
        "timestamp": epoch_us,
        "duration": st.integers(1, 2**63),
        "debug": st.just(True),
        "shared": st.just(True),
        "localEndpoint": endpoint_dicts(),
        "remoteEndpoint": endpoint_dicts(),
        "annotations": st.lists(
            st.fixed_dictionaries({"timestamp": epoch_us, "value": text}),
            min_size=1,
            max_size=3,
            unique_by=lambda note: (note["timestamp"], note["value"]),  # Zipkin: a set
        ).map(lambda notes: sorted(notes, key=lambda note: (note["timestamp"], note["value"]))),
        "tags": st.dictionaries(text, text, min_size=1, max_size=4),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            span[key] = draw(strategy)
    return span
