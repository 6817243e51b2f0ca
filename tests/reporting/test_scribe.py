"""The Scribe backend against a real Thrift Scribe server; spans decoded with Zipkin's IDL."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tomograph
from support.scribe_server import SCRIBE_IDL, ZIPKIN_CORE, ScribeServer, load_zipkin_core
from support.servers import free_port
from tomograph import config
from tomograph.errors import ConfigurationError
from tomograph.reporting.scribe import (
    ScribeBackend,
    ScribeSender,
    _parse_log_reply,
    encode_log_call,
)
from tomograph.reporting.transport import SendError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def zipkin_core() -> Any:
    if not ZIPKIN_CORE.exists():
        pytest.fail(
            f"{ZIPKIN_CORE} is missing: the shared specs folder must sit beside the checkout"
        )
    return load_zipkin_core()


def signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def test_client_and_server_spans_arrive_as_v1_thrift(tmp_path: Path, zipkin_core: Any) -> None:
    with ScribeServer(tmp_path) as server:
        backend = ScribeBackend("127.0.0.1", server.port, interval=0.05)
        tracer = tomograph.Tracer("frontend", backends=[backend])
        with tracer.span("get /users", kind="server", tags={"http.path": "/users"}) as root:
            root.set_remote_endpoint(ipv4="10.1.2.3", port=51000)
            with tracer.span("select", kind="client", tags={"rows": 3}) as client:
                client.set_remote_endpoint("postgres", "10.0.0.9", port=5432)
                client.annotate("sent query")
            with tracer.span("render"):
                pass
        assert backend.flush(10)
        backend.close(1)
        server.wait_for(3)
        spans = {s.name: s for s in server.spans(zipkin_core)}
    assert {category for category, _ in server.entries} == {"zipkin"}
    assert set(spans) == {"get /users", "select", "render"}

    server_span, client_span, local = spans["get /users"], spans["select"], spans["render"]
    assert server_span.trace_id == signed64(root.trace_id & (2**64 - 1))
    assert server_span.trace_id_high == signed64(root.trace_id >> 64)
    assert server_span.id == signed64(root.span_id)
    assert server_span.parent_id is None
    assert client_span.parent_id == server_span.id
    assert local.parent_id == server_span.id

    assert [a.value for a in server_span.annotations] == ["sr", "ss"]
    assert [a.value for a in client_span.annotations] == ["cs", "sent query", "cr"]
    cs, _, cr = client_span.annotations
    assert cs.timestamp == client_span.timestamp
    assert cr.timestamp == client_span.timestamp + client_span.duration
    assert cs.host.service_name == "frontend"

    binary = {b.key: b for b in client_span.binary_annotations}
    assert binary["rows"].value == b"3"
    assert binary["rows"].annotation_type == zipkin_core.AnnotationType.STRING
    sa = binary["sa"]
    assert sa.annotation_type == zipkin_core.AnnotationType.BOOL
    assert sa.value == b"\x01"
    assert sa.host.service_name == "postgres"
    assert sa.host.ipv4 == (10 << 24) + 9
    assert sa.host.port == 5432
    ca = {b.key: b for b in server_span.binary_annotations}["ca"]
    assert ca.host.ipv4 == (10 << 24) + (1 << 16) + (2 << 8) + 3
    assert ca.host.port == signed16(51000)
    assert [(b.key, b.value) for b in local.binary_annotations] == [("lc", b"frontend")]
    assert local.annotations == []


def signed16(value: int) -> int:
    return value - (1 << 16) if value >= 1 << 15 else value


def test_try_later_is_retried(tmp_path: Path) -> None:
    with ScribeServer(tmp_path) as server:
        server.answers.extend(["TRY_LATER", "TRY_LATER"])
        backend = ScribeBackend("127.0.0.1", server.port, interval=0.05, backoff=0.01)
        tracer = tomograph.Tracer("svc", backends=[backend])
        tracer.start_span("op").finish()
        assert backend.flush(10)
        stats = backend.stats()
        backend.close(1)
    assert len(server.entries) == 1
    assert server.calls == 3
    assert stats["sent"] == 1
    assert stats["retries"] == 2


def test_dead_server_fails_spans_without_raising() -> None:
    backend = ScribeBackend(
        "127.0.0.1", free_port(), interval=0.05, max_retries=1, backoff=0.01, timeout=0.5
    )
    tracer = tomograph.Tracer("svc", backends=[backend])
    tracer.start_span("op").finish()
    backend.flush(5)
    stats = backend.stats()
    backend.close(0.5)
    assert stats["failed"] == 1
    assert stats["sent"] == 0


@contextmanager
def _one_reply_server(reply: bytes) -> Iterator[int]:
    """A TCP server on a free port that reads one request and answers ``reply``; its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(reply)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=5)


def test_garbage_reply_is_a_final_failure() -> None:
    with _one_reply_server(b"\x00\x00\x00\x08garbage!") as port:
        sender = ScribeSender("127.0.0.1", port, timeout=2)
        try:
            with pytest.raises(SendError) as caught:
                sender.send(encode_log_call("zipkin", [b"x"]))
            assert not caught.value.retryable
        finally:
            sender.close()


def test_oversized_reply_frame_is_refused() -> None:
    with _one_reply_server(b"\x7f\xff\xff\xff") as port:
        sender = ScribeSender("127.0.0.1", port, timeout=2)
        try:
            with pytest.raises(SendError, match="reply frame") as caught:
                sender.send(encode_log_call("zipkin", [b"x"]))
            assert caught.value.retryable
        finally:
            sender.close()


def test_large_batches_are_split_under_max_bytes() -> None:
    sender = ScribeSender("127.0.0.1", 9410, max_bytes=600)
    tracer = tomograph.Tracer("svc")
    spans = []
    for index in range(10):
        span = tracer.start_span(f"op-{index}", tags={"payload": "x" * 50})
        span.finish()
        spans.append(span)
    calls = sender.encode(spans)
    assert sum(count for count, _ in calls) == 10
    assert len(calls) > 1
    assert all(len(payload) <= 600 for _, payload in calls)


def test_scribe_url_configures_the_backend() -> None:
    try:
        tracer = tomograph.configure(
            backends=["scribe://127.0.0.1:9999?category=traces&timeout=1"], environ={}
        )
        (backend,) = tracer.backends
        assert isinstance(backend, ScribeBackend)
        assert (backend.sender.port, backend.sender.category) == (9999, "traces")
        assert ScribeBackend.from_url("scribe://collector").sender.port == 9410
        with pytest.raises(ConfigurationError, match="unknown parameter"):
            tomograph.configure(backends=["scribe://127.0.0.1:9410?encoding=json"], environ={})
    finally:
        config.reset()


@pytest.fixture(scope="module")
def scribe_thrift(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The scribe IDL loaded by thriftpy2: an encoder of replies independent of tomograph's."""
    import thriftpy2

    idl = tmp_path_factory.mktemp("scribe_idl") / "scribe.thrift"
    idl.write_text(SCRIBE_IDL)
    return thriftpy2.load(str(idl), module_name="scribe_reply_thrift")


def thrift_reply(thrift: Any, code: int, name: str, seqid: int) -> bytes:
    from thriftpy2.protocol import TBinaryProtocol
    from thriftpy2.thrift import TMessageType
    from thriftpy2.transport import TMemoryBuffer

    buffer = TMemoryBuffer()
    protocol = TBinaryProtocol(buffer)
    protocol.write_message_begin(name, TMessageType.REPLY, seqid)
    protocol.write_struct(thrift.scribe.Log_result(success=code))
    protocol.write_message_end()
    return bytes(buffer.getvalue())


@given(
    code=st.integers(-(2**31), 2**31 - 1),
    name=st.text(max_size=12),
    seqid=st.integers(-(2**31), 2**31 - 1),
    cut=st.integers(0, 64),
)
def test_replies_written_by_thrift_give_their_code_and_prefixes_never_another(
    scribe_thrift: Any, code: int, name: str, seqid: int, cut: int
) -> None:
    reply = thrift_reply(scribe_thrift, code, name, seqid)
    assert _parse_log_reply(reply) == code
    # A reply cut short has its code only if the whole result field arrived, else a description.
    prefix = reply[: len(reply) - cut]
    field_end = len(reply) - 1  # the struct's stop byte follows the field
    if len(prefix) >= field_end:
        assert _parse_log_reply(prefix) == code
    else:
        cut_short = ("a truncated reply", "a malformed reply", "no result")
        assert _parse_log_reply(prefix) in cut_short


@given(st.binary(max_size=64))
def test_bytes_that_are_no_thrift_reply_are_never_read_as_a_result_code(data: bytes) -> None:
    if data.startswith(b"\x80\x01\x00\x02"):  # strict binary protocol, message type REPLY
        return
    descriptions = ("a reply in an unknown protocol", "a malformed reply", "a truncated reply")
    result = _parse_log_reply(data)
    assert result in (*descriptions, "an exception") or str(result).startswith("message type ")


REPLY_DESCRIPTIONS = {
    "a reply in an unknown protocol",
    "a malformed reply",
    "an exception",
    "an unexpected result field",
    "a truncated reply",
    "no result",
}
#: The first four bytes of a Thrift binary-protocol (version 1) reply.
REPLY_HEADER = (0x80010000 | 2).to_bytes(4, "big")


@given(st.binary(max_size=64) | st.binary(max_size=40).map(REPLY_HEADER.__add__))
def test_any_reply_bytes_parse_to_a_code_or_a_description(reply: bytes) -> None:
    result = _parse_log_reply(reply)
    if isinstance(result, int):  # only a version-1 reply can carry a result code, and it does
        assert int.from_bytes(reply[:4], "big") & 0xFFFF00FF == 0x80010002
        assert result.to_bytes(4, "big", signed=True) in reply[8:]
    else:
        assert result in REPLY_DESCRIPTIONS or re.fullmatch(r"message type \d+", result)


def test_ok_and_try_later_replies_parse() -> None:
    def reply(code: int) -> bytes:
        header = (0x80010000 | 2).to_bytes(4, "big") + (3).to_bytes(4, "big") + b"Log"
        return header + bytes(4) + b"\x08\x00\x00" + code.to_bytes(4, "big") + b"\x00"

    assert _parse_log_reply(reply(0)) == 0
    assert _parse_log_reply(reply(1)) == 1
    assert isinstance(_parse_log_reply(reply(0)[:-6]), str)
