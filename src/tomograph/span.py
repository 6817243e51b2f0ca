"""The recording span: the object every traced operation creates.

This module is the hot path. Starting and finishing a span takes no lock, copies no dict and
formats nothing: ids stay integers, times stay monotonic nanoseconds, and hex, JSON and epoch
conversion happen later, on a background thread or in an encoder.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Mapping
from contextvars import Token
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, SupportsIndex, TypeVar, cast

from tomograph._accelerator import speedups
from tomograph.clock import ANCHOR, monotonic_ns
from tomograph.context import CURRENT_SPAN, ROOT_EXTRA
from tomograph.errors import TracingError
from tomograph.ids import new_span_id, new_trace_id
from tomograph.model import (
    Endpoint,
    ExceptionNote,
    Note,
    SpanKind,
    TagValue,
    TraceContext,
    coerce_kind,
)
from tomograph.sampling import undo_root_sample

if TYPE_CHECKING:
    from tomograph.tracer import Tracer

__all__ = ["ACCELERATED", "Span", "make_span"]

F = TypeVar("F", bound=Callable[..., Any])

_get_current = CURRENT_SPAN.get
_get_root_extra = ROOT_EXTRA.get
_getrandbits = random.getrandbits
_monotonic_ns = monotonic_ns
_anchor = ANCHOR
_new_object = object.__new__
_set_current = CURRENT_SPAN.set
_reset_current = CURRENT_SPAN.reset

#: ``end_ns`` of a finished unsampled span, which is never timed.
_UNTIMED = -1

_NO_TAGS: Mapping[str, TagValue] = MappingProxyType({})


class _Current(str):
    """The type of :data:`CURRENT`, a sentinel compared by identity.

    A ``str`` only so that the compiled functions' text signatures can name it: ``inspect``
    takes a builtin's defaults of str, int, float, bytes, bool and None only, so
    ``inspect.signature(tracer.span)`` and ``help()`` show ``parent=CURRENT`` for both builds.
    """

    __slots__ = ()
    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other  # never equal to the text "CURRENT" (str would say it is)

    def __ne__(self, other: object) -> bool:
        return self is not other

    def __repr__(self) -> str:
        return "CURRENT"

    def __reduce__(self) -> str:
        return "CURRENT"  # copies and pickles are this one object


#: ``parent`` default meaning "whatever span is current when the span starts".
CURRENT: Any = _Current("CURRENT")

#: Epoch microseconds a given span time may take: 1970 to 2262, so that epoch nanoseconds fit
#: the signed 64 bits of every wire format.
_MAX_EPOCH_US = (1 << 63) // 1000


def _epoch_us(timestamp_us: object) -> int:
    """A timestamp passed to the span API, checked: a wire format must be able to carry it."""
    if (
        isinstance(timestamp_us, (int, float))
        and not isinstance(timestamp_us, bool)
        and 0 <= timestamp_us < _MAX_EPOCH_US  # "not" also refuses NaN
    ):
        return int(timestamp_us)
    raise TracingError(
        f"timestamps are epoch microseconds from 0 to {_MAX_EPOCH_US - 1}, not {timestamp_us!r}"
    )


class Span:
    """One timed operation in a trace.

    Made by :meth:`Tracer.span` (a context manager and decorator) or :meth:`Tracer.start_span`
    (finish it yourself). Ids are ints; ``start_ns``/``end_ns`` are monotonic nanoseconds, exposed
    as epoch microseconds by :attr:`timestamp` and :attr:`duration`. After :meth:`finish` a span
    must not be changed.

    >>> import tomograph
    >>> with tomograph.Tracer('shop').span('checkout') as span:
    ...     span.tag('items', 3)
    ...     span.annotate('paid')
    """

    __slots__ = (
        "_classic",
        "_token",
        "_tracer",
        "debug",
        "end_ns",
        "epoch_offset_ns",
        "error",
        "extra",
        "kind",
        "local_endpoint",
        "name",
        "notes_raw",
        "parent_id",
        "remote_endpoint",
        "sampled",
        "shared",
        "span_id",
        "start_ns",
        "tags",
        "trace_id",
    )

    trace_id: int
    span_id: int
    parent_id: int | None
    sampled: bool
    debug: bool
    shared: bool
    extra: Mapping[str, Any] | None
    #: Notes as recorded: (monotonic ns, value, duration µs or None). See :attr:`annotations`.
    notes_raw: list[tuple[int, str, int | None]]
    #: epoch ns = monotonic ns + this, for every time of this span: the clock anchor's offset
    #: when its local root started (see :mod:`tomograph.clock`).
    epoch_offset_ns: int

    name: str
    kind: SpanKind | None
    local_endpoint: Endpoint | None
    remote_endpoint: Endpoint | None
    tags: dict[str, TagValue]
    start_ns: int
    end_ns: int
    error: bool
    _classic: bool
    _token: Token[Span | None] | None
    _tracer: Tracer

    def __new__(
        cls,
        tracer: Tracer,
        name: str,
        kind: SpanKind | str | None = None,
        tags: Mapping[str, TagValue] | None = None,
        parent: Span | TraceContext | None = CURRENT,
        local_endpoint: Endpoint | None = None,
        remote_endpoint: Endpoint | None = None,
    ) -> Span:
        if cls is not Span:
            # A subclass (the OpenTelemetry bridge's stand-in for a remote parent) sets every
            # field in an __init__ of its own.
            return _new_object(cls)
        return make_span(tracer, name, kind, tags, parent, local_endpoint, remote_endpoint)

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        # For copy.copy(): a bare object and then the fields, as for any slotted class; the
        # default would call Span.__new__, which starts a span, without its arguments.
        fields = {
            name: getattr(self, name)
            for cls in type(self).__mro__
            for name in getattr(cls, "__slots__", ())
            if hasattr(self, name)
        }
        return (_new_object, (type(self),), (None, fields))

    # -- life cycle -------------------------------------------------------------------------

    def start(self, timestamp_us: int | None = None) -> Span:
        """Backdate the span's start to ``timestamp_us`` (epoch µs), if given; returns ``self``.

        A span starts when it is made: by ``tracer.span()`` or :meth:`Tracer.start_span`.
        A timestamp that is not a number from 0 to 2**63 // 1000 raises
        :class:`~tomograph.TracingError` (as do :meth:`finish` and :meth:`annotate_at`).
        """
        if timestamp_us is not None and not self.end_ns and self.sampled:
            self.start_ns = _epoch_us(timestamp_us) * 1000 - self.epoch_offset_ns
            if self._classic and self.sampled:
                self.notes_raw[0] = (self.start_ns, "start", None)
        return self

    def finish(self, timestamp_us: int | None = None) -> None:
        """Stop the clock and hand the span to the tracer's backends (if sampled).

        Finishing twice is harmless: the second call does nothing.
        """
        if self.end_ns:
            return
        if not self.sampled:
            self.end_ns = _UNTIMED
            return
        end_ns = (
            _monotonic_ns()
            if timestamp_us is None
            else _epoch_us(timestamp_us) * 1000 - self.epoch_offset_ns
        )
        self.end_ns = end_ns
        if self._classic:
            self.notes_raw.append((end_ns, "stop", None))
        self._tracer._report(self)

    def __enter__(self) -> Span:
        self._token = _set_current(self)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        # deactivate() and finish() written out: this runs once per span, so calls count.
        if exc is not None:
            self.record_exception(exc)
        token = self._token
        if token is not None:
            self._token = None
            try:
                _reset_current(token)
            except ValueError:
                pass  # entered in another context: see deactivate()
        if not self.end_ns:
            if self.sampled:
                end_ns = self.end_ns = _monotonic_ns()
                if self._classic:
                    self.notes_raw.append((end_ns, "stop", None))
                self._tracer._report(self)
            else:
                self.end_ns = _UNTIMED

    def deactivate(self) -> None:
        """Restore the span that was current before this one was entered."""
        token = self._token
        if token is None:
            return
        self._token = None
        try:
            _reset_current(token)
        except ValueError:
            # Entered in one context (task, thread) and left in another: the other context
            # never saw this span as current, so there is nothing to undo there.
            pass

    # -- recording --------------------------------------------------------------------------

    def tag(self, key: str, value: TagValue) -> None:
        """Set a tag: a str, int, float or bool, or a list or tuple of them.

        Zipkin encoders write strings (a list as a JSON array of strings), OTLP keeps the types;
        any other value is written as its text (see :mod:`tomograph.encoding.values`).
        """
        if self.sampled:
            self.tags[key] = value

    def annotate(self, value: str, duration_us: int | None = None) -> None:
        """Add a timestamped note (a Zipkin annotation), optionally with a duration in µs."""
        if self.sampled:
            self.notes_raw.append((_monotonic_ns(), value, duration_us))

    def annotate_at(self, value: str, timestamp_us: int, duration_us: int | None = None) -> None:
        """Add a note with an explicit epoch-microsecond timestamp."""
        if self.sampled:
            at = _epoch_us(timestamp_us) * 1000 - self.epoch_offset_ns
            self.notes_raw.append((at, value, duration_us))

    def record_exception(self, exc: BaseException) -> None:
        """Mark the span as failed by ``exc``: ``error`` tag, ``exception.type`` tag and a note.

        The note (``"ValueError: bad input"``) is an :class:`~tomograph.model.ExceptionNote`
        that also keeps the traceback's frames: OTLP exports it as an ``exception`` event with
        a stack trace. Unsampled spans record nothing.
        """
        if isinstance(exc, GeneratorExit):
            return  # a generator closed early is not a failure
        self.error = True
        if not self.sampled:
            return
        note = ExceptionNote.of(exc)
        self.tags["error"] = note.message or note.type_name
        self.tags["exception.type"] = note.type_name
        self.notes_raw.append((monotonic_ns(), note, None))

    def set_sampling(self, sampled: bool, debug: bool = False) -> None:
        """Override the sampling decision of an unfinished span; its children follow it.

        For decisions that arrive with or just after the span: OpenTracing's
        ``sampling.priority`` tag, a debug request. ``debug=True`` also marks it debug (and so
        sampled). Nothing recorded before a switch to sampled is recovered, except the span's
        start time.

        >>> from tomograph import Tracer
        >>> from tomograph.sampling import never
        >>> span = Tracer('svc', sampler=never()).start_span('op')
        >>> span.set_sampling(True, debug=True)
        >>> span.sampled, span.debug
        (True, True)
        """
        if self.end_ns:
            return
        sampled = sampled or debug
        if sampled and not self.sampled:
            self.tags = dict(self.tags)
            self.notes_raw = [(self.start_ns, "start", None)] if self._classic else []
        self.sampled = sampled
        if debug:
            self.debug = True

    def set_name(self, name: str) -> None:
        """Rename the span (e.g. to a route template once routing has happened)."""
        self.name = name

    def set_remote_endpoint(
        self,
        service_name: str | None = None,
        ipv4: str | None = None,
        ipv6: str | None = None,
        port: int | None = None,
    ) -> None:
        """Record the peer of this span (the server a client called, the client of a server)."""
        self.remote_endpoint = Endpoint(service_name, ipv4, ipv6, port)

    # -- reading ----------------------------------------------------------------------------

    @property
    def context(self) -> TraceContext:
        """This span's identity, for propagation or for starting children elsewhere."""
        return TraceContext(
            self.trace_id,
            self.span_id,
            self.parent_id,
            self.sampled,
            self.debug,
            self.shared,
            self.extra,
        )

    @property
    def tracer(self) -> Tracer:
        """The tracer that made this span."""
        return self._tracer

    @property
    def timestamp(self) -> int:
        """Start time in epoch microseconds."""
        return (self.start_ns + self.epoch_offset_ns) // 1000

    @property
    def duration(self) -> int | None:
        """Duration in µs (at least 1); ``None`` while unfinished, or if unsampled (not timed)."""
        if not self.end_ns or not self.sampled:
            return None
        return max(1, -((self.start_ns - self.end_ns) // 1000))

    @property
    def finished(self) -> bool:
        """True once :meth:`finish` has run."""
        return bool(self.end_ns)

    @property
    def annotations(self) -> list[Note]:
        """The notes, oldest first, with epoch-microsecond timestamps."""
        if not self.sampled:
            return []
        offset = self.epoch_offset_ns
        return [
            Note((mono + offset) // 1000, value, duration)
            for mono, value, duration in self.notes_raw
        ]

    @property
    def service_name(self) -> str | None:
        """The local service name the span is reported under."""
        return self.local_endpoint.service_name if self.local_endpoint else None

    def __repr__(self) -> str:
        return (
            f"<Span {self.name!r} trace={self.trace_id:x} id={self.span_id:016x} "
            f"sampled={self.sampled}>"
        )

    # -- decorator --------------------------------------------------------------------------

    def __call__(self, func: F) -> F:
        """Use ``tracer.span(...)`` as a decorator: each call runs in a new span like this one.

        The span made by ``tracer.span(...)`` itself only serves as a template: it is never
        entered or reported, and a new trace it admitted is given back to the sampler.
        On the default tracer (``tomograph.span(...)``) each call uses the tracer configured
        at that moment, with its service name, so decorating at import before
        ``tomograph.configure()`` works.

        Works on plain functions, ``async def`` functions and generators (the span covers the
        whole iteration).
        """
        tracer = self._tracer
        name, kind, tags = self.name, self.kind, dict(self.tags) or None
        remote = self.remote_endpoint
        # The tracer's own endpoint is not pinned: each span takes its tracer's (see below).
        local = None if self.local_endpoint is tracer.local_endpoint else self.local_endpoint
        if self.sampled and self.parent_id is None and not self.shared:
            undo_root_sample(tracer._sampler)  # the template started no trace
        lookup = tracer._default_lookup

        if lookup is None:

            def new_span() -> Span:
                return make_span(tracer, name, kind, tags, CURRENT, local, remote)

        else:

            def new_span() -> Span:
                return make_span(lookup(), name, kind, tags, CURRENT, local, remote)

        return wrap_in_span(func, new_span)


def make_span(
    tracer: Tracer,
    name: str,
    kind: SpanKind | str | None = None,
    tags: Mapping[str, TagValue] | None = None,
    parent: Span | TraceContext | None = CURRENT,
    local_endpoint: Endpoint | None = None,
    remote_endpoint: Endpoint | None = None,
) -> Span:
    """Start a span of ``tracer``: what ``Span(tracer, ...)`` and ``tracer.span(...)`` do.

    ``parent`` is the span or remote context to continue (``None``: a new trace); by default
    the span current in this thread, task or greenlet.

    >>> import tomograph
    >>> make_span(tomograph.Tracer('svc'), 'op').finish()
    """
    # A function filling a bare object rather than Span.__init__: calling a class runs
    # __init__ through C (type.__call__), calling a function stays in the interpreter, about
    # 1,000 instructions less per span. The span starts here, not in __enter__ (the same moment
    # for ``with`` blocks), and everything is written out: this runs once per span.
    span = _new_object(Span)
    span._tracer = tracer
    span.name = name
    span.kind = kind if kind is None or kind.__class__ is SpanKind else coerce_kind(kind)
    span.local_endpoint = local_endpoint or tracer.local_endpoint
    span.remote_endpoint = remote_endpoint
    span.end_ns = 0
    span.error = span._classic = False
    span._token = None
    start = _monotonic_ns()
    if parent is CURRENT:
        parent = _get_current()
    if parent is None:
        trace_id = _getrandbits(tracer.trace_id_bits) or new_trace_id(tracer.trace_id_bits)
        span.trace_id = trace_id
        span.parent_id = None
        # The low half of a fresh random trace id is itself random: one draw, not two.
        span.span_id = trace_id & 0xFFFFFFFFFFFFFFFF or new_span_id()
        sampled = tracer.root_decision
        if sampled is None:
            sampled = tracer._sampler(trace_id, None)
        span.sampled = sampled
        span.debug = span.shared = False
        span.extra = _get_root_extra()
        anchor = _anchor  # a new trace re-reads the wall clock when that is due
        span.epoch_offset_ns = (
            anchor.offset_ns if start < anchor.next_check_ns else anchor.offset_at(start)
        )
    elif parent.__class__ is Span:
        local = parent
        span.trace_id = local.trace_id
        span.parent_id = local.span_id
        span.span_id = _getrandbits(64) or new_span_id()
        sampled = span.sampled = local.sampled
        span.debug = local.debug
        span.shared = False
        span.extra = local.extra
        span.epoch_offset_ns = local.epoch_offset_ns
    else:
        remote = cast(TraceContext, parent)
        anchor = _anchor
        span.epoch_offset_ns = (
            anchor.offset_ns if start < anchor.next_check_ns else anchor.offset_at(start)
        )
        span.trace_id = remote.trace_id
        debug = span.debug = remote.debug
        span.extra = remote.extra
        if debug:
            sampled = True
        elif remote.sampled is not None and tracer.root_follows_parent:
            sampled = remote.sampled  # what a parent-based sampler would answer, without a call
        else:
            sampled = tracer._sampler(remote.trace_id, remote)
        span.sampled = sampled
        if tracer.join_shared_spans and span.kind is SpanKind.SERVER:
            # Zipkin's classic RPC model: the server reports under the client's span id.
            span.span_id = remote.span_id
            span.parent_id = remote.parent_id
            span.shared = True
        else:
            span.span_id = _getrandbits(64) or new_span_id()
            span.parent_id = remote.span_id
            span.shared = False
    if sampled:
        span.tags = {**tags} if tags else {}
        span.notes_raw = []
    else:
        # Unsampled spans record nothing (tag() and annotate() check ``sampled``); tags given
        # here stay readable, so a decorator template can pass them to its spans. The start
        # time is kept in case the decision is overridden (see set_sampling).
        span.tags = MappingProxyType(tags) if tags else _NO_TAGS  # type: ignore[assignment]
    span.start_ns = start
    return span


#: ``Tracer.span``: :func:`make_span` as a method (the tracer is ``self``).
span_method: Any = make_span

#: The Python versions, also when the compiled ones are in use (tests compare the two).
PYTHON_HOT_PATH: Mapping[str, Callable[..., Any]] = MappingProxyType(
    {
        "make_span": make_span,
        "enter": Span.__enter__,
        "exit": Span.__exit__,
        "finish": Span.finish,
        "tag": Span.tag,
        "annotate": Span.annotate,
    }
)


def _install_compiled(span_type: type[Span]) -> bool:
    """Install the compiled hot path; False (pure Python stays) where it cannot be set up.

    The extension is set up once per process: a second setup (this module reloaded or imported
    again, or tomograph imported in a subinterpreter) is refused and runs pure Python.
    """
    global make_span, span_method
    if speedups is None:
        return False
    try:
        compiled = speedups.setup(
            span_type,
            {
                **PYTHON_HOT_PATH,
                "CURRENT_SPAN": CURRENT_SPAN,
                "ROOT_EXTRA": ROOT_EXTRA,
                "CURRENT": CURRENT,
                "SpanKind": SpanKind,
                "SERVER": SpanKind.SERVER,
                "monotonic_ns": _monotonic_ns,
                "getrandbits": _getrandbits,
                "new_trace_id": new_trace_id,
                "new_span_id": new_span_id,
                "anchor": _anchor,
                "no_tags": _NO_TAGS,
            },
        )
    except Exception:  # never let the optional extension break `import tomograph`
        return False
    (
        make_span,
        span_method,
        span_type.__enter__,  # type: ignore[method-assign]
        span_type.__exit__,  # type: ignore[method-assign]
        span_type.finish,  # type: ignore[method-assign]
        span_type.tag,  # type: ignore[method-assign]
        span_type.annotate,  # type: ignore[method-assign]
    ) = compiled
    return True


#: True when the compiled hot path runs (:mod:`tomograph._speedups`): :func:`make_span`,
#: ``Tracer.span``, ``Span.__enter__``, ``Span.__exit__`` and ``Span.finish`` in C, about half
#: the instructions of an unsampled span. False where tomograph runs in pure Python: no C
#: compiler at install, ``TOMOGRAPH_NO_EXTENSIONS=1``, or a second import of this module in the
#: process (a reload, a subinterpreter: the extension serves the first). The behaviour is the same:
#: the compiled functions hand every case they do not handle themselves to the Python ones.
ACCELERATED = _install_compiled(Span)


def wrap_in_span(func: F, new_span: Callable[[], Any]) -> F:
    """Wrap ``func`` so each call runs inside ``with new_span():``.

    Handles plain functions, coroutine functions, generators and async generators.
    """
    import inspect  # at decoration time only: keeps `import tomograph` light

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with new_span():
                return await func(*args, **kwargs)

        return cast(F, async_wrapper)

    if inspect.isasyncgenfunction(func):

        @functools.wraps(func)
        async def async_gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            # The span is current only while the generator body runs, never in the consumer
            # between items: the consumer's own spans must not become its children.
            span = new_span().start()
            inner = func(*args, **kwargs)
            try:
                while True:
                    token = _set_current(span)
                    try:
                        item = await inner.__anext__()
                    except StopAsyncIteration:
                        break
                    finally:
                        _reset_current(token)
                    yield item
            except BaseException as exc:
                span.record_exception(exc)
                raise
            finally:
                await inner.aclose()
                span.finish()

        return cast(F, async_gen_wrapper)

    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            # Drive the generator step by step so the span is current only inside it.
            span = new_span().start()
            inner = func(*args, **kwargs)
            sent: Any = None
            thrown: BaseException | None = None
            try:
                while True:
                    token = _set_current(span)
                    try:
                        if thrown is not None:
                            exc, thrown = thrown, None
                            item = inner.throw(exc)
                        else:
                            item = inner.send(sent)
                    finally:
                        _reset_current(token)
                    try:
                        sent = yield item
                    except GeneratorExit:
                        inner.close()
                        raise
                    except BaseException as exc:
                        thrown = exc
            except StopIteration as stop:
                return stop.value
            except BaseException as exc:
                span.record_exception(exc)
                raise
            finally:
                span.finish()

        return cast(F, gen_wrapper)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with new_span():
            return func(*args, **kwargs)

    return cast(F, wrapper)
