"""Trace ids on log records and error logs as span notes, with real loggers and structlog."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

import tomograph
from tomograph.ids import format_span_id, format_trace_id
from tomograph.integrations.logging import (
    SpanNoteHandler,
    TraceIdFilter,
    install,
    install_note_handler,
    structlog_processor,
    uninstall,
)
from tomograph.reporting.memory import MemoryBackend

FORMAT = "%(levelname)s [%(trace_id)s/%(span_id)s] %(message)s"


@pytest.fixture
def stream_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("tomograph-test-app")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


@pytest.fixture
def installed() -> Iterator[None]:
    install()
    yield
    uninstall()


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_install_puts_hex_ids_on_records_inside_spans(
    memory: MemoryBackend, installed: None, stream_logger: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = stream_logger
    with tomograph.span("work") as span:
        logger.info("inside")
    logger.info("outside")
    expected = f"INFO [{format_trace_id(span.trace_id)}/{format_span_id(span.span_id)}] inside"
    assert lines(stream) == [expected, "INFO [/] outside"]


def test_install_twice_and_uninstall_restore_the_factory() -> None:
    original = logging.getLogRecordFactory()
    install()
    wrapped = logging.getLogRecordFactory()
    install()
    assert logging.getLogRecordFactory() is wrapped
    uninstall()
    assert logging.getLogRecordFactory() is original


def test_logger_adapter_records_carry_the_ids(
    memory: MemoryBackend, installed: None, stream_logger: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = stream_logger
    adapter = logging.LoggerAdapter(logger, {"user": "ada"})
    with tomograph.span("work") as span:
        adapter.warning("via adapter")
    assert lines(stream) == [
        f"WARNING [{format_trace_id(span.trace_id)}/{format_span_id(span.span_id)}] via adapter"
    ]


def test_filter_sets_ids_and_keeps_values_given_as_extra(
    memory: MemoryBackend, stream_logger: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = stream_logger
    logger.handlers[0].addFilter(TraceIdFilter())
    with tomograph.span("work") as span:
        logger.error("plain")
        logger.error("own id", extra={"trace_id": "given"})
    logger.error("outside")
    span_hex = format_span_id(span.span_id)
    assert lines(stream) == [
        f"ERROR [{format_trace_id(span.trace_id)}/{span_hex}] plain",
        f"ERROR [given/{span_hex}] own id",
        "ERROR [/] outside",
    ]


def test_error_records_become_notes_and_lower_levels_do_not(
    memory: MemoryBackend, stream_logger: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, _ = stream_logger
    logger.addHandler(SpanNoteHandler())
    with tomograph.span("work"):
        logger.warning("just a warning")
        logger.error("payment failed for order %s", 42)
        try:
            raise KeyError("card")
        except KeyError:
            logger.exception("lookup failed")
    span = memory.find("work")
    assert [n.value for n in span.annotations] == [
        "ERROR: payment failed for order 42",
        "ERROR: lookup failed (KeyError: 'card')",
    ]
    assert not span.error
    assert "error" not in span.tags


def test_note_level_is_configurable_and_notes_are_cut(memory: MemoryBackend) -> None:
    logger = logging.getLogger("tomograph-test-levels")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = install_note_handler(logging.INFO, logger)
    handler.max_length = 20
    try:
        with tomograph.span("work"):
            logger.debug("not this")
            logger.info("x" * 100)
    finally:
        logger.removeHandler(handler)
    (note,) = memory.find("work").annotations
    assert note.value == "INFO: xxxxxxxxxxx..."
    assert len(note.value) == 20


def test_note_handler_outside_spans_does_nothing(memory: MemoryBackend) -> None:
    handler = SpanNoteHandler()
    handler.handle(logging.makeLogRecord({"levelno": logging.ERROR, "msg": "nobody traces"}))
    assert memory.spans == []


def test_structlog_processor_adds_ids(memory: MemoryBackend) -> None:
    output = io.StringIO()
    structlog.configure(
        processors=[structlog_processor, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(output),
        cache_logger_on_first_use=False,
    )
    try:
        log = structlog.get_logger()
        with tomograph.span("work") as span:
            log.info("inside", order=1)
        log.info("outside")
    finally:
        structlog.reset_defaults()
    inside, outside = (json.loads(line) for line in output.getvalue().splitlines())
    assert inside["trace_id"] == format_trace_id(span.trace_id)
    assert inside["span_id"] == format_span_id(span.span_id)
    assert inside["order"] == 1
    assert (outside["trace_id"], outside["span_id"]) == ("", "")
