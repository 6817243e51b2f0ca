"""One current span for OpenTelemetry and tomograph: the runtime context installed into the
OpenTelemetry API.

OpenTelemetry keeps its current span in its ``Context`` (a mapping held in a ContextVar),
tomograph in a ContextVar of its own. The bridge makes tomograph's the truth for the current span
and OpenTelemetry's for everything else a context holds:

* ``attach(context)`` also makes the context's span tomograph's current span: the tomograph span
  under an OpenTelemetry span made by tomograph, or a :class:`~._span.RemoteParent` standing for
  any other span context (one extracted from a request, another SDK's span). The context's
  baggage becomes that span's baggage while attached, and OpenTelemetry's
  ``suppress_instrumentation`` turns on tomograph's :func:`~tomograph.context.suppress_tracing`,
  as does ``suppress_http_instrumentation``, which OpenTelemetry's HTTP client instrumentations
  set around sending a request they trace (so tomograph's urllib3 or http.client layer under
  OpenTelemetry's requests span stays quiet, as OpenTelemetry's own would).
* ``get_current()`` is OpenTelemetry's context with tomograph's current span, and that span's
  baggage, in it: ``trace.get_current_span()`` inside ``with tomograph.span(...)`` returns that
  span. While tomograph delivers spans, the context carries ``suppress_instrumentation``, so an
  OpenTelemetry HTTP instrumentation never traces the requests that send spans.
* ``detach(token)`` undoes both.

Where the two agree (every span started through OpenTelemetry), ``get_current()`` costs two
ContextVar reads and a comparison. This module imports only OpenTelemetry's context package at
import time: ``OTEL_PYTHON_CONTEXT=tomograph`` loads it while that package is being imported.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Mapping
from contextvars import Token
from typing import Any

from opentelemetry.context.context import Context, _RuntimeContext
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

from tomograph.context import CURRENT_SPAN, ROOT_EXTRA, SUPPRESS_TRACING
from tomograph.propagation.baggage import (
    BAGGAGE,
    BaggageEntry,
    entries_of,
    is_valid_key,
    merge_baggage,
    replace_baggage,
)
from tomograph.span import Span as TomographSpan
from tomograph.text import printable

__all__ = [
    "RuntimeContext",
    "baggage_entries",
    "install_context",
    "installed_context",
    "same_baggage",
    "tomograph_span_of",
    "uninstall_context",
]

_get_current_span = CURRENT_SPAN.get
_set_current_span = CURRENT_SPAN.set

# Bound on first use (see _bind): OpenTelemetry's context keys, and the span classes, whose
# modules import the OpenTelemetry package this module may be loaded in the middle of.
SPAN_KEY: str = ""
BAGGAGE_KEY: str = ""
SUPPRESS_KEY: str = ""
SUPPRESS_HTTP_KEY: str = ""
_OtelSpan: Any = None
_RemoteParent: Any = None
_trace_span_class: Any = None
_view: Callable[[TomographSpan], Any] = None  # type: ignore[assignment]
_parent_of: Callable[[Any], Any] = None  # type: ignore[assignment]


def _bind() -> None:
    global SPAN_KEY, BAGGAGE_KEY, SUPPRESS_KEY, SUPPRESS_HTTP_KEY
    global _OtelSpan, _RemoteParent, _trace_span_class, _view, _parent_of
    from opentelemetry import baggage, context, trace
    from opentelemetry.trace import propagation

    from tomograph.opentelemetry import _span

    limits = _span.SpanLimits.from_environment()

    def view(span: TomographSpan) -> Any:
        return _span.Span(span, limits)

    BAGGAGE_KEY = baggage._BAGGAGE_KEY
    SUPPRESS_KEY = context._SUPPRESS_INSTRUMENTATION_KEY
    SUPPRESS_HTTP_KEY = context._SUPPRESS_HTTP_INSTRUMENTATION_KEY
    _OtelSpan = _span.Span
    _RemoteParent = _span.RemoteParent
    _trace_span_class = trace.Span
    _parent_of = _span.parent_of
    _view = view
    # Last: other threads take a set SPAN_KEY to mean that everything above is bound.
    SPAN_KEY = propagation._SPAN_KEY


def tomograph_span_of(otel_span: object) -> TomographSpan | None:
    """The tomograph span that stands for ``otel_span`` as the current span: its own under a
    span made by tomograph, a remote stand-in for any other valid span context, else None."""
    if otel_span is None:
        return None
    if not SPAN_KEY:
        _bind()
    if otel_span.__class__ is _OtelSpan:  # the usual case, without a call
        return otel_span.tomograph_span  # type: ignore[attr-defined, no-any-return]
    parent = _parent_of(otel_span)
    if parent is None or isinstance(parent, TomographSpan):
        return parent
    return _RemoteParent(otel_span, parent)  # type: ignore[no-any-return]


def baggage_entries(baggage: Mapping[str, object]) -> list[BaggageEntry]:
    """OpenTelemetry baggage as tomograph's entries (values as text; keys that are not HTTP
    tokens, which no propagator could send, left out)."""
    entries = []
    for key, value in baggage.items():
        if isinstance(key, str) and is_valid_key(key):
            entries.append(BaggageEntry(key, value if value.__class__ is str else printable(value)))
    return entries


def same_baggage(entries: tuple[BaggageEntry, ...], baggage: Mapping[str, object]) -> bool:
    """Whether tomograph's ``entries`` and OpenTelemetry's ``baggage`` hold the same values."""
    if len(entries) != len(baggage):
        return False
    for entry in entries:
        value = baggage.get(entry.key)
        if value is None or (value if value.__class__ is str else printable(value)) != entry.value:
            return False
    return True


#: Serializes the baggage links of attaches over a span that threads share. Taken only by an
#: attach whose context's baggage differs from its span's, and by its detach: never for a span
#: started through OpenTelemetry.
_BAGGAGE_LOCK = threading.Lock()


def _new_lock_in_child() -> None:
    # A fork while another thread held the lock would leave it held forever in the child.
    global _BAGGAGE_LOCK
    _BAGGAGE_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


class _Token:
    """What :meth:`RuntimeContext.attach` returns: how to undo each part of it.

    An attach that put its context's baggage on a span is linked to the attach before it and
    the one after it on the same span (``previous``/``later``): tasks sharing a span detach in
    the order they end, and whichever detaches last must restore the span's own baggage.
    """

    __slots__ = (
        "__weakref__",
        "baggage_span",
        "extra_before",
        "extra_set",
        "inner",
        "later",
        "previous",
        "root",
        "span",
        "suppress",
    )

    def __init__(self, span: Token[TomographSpan | None], inner: Token[Context]) -> None:
        self.span = span
        self.inner = inner
        self.suppress: Token[bool] | None = None
        self.root: Token[Mapping[str, Any] | None] | None = None
        self.baggage_span: TomographSpan | None = None
        self.extra_before: Any = None
        self.extra_set: Any = None
        self.previous: _Token | None = None
        self.later: _Token | None = None

    def restore_baggage(self) -> None:
        """Undo this attach's baggage on its span, in whatever order attaches are undone."""
        with _BAGGAGE_LOCK:
            span = self.baggage_span
            if span is None:
                return
            previous, later = self.previous, self.later
            if later is not None:  # attached after this one and still attached: it restores
                later.extra_before = self.extra_before
                later.previous = previous
            elif span.extra is self.extra_set:  # else tomograph's API changed it since: kept
                span.extra = self.extra_before
            if previous is not None:
                previous.later = later
            self.previous = self.later = self.baggage_span = None


class _AttachedExtra(dict[str, Any]):
    """A span's ``extra`` while an attached context's baggage is on it: it knows which attach
    put it there (a weak reference: a span never keeps a token alive)."""

    __slots__ = ("token",)

    token: Callable[[], _Token | None]

    def __reduce__(self) -> tuple[Any, ...]:
        # A plain dict elsewhere: a span's context is pickled to other processes, its token not.
        return (dict, (dict(self),))


class RuntimeContext(_RuntimeContext):
    """OpenTelemetry's runtime context with tomograph's current span as its current span.

    ``inner`` keeps the rest of the context (OpenTelemetry's own ContextVar implementation by
    default; :func:`install_context` wraps the one the API was using, so contexts attached
    before stay readable).
    """

    def __init__(self, inner: _RuntimeContext | None = None) -> None:
        self.inner = inner if inner is not None else ContextVarsRuntimeContext()
        if isinstance(self.inner, ContextVarsRuntimeContext):
            # The inner ContextVar itself: a Python call less on each use, on every span.
            variable = self.inner._current_context
            self._get_inner: Callable[[], Context] = variable.get
            self._set_inner: Callable[[Context], Token[Context]] = variable.set
            self._reset_inner: Callable[[Token[Context]], None] = variable.reset
        else:
            self._get_inner = self.inner.get_current
            self._set_inner = self.inner.attach
            self._reset_inner = self.inner.detach
        self._last_composed: tuple[Any, Any, Context] = (None, None, Context())

    def attach(self, context: Context) -> Token[Context]:
        """Make ``context`` current, its span tomograph's current span too."""
        if not SPAN_KEY:
            _bind()
        span = tomograph_span_of(context.get(SPAN_KEY))
        token = _Token(_set_current_span(span), self.inner.attach(context))
        baggage = context.get(BAGGAGE_KEY)
        if span is not None:
            if baggage is not None and isinstance(baggage, Mapping):
                self._carry_baggage(span, baggage, token)
        elif isinstance(baggage, Mapping) and (baggage or ROOT_EXTRA.get() is not None):
            # Baggage with no span: the traces started under this context carry it.
            entries = merge_baggage(baggage_entries(baggage))
            token.root = ROOT_EXTRA.set({BAGGAGE: entries} if entries else None)
        suppress = context.get(SUPPRESS_KEY) or context.get(SUPPRESS_HTTP_KEY)
        if suppress and not SUPPRESS_TRACING.get():
            token.suppress = SUPPRESS_TRACING.set(True)
        return token  # type: ignore[return-value]  # opaque to the API

    @staticmethod
    def _carry_baggage(span: TomographSpan, baggage: Mapping[str, object], token: _Token) -> None:
        entries = entries_of(span.extra)
        if same_baggage(entries, baggage):
            return
        new = baggage_entries(baggage)
        if span.__class__ is _RemoteParent:
            # Made for this attach only: nothing to restore.
            span.extra = {**(span.extra or {}), BAGGAGE: tuple(new)}
            return
        if span.end_ns:
            return
        with _BAGGAGE_LOCK:
            before = span.extra
            replace_baggage(span, new)
            attached = _AttachedExtra(span.extra or ())
            attached.token = weakref.ref(token)
            span.extra = attached
            token.baggage_span = span
            token.extra_before = before
            token.extra_set = attached
            previous = before.token() if before.__class__ is _AttachedExtra else None
            if previous is not None and previous.baggage_span is span:
                token.previous = previous
                previous.later = token

    def get_current(self) -> Context:
        """OpenTelemetry's current context, with tomograph's current span and its baggage."""
        context = self._get_inner()
        span = _get_current_span()
        if not SPAN_KEY:
            _bind()
        shown = context.get(SPAN_KEY)
        if span is None:
            if shown is not None and not (
                isinstance(shown, _trace_span_class) and not shown.get_span_context().is_valid
            ):
                context = Context({k: v for k, v in context.items() if k != SPAN_KEY})
        else:
            if not (
                (shown.__class__ is _OtelSpan and shown.tomograph_span is span)  # type: ignore[attr-defined]
                or (span.__class__ is _RemoteParent and span.otel_span is shown)  # type: ignore[attr-defined]
            ):
                context = self._with_span(context, span)
            extra = span.extra
            baggage = context.get(BAGGAGE_KEY)
            if extra or baggage is not None:
                entries = entries_of(extra)
                if not isinstance(baggage, Mapping) or not same_baggage(entries, baggage):
                    shown_baggage = {entry.key: entry.value for entry in entries}
                    context = Context({**context, BAGGAGE_KEY: shown_baggage})
        if SUPPRESS_TRACING.get() and not context.get(SUPPRESS_KEY):
            context = Context({**context, SUPPRESS_KEY: True})
        return context

    def _with_span(self, context: Context, span: TomographSpan) -> Context:
        """``context`` with an OpenTelemetry view of ``span`` as its span.

        The last one made is kept and given again for the same two (it depends on nothing
        else): code that reads the current span over and over inside a tomograph span (each
        ``trace.get_current_span()``) gets one view, about 4,500 instructions less per read (of
        15,000).
        """
        last = self._last_composed
        if last[0] is context and last[1] is span:
            return last[2]
        shown = span.otel_span if span.__class__ is _RemoteParent else _view(span)  # type: ignore[attr-defined]
        composed = Context({**context, SPAN_KEY: shown})
        self._last_composed = (context, span, composed)  # one assignment: atomic for threads
        return composed

    def detach(self, token: Token[Context]) -> None:
        """Restore what was current before the :meth:`attach` that returned ``token``."""
        ours: Any = token
        if ours.__class__ is not _Token:
            self.inner.detach(token)  # attached before the bridge was installed
            return
        try:
            CURRENT_SPAN.reset(ours.span)
        except ValueError:
            pass  # attached in another context: the inner detach below says so
        if ours.root is not None:
            try:
                ROOT_EXTRA.reset(ours.root)
            except ValueError:
                pass
        if ours.suppress is not None:
            try:
                SUPPRESS_TRACING.reset(ours.suppress)
            except ValueError:
                pass
        if ours.baggage_span is not None:
            ours.restore_baggage()
        self.inner.detach(ours.inner)


def installed_context() -> RuntimeContext | None:
    """The bridge, if OpenTelemetry's API is using it."""
    from opentelemetry import context

    current = context._RUNTIME_CONTEXT
    return current if isinstance(current, RuntimeContext) else None


def install_context() -> RuntimeContext:
    """Make OpenTelemetry's API use the bridge (once; contexts attached before stay readable)."""
    from opentelemetry import context

    current = context._RUNTIME_CONTEXT
    if isinstance(current, RuntimeContext):
        return current
    bridge = RuntimeContext(current)
    context._RUNTIME_CONTEXT = bridge
    return bridge


def uninstall_context() -> None:
    """Give OpenTelemetry's API back the runtime context it had before :func:`install_context`."""
    from opentelemetry import context

    current = context._RUNTIME_CONTEXT
    if isinstance(current, RuntimeContext):
        context._RUNTIME_CONTEXT = current.inner
