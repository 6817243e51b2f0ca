"""What injection reads from: a :class:`~tomograph.model.TraceContext` or a live span."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from tomograph._accelerator import speedups
from tomograph.model import TraceContext

__all__ = ["ACCELERATED", "ContextLike", "install_compiled", "new_context", "set_fresh_extra"]


class ContextLike(Protocol):
    """Anything with a trace context's fields: ``TraceContext`` and ``Span`` both qualify.

    Injecting straight from a span saves building a ``TraceContext`` per request.
    """

    @property
    def trace_id(self) -> int: ...

    @property
    def span_id(self) -> int: ...

    @property
    def parent_id(self) -> int | None: ...

    @property
    def sampled(self) -> bool | None: ...

    @property
    def debug(self) -> bool: ...

    @property
    def extra(self) -> Mapping[str, Any] | None: ...


class _Building(TraceContext):
    """A TraceContext while new_context fills it in: the same slots, plain attribute stores.

    TraceContext forbids assignment; this subclass adds no slots and assigns with object's own
    ``__setattr__``, so the interpreter stores straight into the slots; the finished object
    then becomes a TraceContext (the same layout, so ``__class__`` can be assigned): about
    3,100 instructions per context, against 6,500 setting each slot through its descriptor.
    """

    __slots__ = ()
    __setattr__ = object.__setattr__  # type: ignore[assignment]


_new = object.__new__
_set_extra = vars(TraceContext)["extra"].__set__


def new_context(
    trace_id: int,
    span_id: int,
    parent_id: int | None = None,
    sampled: bool | None = None,
    debug: bool = False,
    extra: Mapping[str, Any] | None = None,
    shared: bool = False,
) -> TraceContext:
    """``TraceContext(trace_id, span_id, parent_id, sampled, debug, shared, extra)``, faster.

    Every extraction builds one; extraction has checked the ids already. A test checks that
    the two agree on every slot.

    >>> new_context(1, 2, sampled=True) == TraceContext(1, 2, sampled=True)
    True
    """
    context = _new(_Building)
    context.trace_id = trace_id
    context.span_id = span_id
    context.parent_id = parent_id
    context.sampled = True if debug else sampled
    context.debug = debug
    context.shared = shared
    context.extra = extra
    context.__class__ = TraceContext  # type: ignore[assignment]
    return context


def set_fresh_extra(context: TraceContext, extra: Mapping[str, Any] | None) -> TraceContext:
    """``context`` with its ``extra`` set to ``extra``, in place; returns ``context``.

    Only for a context that an extraction has just made and nobody else holds yet (contexts
    are immutable once handed out): the composite propagator adds the baggage it read this way,
    which costs a seventh of making the context again.
    """
    _set_extra(context, extra)
    return context


def install_compiled(format_name: str, python: dict[str, Any]) -> tuple[Any, ...] | None:
    """The compiled versions of a header format's functions (``tomograph._speedups``), or None
    where pure Python runs (no extension, ``TOMOGRAPH_NO_EXTENSIONS=1``, a second import).

    ``python`` holds the Python functions, which the compiled ones call for every case they do
    not handle themselves, and the caches they read.
    """
    if not ACCELERATED:
        return None
    try:
        return getattr(speedups, f"setup_{format_name}")(python)  # type: ignore[no-any-return]
    except Exception:  # never let the optional extension break `import tomograph`
        return None


def _install_new_context() -> bool:
    global new_context
    if speedups is None:
        return False
    try:
        new_context = speedups.setup_context(TraceContext, new_context)
    except Exception:  # never let the optional extension break `import tomograph`
        return False
    return True


#: The Python :func:`new_context`, also when the compiled one is in use (tests compare them).
PYTHON_NEW_CONTEXT = new_context
#: True when the header formats' hot paths are compiled (:mod:`tomograph._speedups`):
#: :func:`new_context` and, in :mod:`~tomograph.propagation.w3c` and
#: :mod:`~tomograph.propagation.b3`, ``inject``, ``extract`` and ``extract_dict``. Each hands every
#: case it does not handle itself (another carrier, a malformed or unusual header, a cold cache) to
#: the Python function, so the behaviour is the same.
ACCELERATED = _install_new_context()
