"""Query-string parsing for the Zipkin API, with Zipkin's validation rules (400 on violation)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

from tomograph.collector.annotation_query import parse_annotation_query
from tomograph.collector.span_limits import MAX_MICROS, MAX_NAME_LENGTH
from tomograph.collector.storage import QueryRequest

__all__ = [
    "MAX_END_TS",
    "MAX_LIMIT",
    "MAX_SAMPLES",
    "OPERATION_KINDS",
    "BadRequest",
    "parse_operation_kind",
    "parse_query_request",
    "parse_trace_id",
    "parse_trace_ids",
    "positive_int",
    "present_text",
]

#: The most traces one search may return (keeps one request's memory bounded).
MAX_LIMIT = 10_000
#: The largest ``endTs``/``lookback`` in milliseconds: the store compares them in microseconds.
MAX_END_TS = MAX_MICROS // 1000
#: The most spans one ``operationSamples`` answer holds (about 30 bytes of JSON each).
MAX_SAMPLES = 100_000
#: The kinds an operation may have; LOCAL stands for spans without a kind (Zipkin's local spans).
OPERATION_KINDS = ("CLIENT", "SERVER", "PRODUCER", "CONSUMER", "LOCAL")
_HEX = re.compile(r"[0-9a-fA-F]{1,32}")
# ASCII digits only: int() would also take " 5", "+5", "1_0" and other scripts' digits.
_DIGITS = re.compile(r"[0-9]+")
_MAX_TEXT = MAX_NAME_LENGTH  # a longer name is never stored


class BadRequest(ValueError):
    """A query parameter is missing or invalid (answered with 400 and this message)."""


def positive_int(
    params: Mapping[str, str], name: str, default: int | None = None, maximum: int = MAX_MICROS
) -> int | None:
    """Parameter ``name`` as an integer from 1 to ``maximum``, ``default`` when absent or empty.

    Only plain ASCII digits are read (no sign, space, underscore or other scripts' digits);
    anything else, zero, or a value over ``maximum`` is a BadRequest naming the parameter.

    >>> positive_int({"limit": "5"}, "limit")
    5
    """
    text = params.get(name)
    if text is None or text == "":
        return default
    if not _DIGITS.fullmatch(text):
        raise BadRequest(f"{name} must be an integer, not {text[:40]!r}")
    digits = text.lstrip("0")
    if len(digits) > len(str(maximum)):  # too large, known without converting it
        raise BadRequest(f"{name} must be at most {maximum}")
    value = int(digits or "0")
    if value <= 0:
        raise BadRequest(f"{name} must be greater than zero")
    if value > maximum:
        raise BadRequest(f"{name} must be at most {maximum}")
    return value


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if len(value) > _MAX_TEXT:
        raise BadRequest(f"{name} is longer than {_MAX_TEXT} characters")
    value = value.strip().lower()
    return value or None


def required_text(params: Mapping[str, str], name: str) -> str:
    """A required, non-empty parameter (lower-cased); BadRequest when missing.

    >>> required_text({"serviceName": "Web"}, "serviceName")
    'web'
    """
    value = _text(params, name)
    if value is None:
        raise BadRequest(f"{name} is required")
    return value


def present_text(params: Mapping[str, str], name: str) -> str:
    """A required parameter that may be empty (a span name may be ""), lower-cased, not stripped.

    >>> present_text({"spanName": ""}, "spanName")
    ''
    """
    value = params.get(name)
    if value is None:
        raise BadRequest(f"{name} is required")
    if len(value) > _MAX_TEXT:
        raise BadRequest(f"{name} is longer than {_MAX_TEXT} characters")
    return value.lower()


def parse_operation_kind(params: Mapping[str, str]) -> str | None:
    """The required ``kind`` parameter: a span kind, or None for ``LOCAL`` (no kind).

    >>> parse_operation_kind({"kind": "server"}), parse_operation_kind({"kind": "LOCAL"})
    ('SERVER', None)
    """
    text = params.get("kind") or ""
    # ASCII first: upper() maps some other letters to ASCII (U+017F, long s, becomes "S")
    kind = text.upper() if text.isascii() else ""
    if kind not in OPERATION_KINDS:
        raise BadRequest(f"kind must be one of {', '.join(OPERATION_KINDS)}, not {text[:40]!r}")
    return None if kind == "LOCAL" else kind


def parse_trace_id(text: str) -> str:
    """A trace id from a URL, as Zipkin reads it: 1-32 hex digits, zero-padded to 16 or 32.

    >>> parse_trace_id("ABC")
    '0000000000000abc'
    """
    if not _HEX.fullmatch(text):
        raise BadRequest(f"traceId must be 16 or 32 hex characters, not {text[:40]!r}")
    text = text.lower()
    width = 16 if len(text) <= 16 else 32
    trace_id = text.rjust(width, "0")
    if not trace_id.strip("0"):
        raise BadRequest("traceId must not be all zeros")
    if width == 32 and trace_id.startswith("0" * 16):
        trace_id = trace_id[16:]
    return trace_id


def parse_trace_ids(text: str | None) -> list[str]:
    """The ``traceIds`` of ``/traceMany``: at least two distinct ids, comma-separated.

    >>> parse_trace_ids("a,b")
    ['000000000000000a', '000000000000000b']
    """
    if not text:
        raise BadRequest("traceIds is required")
    ids = list(dict.fromkeys(parse_trace_id(part.strip()) for part in text.split(",")))
    if len(ids) < 2:
        raise BadRequest("traceIds needs at least two distinct trace ids (use /trace/{traceId})")
    if len(ids) > MAX_LIMIT:
        raise BadRequest(f"traceIds has more than {MAX_LIMIT} ids")
    return ids


def parse_query_request(
    params: Mapping[str, str], default_lookback: int, now_ms: int | None = None
) -> QueryRequest:
    """The ``GET /api/v2/traces`` parameters as a :class:`QueryRequest`.

    >>> parse_query_request({"serviceName": "Web", "limit": "3"}, 3600000, now_ms=10**12).limit
    3
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    end_ts = positive_int(params, "endTs", now_ms, MAX_END_TS)
    lookback = positive_int(params, "lookback", default_lookback, MAX_END_TS)
    limit = positive_int(params, "limit", 10, MAX_LIMIT)
    assert end_ts is not None and lookback is not None and limit is not None
    min_duration = positive_int(params, "minDuration")
    max_duration = positive_int(params, "maxDuration")
    if max_duration is not None:
        if min_duration is None:
            raise BadRequest("maxDuration is only valid with minDuration")
        if max_duration < min_duration:
            raise BadRequest("maxDuration must be greater than or equal to minDuration")
    span_name = _text(params, "spanName")
    raw_query = params.get("annotationQuery")
    if raw_query is not None and len(raw_query) > _MAX_TEXT * 4:
        raise BadRequest("annotationQuery is too long")
    try:
        annotation_query = parse_annotation_query(raw_query)
    except ValueError as error:
        raise BadRequest(str(error)) from None
    return QueryRequest(
        end_ts=end_ts,
        lookback=min(lookback, end_ts),
        limit=limit,
        service_name=_text(params, "serviceName"),
        remote_service_name=_text(params, "remoteServiceName"),
        span_name=None if span_name == "all" else span_name,
        annotation_query=annotation_query,
        min_duration=min_duration,
        max_duration=max_duration,
    )
