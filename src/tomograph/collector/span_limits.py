"""What one stored span may hold, enforced at ingest (Zipkin and OTLP alike).

Without bounds one span costs what its sender makes it cost: forty spans with a 10 MB tag each
(1.8 MB gzipped on the wire) make a 400 MB trace that every read of it builds in memory. So,
after decoding and before storing:

* names (span, local and remote service) and tag keys are cut to :data:`MAX_NAME_LENGTH`
  characters, the longest a query parameter may be (a longer name could never be searched for);
* tag values and annotation values are cut to ``max_value_length`` characters;
* a span still larger than ``max_span_length`` characters has its largest values cut further
  until it fits; if even that is not enough (thousands of tags), the tags and annotations that
  do not fit are dropped and the tag ``tomograph.dropped`` says how many;
* a cut text ends with :func:`truncation_marker`, e.g. ``…[truncated from 10000000 characters]``,
  so a reader sees that something is missing and how much;
* times and durations the store cannot hold (2^63 µs and beyond) refuse the batch (400), naming
  the span and field.

Lengths count characters (code points); a span's size counts the characters of its names, tag
keys, tag values and annotation values plus a few per entry for the JSON around them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tomograph.collector.ingest import IngestError
from tomograph.collector.storage import SpanDict
from tomograph.encoding.normalize import normalize_annotations

__all__ = [
    "DROPPED_TAG",
    "MAX_MICROS",
    "MAX_NAME_LENGTH",
    "SpanLimits",
    "limit_spans",
    "truncation_marker",
]

#: The longest span name, service name or tag key kept (longer ones are cut).
MAX_NAME_LENGTH = 1024
#: The largest timestamp or duration (µs) the store holds: a signed 64-bit integer.
MAX_MICROS = (1 << 63) - 1
#: The tag that counts what did not fit in a span (set only when something was dropped).
DROPPED_TAG = "tomograph.dropped"

# Characters of JSON around each entry, so that many tiny entries count for what they cost:
# "key":"value", for a tag; {"timestamp":1700000000000000,"value":""}, for an annotation.
_TAG_OVERHEAD = 6
_NOTE_OVERHEAD = 40
# Ids, kind, times, endpoint addresses: the most a span's fixed fields take.
_FIXED_OVERHEAD = 400


def truncation_marker(original_length: int) -> str:
    """What ends a text cut at ingest: how long it was.

    >>> truncation_marker(10_000_000)
    '…[truncated from 10000000 characters]'
    """
    return f"…[truncated from {original_length} characters]"


@dataclass(frozen=True)
class SpanLimits:
    """The most one span may hold, in characters (see the module documentation).

    ``max_value_length``: a tag value or annotation value (Tempo cuts attributes at 2 KB, the
    OpenTelemetry SDKs do not cut by default: 64K keeps whole stack traces and SQL statements).
    ``max_span_length``: all of a span (Tempo's bound is 5 MB per trace).

    >>> SpanLimits().max_value_length
    65536
    """

    max_value_length: int = 65_536
    max_span_length: int = 262_144

    def __post_init__(self) -> None:
        if self.max_value_length < 64:
            raise ValueError("max_value_length must be at least 64 characters")
        if self.max_span_length < 4 * MAX_NAME_LENGTH + _FIXED_OVERHEAD:
            raise ValueError(
                f"max_span_length must be at least {4 * MAX_NAME_LENGTH + _FIXED_OVERHEAD}"
                " characters (the names and fixed fields of a span)"
            )


def _cut(text: str, length: int) -> str:
    """``text`` cut so that, with its marker, it holds at most ``length`` characters."""
    marker = truncation_marker(len(text))
    return text[: max(0, length - len(marker))] + marker


def _check_micros(index: int, field: str, value: Any) -> None:
    if isinstance(value, int) and value > MAX_MICROS:
        raise IngestError(f"span {index}: {field} must be below 2^63 (epoch µs), not {value}")


def _limit_names(span: SpanDict) -> int:
    cut = 0
    name = span.get("name")
    if isinstance(name, str) and len(name) > MAX_NAME_LENGTH:
        span["name"] = _cut(name, MAX_NAME_LENGTH)
        cut += 1
    for field in ("localEndpoint", "remoteEndpoint"):
        endpoint = span.get(field)
        service = endpoint.get("serviceName") if isinstance(endpoint, dict) else None
        if isinstance(service, str) and len(service) > MAX_NAME_LENGTH:
            endpoint["serviceName"] = _cut(service, MAX_NAME_LENGTH)  # type: ignore[index]
            cut += 1
    return cut


def _limit_values(span: SpanDict, max_value: int) -> tuple[int, int]:
    """Cut long tag keys, tag values and annotation values; (how many were cut, span size)."""
    cut = 0
    size = _FIXED_OVERHEAD + len(span.get("name") or "")
    for field in ("localEndpoint", "remoteEndpoint"):
        endpoint = span.get(field)
        if isinstance(endpoint, dict):
            size += len(endpoint.get("serviceName") or "")
    tags: dict[str, str] | None = span.get("tags")
    if tags:
        if any(len(key) > MAX_NAME_LENGTH or len(value) > max_value for key, value in tags.items()):
            limited = {}
            for key, value in tags.items():
                short_key = _cut(key, MAX_NAME_LENGTH) if len(key) > MAX_NAME_LENGTH else key
                short_value = _cut(value, max_value) if len(value) > max_value else value
                cut += (short_key is not key) + (short_value is not value)
                limited[short_key] = short_value
            span["tags"] = tags = limited
        size += sum(len(key) + len(value) + _TAG_OVERHEAD for key, value in tags.items())
    for note in span.get("annotations") or ():
        value = note["value"]
        if len(value) > max_value:
            note["value"] = value = _cut(value, max_value)
            cut += 1
        size += len(value) + _NOTE_OVERHEAD
    return cut, size


def _shrink(span: SpanDict, excess: int) -> tuple[int, int]:
    """Cut the largest values until ``excess`` characters are gone: (how many cut, excess left).

    Characters are left over only when every value is already no longer than its marker.
    """
    tags: dict[str, str] = span.get("tags") or {}
    notes: list[dict[str, Any]] = span.get("annotations") or []
    values: list[tuple[int, str, int]] = [(len(v), k, -1) for k, v in tags.items()]
    values += [(len(note["value"]), "", i) for i, note in enumerate(notes)]
    values.sort(key=lambda entry: entry[0], reverse=True)
    cut = 0
    for length, key, position in values:
        if excess <= 0:
            break
        text = tags[key] if position < 0 else notes[position]["value"]
        shorter = _cut(text, length - excess)
        if len(shorter) >= length:
            break  # this value, and every smaller one, is no longer than a marker
        excess -= length - len(shorter)
        if position < 0:
            tags[key] = shorter
        else:
            notes[position]["value"] = shorter
        cut += 1
    return cut, excess


def _drop(span: SpanDict, excess: int, limit: int) -> int:
    """Drop annotations, then tags, last first, until ``excess`` is gone; say so in a tag."""
    notes: list[dict[str, Any]] = span.get("annotations") or []
    tags: dict[str, str] = span.get("tags") or {}
    excess += len(DROPPED_TAG) + 100  # room for the tag that tells what was dropped
    dropped_notes = dropped_tags = 0
    while excess > 0 and notes:
        excess -= len(notes.pop()["value"]) + _NOTE_OVERHEAD
        dropped_notes += 1
    while excess > 0 and tags:
        key, value = tags.popitem()
        excess -= len(key) + len(value) + _TAG_OVERHEAD
        dropped_tags += 1
    if not notes:
        span.pop("annotations", None)
    tags[DROPPED_TAG] = (
        f"{dropped_tags} tags and {dropped_notes} annotations dropped: the span was over"
        f" {limit} characters"
    )
    span["tags"] = tags
    return dropped_tags + dropped_notes


def _within(span: SpanDict, max_value: int, max_span: int) -> bool:
    """Whether ``span`` is within the limits already, so that limiting it would change nothing.

    Most spans are: measured with C loops (``map(len, ...)``) and left alone. The longest tag
    key and value are looked for only when all of them together are too long (a typical span's
    tags hold a few dozen characters). A batch of typical spans costs about 12,000 instructions
    per span to check, times included, instead of 20,100.
    """
    name = span.get("name")
    size = _FIXED_OVERHEAD
    if name:
        if len(name) > MAX_NAME_LENGTH:
            return False
        size += len(name)
    endpoint = span.get("localEndpoint")
    if endpoint:
        service = len(endpoint.get("serviceName") or "")
        if service > MAX_NAME_LENGTH:
            return False
        size += service
    endpoint = span.get("remoteEndpoint")
    if endpoint:
        service = len(endpoint.get("serviceName") or "")
        if service > MAX_NAME_LENGTH:
            return False
        size += service
    tags: dict[str, str] | None = span.get("tags")
    if tags:
        keys = sum(map(len, tags))
        values = sum(map(len, tags.values()))
        if keys > MAX_NAME_LENGTH and max(map(len, tags)) > MAX_NAME_LENGTH:
            return False
        if values > max_value and max(map(len, tags.values())) > max_value:
            return False
        size += keys + values + _TAG_OVERHEAD * len(tags)
    notes = span.get("annotations")
    if notes:
        for note in notes:
            value = len(note["value"])
            if value > max_value:
                return False
            size += value + _NOTE_OVERHEAD
    return size <= max_span


def limit_spans(spans: list[SpanDict], limits: SpanLimits) -> int:
    """Apply ``limits`` to decoded spans, in place; returns how many texts were cut or dropped.

    Raises :class:`~tomograph.collector.ingest.IngestError` (before changing anything) when a
    time or duration is beyond what the store holds.

    >>> spans = [{"traceId": "a" * 16, "id": "b" * 16, "tags": {"big": "x" * 100_000}}]
    >>> limit_spans(spans, SpanLimits())
    1
    >>> len(spans[0]["tags"]["big"])
    65536
    """
    max_value, max_span = limits.max_value_length, limits.max_span_length
    over = []  # the spans to limit, once every time is known to fit
    for index, span in enumerate(spans):
        get = span.get
        # a typical span's times cost a comparison each; anything else gets the full check
        timestamp, duration = get("timestamp"), get("duration")
        if timestamp.__class__ is not int or timestamp > MAX_MICROS:
            _check_micros(index, "timestamp", timestamp)
        if duration.__class__ is not int or duration > MAX_MICROS:
            _check_micros(index, "duration", duration)
        notes = get("annotations")
        if notes:
            for position, note in enumerate(notes):
                _check_micros(index, f"annotations[{position}].timestamp", note.get("timestamp"))
        if not _within(span, max_value, max_span):
            over.append(span)
    changed = 0
    for span in over:
        before = changed
        changed += _limit_names(span)
        cut, size = _limit_values(span, limits.max_value_length)
        changed += cut
        if size > limits.max_span_length:
            cut, excess = _shrink(span, size - limits.max_span_length)
            changed += cut
            if excess > 0:
                changed += _drop(span, excess, limits.max_span_length)
        if changed > before and span.get("annotations"):
            # values cut to the same text are one annotation now, maybe in another place
            notes = span["annotations"]
            span["annotations"] = normalize_annotations((n["timestamp"], n["value"]) for n in notes)
    return changed
