"""The compiled W3C and B3 functions (``tomograph._speedups``) do what the Python ones do.

``w3c`` and ``b3`` replace ``inject``, ``extract``, ``extract_dict`` (and ``_context`` its
``new_context``) with compiled versions where the extension is built; each handles the common
cases itself and hands every other call to the Python function. Here both run on the same
input, valid, near misses and hostile, and must give the same context, write the same headers,
raise the same error and log the same lines. The caches the compiled ones read are filled by
the Python ones, so each input is read cold, by Python, then warm.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tests.support.trace_strategies import contexts, header_text, mutations

from tomograph.model import TraceContext
from tomograph.propagation import Propagator, _context, b3, baggage, carriers, composite, w3c
from tomograph.propagation.baggage import BaggageEntry

pytestmark = pytest.mark.compiled_only  # left out of the pure-Python run (tests/conftest.py)

MODULES = {"w3c": w3c, "b3": b3}
TRACESTATES = [
    (),
    (("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")),
    (("tomograph", "0000000000000001;1"), ("rojo", "1")),
    (("Bad Key", "1"),),
    [("rojo", "1")],
    "rojo=1,congo=2",
    (("rojo", "1"),) * 40,
    (("k", "v" * 200), ("rojo", "1"), ("x", "y" * 300)),
]
HOSTILE_IDS = [0, -1, 2**63, 2**64 - 1, 2**64, 2**128 - 1, 2**128, True, 1.0, "1", None]


def test_the_compiled_functions_are_in_place() -> None:
    assert _context.ACCELERATED
    for module in MODULES.values():
        for name, python in module.PYTHON_FUNCTIONS.items():
            compiled = getattr(module, name)
            assert compiled is not python
            assert compiled.__doc__ == python.__doc__
            assert compiled.__module__ == python.__module__
    assert _context.new_context is not _context.PYTHON_NEW_CONTEXT
    assert baggage.inject is not baggage.PYTHON_FUNCTIONS["inject"]
    assert baggage.extract_dict is not baggage.PYTHON_FUNCTIONS["extract_dict"]
    for module, name in [
        (carriers, "known_pairs"),
        (composite, "_extract_dict"),
        (composite, "_extract_pairs"),
    ]:
        compiled = getattr(module, name)
        assert compiled is not module.PYTHON_FUNCTIONS[name]
        assert compiled.__doc__ == module.PYTHON_FUNCTIONS[name].__doc__
    assert composite.known_pairs is carriers.known_pairs
    extract = composite.Propagator.extract
    assert extract is not composite.PYTHON_EXTRACT
    assert extract.__doc__ == composite.PYTHON_EXTRACT.__doc__


def _outcome(function: Callable[..., Any], *args: Any) -> tuple[Any, list[str]]:
    """What a call gives (its result or its error's type) and what it logs; a "do not sample"
    context's fresh random ids come from the same seed for both functions."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("tomograph.propagation")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    random.seed(14)
    try:
        result: Any = function(*args)
    except Exception as error:  # the same error from both is the same behaviour
        result = type(error)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    if isinstance(result, TraceContext):
        assert type(result) is TraceContext
        result = (result, repr(result), result.sampled, result.debug, result.shared, result.extra)
    return result, [record.getMessage() for record in records]


def _same(compiled: Callable[..., Any], python: Callable[..., Any], *args: Any) -> None:
    cold = _outcome(compiled, *args)
    expected = _outcome(python, *args)
    assert cold == expected
    assert _outcome(compiled, *args) == expected  # the caches warm now


# -- extraction ------------------------------------------------------------------------------


@st.composite
def traceparents(draw: st.DrawFn, span_hex: str) -> Any:
    trace = draw(st.sampled_from([0, 1, 2**64 - 1, 2**64, 2**127, 2**128 - 1]) | st.integers(0))
    version = draw(st.sampled_from(["00", "00", "00", "01", "ff", "0g", "AB"]))
    flags = draw(st.sampled_from(["01", "00", "03", "ff", "0F", "1"]))
    valid = f"{version}-{trace % 2**128:032x}-{span_hex}-{flags}"
    return draw(
        st.sampled_from([valid, valid, valid + "-x", f" {valid}", valid.upper()])
        | mutations(valid)
        | header_text
        | st.sampled_from([None, b"00-", 55, ["00"], "\ud800" * 55, "0" * 10_000])
    )


@st.composite
def tracestates(draw: st.DrawFn, span_hex: str, clean: bool = False) -> Any:
    own_span = draw(st.sampled_from([span_hex, span_hex, "0" * 16, span_hex.upper(), "1" * 15]))
    own = f"tomograph={own_span};{draw(st.sampled_from('10dx'))}"
    if draw(st.booleans()):
        own += ";" + draw(
            st.sampled_from(["0000000000000005", "0" * 16, "5", "0000000000000005;1"])
        )
    foreign = draw(
        st.sampled_from(
            [
                "",
                "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
                "rojo=1, tomograph=0000000000000001;1",
                "tomograph=0000000000000002;0",
                "Bad=1",
                ",,rojo=1,",
                "k=" + "v" * 250 + ",x=" + "y" * 250 + ",z=" + "w" * 600,
                ",".join(f"m{i}=1" for i in range(32)),
                "a=1\nb=2",
            ]
        )
    )
    valid = draw(st.sampled_from([own, f"{own},{foreign}", foreign, f" {own}"]))
    if clean:
        return valid
    return draw(
        st.just(valid)
        | mutations(valid)
        | header_text
        | st.sampled_from([None, b"rojo=1", ("rojo=1",), "\ud800", "r=" + "x" * 40_000])
    )


@st.composite
def w3c_headers(draw: st.DrawFn) -> dict[Any, Any]:
    span_hex = f"{draw(st.sampled_from([0, 1, 2**63, 2**64 - 1]) | st.integers(0, 2**64 - 1)):016x}"
    headers: dict[Any, Any] = {}
    clean = draw(st.booleans())  # half the carriers as a tracer sends them
    if draw(st.integers(0, 9)):
        trace = draw(st.integers(1, 2**128 - 1))
        valid = f"00-{trace:032x}-{span_hex}-{draw(st.sampled_from(['01', '00', '03']))}"
        headers["traceparent"] = valid if clean else draw(traceparents(span_hex))
    if draw(st.booleans()):
        headers["tracestate"] = draw(tracestates(span_hex, clean))
    return _spelled(draw, headers, clean)


def _spelled(draw: st.DrawFn, headers: dict[Any, Any], clean: bool = False) -> dict[Any, Any]:
    """``headers`` as a server may hand them over: names in other cases (unless ``clean``),
    other headers around, keys that are not text or not ASCII, or a WSGI environ."""
    if not clean and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(headers) or ["traceparent"]))
        if key in headers:
            headers[draw(st.sampled_from([key.upper(), key.title()]))] = headers.pop(key)
    if draw(st.booleans()):
        extra_key = draw(
            st.sampled_from(["accept", "Host", b"traceparent", "ﬀ", 5, "x-b3-sampled"])
        )
        headers[extra_key] = draw(st.sampled_from(["*/*", "1", "0000000000000001"]))
    if draw(st.booleans()):
        environ: dict[Any, Any] = {"REQUEST_METHOD": "GET", "wsgi.version": (1, 0)}
        for key, value in headers.items():
            if isinstance(key, str):
                environ["HTTP_" + key.upper().replace("-", "_")] = value
        return environ
    return headers


@st.composite
def b3_headers(draw: st.DrawFn) -> dict[Any, Any]:
    trace = draw(st.sampled_from([0, 1, 2**64 - 1, 2**64, 2**128 - 1]) | st.integers(1, 2**128 - 1))
    span = draw(st.sampled_from([0, 1, 2**63, 2**64 - 1]) | st.integers(1, 2**64 - 1))
    parent = draw(st.sampled_from([0, 5, 2**64 - 1]) | st.integers(1, 2**64 - 1))
    trace_hex = f"{trace:016x}" if trace < 2**64 and draw(st.booleans()) else f"{trace:032x}"
    valid: dict[str, str] = {}
    clean = draw(st.booleans())  # half the carriers as a tracer sends them
    if draw(st.integers(0, 3)) == 0:
        state = draw(st.sampled_from(["", "-1", "-0", "-d", "-x", "-1-", "-1-" + f"{parent:016x}"]))
        valid["b3"] = draw(st.sampled_from([f"{trace_hex}-{span:016x}{state}", "0", "1", "d"]))
    for name, value in [
        ("x-b3-traceid", trace_hex),
        ("x-b3-spanid", f"{span:016x}"),
        ("x-b3-parentspanid", f"{parent:016x}"),
        ("x-b3-sampled", draw(st.sampled_from(["1", "0", "true", "false", "True", "d", "1,0"]))),
        ("x-b3-flags", draw(st.sampled_from(["1", "0", "2", ""]))),
    ]:
        if draw(st.integers(0, 2)) or (clean and name in ("x-b3-traceid", "x-b3-spanid")):
            valid[name] = value
    headers: dict[Any, Any] = {}
    for name, value in valid.items():
        headers[name] = (
            value
            if clean
            else draw(
                st.just(value)
                | st.just(value)
                | mutations(value)
                | header_text
                | st.sampled_from([None, value.encode(), [value], "\ud800", value * 40])
            )
        )
    return _spelled(draw, headers, clean)


@settings(max_examples=200)
@given(st.sampled_from(sorted(MODULES)), st.data())
@example("w3c", None).via("a warm cache behind our own member")
def test_extract_gives_what_python_gives(name: str, data: st.DataObject | None) -> None:
    module = MODULES[name]
    if data is None:  # the explicit example: what one tomograph sends another
        headers: dict[Any, Any] = {}
        w3c.inject(TraceContext(1, 2, 3, True, extra={"tracestate": (("rojo", "1"),)}), headers)
    else:
        headers = data.draw(w3c_headers() if name == "w3c" else b3_headers())
    _same(module.extract, _in_python(lambda: module.PYTHON_FUNCTIONS["extract"]), headers)


@given(st.integers(2**64, 2**128 - 1) | st.sampled_from([2**64, 2**90 - 1, 2**90, 2**120]))
def test_trace_ids_of_every_width_read_as_python_reads_them(trace_id: int) -> None:
    # Ids of 65 to 128 bits are made digit by digit where Python's ints have 30-bit digits.
    headers = {"traceparent": f"00-{trace_id:032x}-00f067aa0ba902b7-01"}
    context = w3c.extract(headers)
    assert context is not None
    assert context.trace_id == trace_id
    assert context.trace_id.bit_length() == trace_id.bit_length()
    assert hash(context.trace_id) == hash(trace_id)
    assert context.trace_id.to_bytes(16, "big") == trace_id.to_bytes(16, "big")
    _same(w3c.extract, w3c.PYTHON_FUNCTIONS["extract"], headers)


@settings(max_examples=200)
@given(st.sampled_from(sorted(MODULES)), st.data(), st.booleans(), st.sampled_from([None, 0, 1]))
def test_extract_dict_gives_what_python_gives(
    name: str, data: st.DataObject, environ: bool, exact: Any
) -> None:
    module = MODULES[name]
    headers = data.draw(w3c_headers() if name == "w3c" else b3_headers())
    args = (headers, environ) if exact is None else (headers, environ, bool(exact))
    _same(module.extract_dict, module.PYTHON_FUNCTIONS["extract_dict"], *args)


@given(st.data())
def test_the_default_propagator_reads_what_the_python_functions_read(data: st.DataObject) -> None:
    headers = {**data.draw(w3c_headers()), **data.draw(b3_headers())}
    _same(Propagator().extract, _in_python(lambda: Propagator().extract), headers)


@contextlib.contextmanager
def _python_functions() -> Iterator[None]:
    """The Python versions in place of the compiled ones, for propagators made meanwhile."""
    modules = [*MODULES.values(), baggage, carriers, composite]
    saved = {(m, n): getattr(m, n) for m in modules for n in m.PYTHON_FUNCTIONS}
    saved[composite, "known_pairs"] = composite.known_pairs
    plans = composite._DICT_EXTRACTORS.copy(), composite._EXTRACTORS.copy()
    extract = composite.Propagator.extract
    try:
        composite.Propagator.extract = composite.PYTHON_EXTRACT  # type: ignore[method-assign]
        for module, name in saved:
            python = carriers if name == "known_pairs" else module
            setattr(module, name, python.PYTHON_FUNCTIONS[name])
        for key, module in [("w3c", w3c), ("b3", b3), ("b3single", b3)]:
            composite._DICT_EXTRACTORS[key] = module.PYTHON_FUNCTIONS["extract_dict"]
            composite._EXTRACTORS[key] = module.PYTHON_FUNCTIONS["extract"]
        yield
    finally:
        composite.Propagator.extract = extract  # type: ignore[method-assign]
        for (module, name), function in saved.items():
            setattr(module, name, function)
        composite._DICT_EXTRACTORS.update(plans[0])
        composite._EXTRACTORS.update(plans[1])


def _in_python(make: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        with _python_functions():
            return make()(*args)

    return run


# -- the composite propagator's reader of dicts, environs and ASGI pairs ---------------------

PAIR_NAMES = [
    "traceparent", "Traceparent", "TRACEPARENT", "tracestate", "b3", "B3", "x-b3-traceid",
    "X-B3-SpanId", "baggage", "uber-trace-id", "uberctx-k", "jaeger-baggage", "accept", "host",
    "tràceparent", "traceparenT\u0130", "\ud800", "",
]  # fmt: skip


@st.composite
def header_pairs(draw: st.DrawFn) -> Any:
    """ASGI-style ``(name, value)`` pairs, now and then with a pair no server sends."""
    pairs: list[Any] = []
    for _ in range(draw(st.integers(0, 8))):
        name: Any = draw(st.sampled_from(PAIR_NAMES) | st.text(max_size=14))
        value: Any = draw(
            st.sampled_from(["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "k=v"])
            | header_text
        )
        kind = draw(st.integers(0, 12))
        if kind < 6:  # what servers send: bytes, latin-1
            name = name.encode("latin-1", "replace")
            value = value.encode("latin-1", "replace")
        elif kind == 6:
            name = bytearray(name.encode("utf-8", "replace"))
        elif kind == 7:
            value = draw(st.sampled_from([None, 5, bytearray(b"x"), memoryview(b"y")]))
        elif kind == 8:
            name = draw(st.sampled_from([None, 7, b"\xe9", type("S", (str,), {})("b3")]))
        item: Any = (name, value)
        shape = draw(st.integers(0, 12))
        if shape == 0:
            item = [name, value]
        elif shape == 1:
            item = (name, value, "x")
        elif shape == 2:
            item = draw(st.sampled_from([None, "ab", (name,), type("T", (tuple,), {})(item)]))
        pairs.append(item)
    return tuple(pairs) if draw(st.booleans()) else pairs


@settings(max_examples=300)
@given(header_pairs())
def test_known_pairs_gives_what_python_gives(pairs: Any) -> None:
    names = composite._ALL_NAMES
    _same(carriers.known_pairs, carriers.PYTHON_FUNCTIONS["known_pairs"], pairs, names)


@settings(max_examples=300)
@given(header_pairs(), st.sampled_from(["default", "w3c", "jaeger,baggage"]))
def test_the_pairs_reader_gives_what_python_gives(pairs: Any, formats: str) -> None:
    state = Propagator(formats)._dict_state
    python = composite.PYTHON_FUNCTIONS["_extract_pairs"]
    _same(composite._extract_pairs, python, state, pairs)
    _same(Propagator(formats).extract, _in_python(lambda: Propagator(formats).extract), pairs)


def test_the_pairs_reader_takes_odd_calls_as_python_does() -> None:
    python = composite.PYTHON_FUNCTIONS["_extract_pairs"]
    state = Propagator()._dict_state
    pairs = [(b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    for args in [
        (state[:-1], pairs),  # a state that is not a propagator's
        (list(state), pairs),
        ((*state[:4], carriers.NameSet(["x"]), *state[5:]), pairs),  # other names read
        ((*state[:4], None, *state[5:]), pairs),  # no NameSet at all
        (state, "traceparent"),  # not pairs
        (state,),
    ]:
        _same(composite._extract_pairs, python, *args)


def _unusual_name_sets() -> list[Any]:
    class Loud(str):
        """A name whose comparisons raise once the set holding it is made."""

        armed = False

        def __eq__(self, other: object) -> bool:
            if Loud.armed:
                raise ValueError("compared")
            return str.__eq__(self, other)

        def __hash__(self) -> int:
            return hash("b3")

    loud = carriers.NameSet(["b3", Loud("zz")])
    Loud.armed = True
    return [
        carriers.NameSet(["b3", b"b3"]),  # not only str: the set decides
        loud,  # a str subclass, hashed as b3, whose __eq__ raises
        carriers.NameSet(["b3", "tràceparent", "\u0130b"]),  # names no ASCII header lowers to
        carriers.NameSet(["b3", *(f"x-{n:03d}" for n in range(40))]),  # more than are tabled
        carriers.NameSet(["b3", "x" * 63, "y" * 64]),
    ]


@pytest.mark.parametrize("names", _unusual_name_sets(), ids=range(5))
def test_known_pairs_reads_unusual_name_sets_as_python_does(names: Any) -> None:
    python = carriers.PYTHON_FUNCTIONS["known_pairs"]
    pairs = [
        (b"B3", b"1"),
        ("b3", "2"),
        (b"x-007", b"3"),
        (b"X" * 63, b"4"),
        (b"y" * 64, b"5"),
        (b"TR\xc0CEPARENT", b"6"),
        (b"traceparent", b"7"),
    ]
    _same(carriers.known_pairs, python, pairs, names)
    _same(carriers.known_pairs, python, pairs[:1], names)


def test_a_propagator_with_a_hostile_state_or_key_logs_as_python_does() -> None:
    # What raises while a dict or pairs are read becomes "no context", logged the same way.
    class Collides:
        def __hash__(self) -> int:
            return hash("traceparent")

        def __eq__(self, other: object) -> bool:
            raise ValueError("compared")

    class Odd(Propagator):
        __slots__ = ()

        @property
        def _dict_state(self) -> Any:
            raise LookupError("no state")

        @_dict_state.setter
        def _dict_state(self, value: Any) -> None:
            pass  # the state Propagator.__init__ makes is never kept

    headers = {Collides(): "x", "b3": "0000000000000001-0000000000000002-1"}
    pairs = [(b"b3", b"0000000000000001-0000000000000002-1")]
    for carrier in (headers, pairs, None, [("b3", None)], {"B3": "1-2"}):
        for make in (Propagator, Odd):
            _same(make().extract, _in_python(lambda make=make: make().extract), carrier)
    propagator = Propagator()
    assert propagator.extract(carrier=pairs) == composite.PYTHON_EXTRACT(propagator, pairs)
    with pytest.raises(TypeError):
        propagator.extract(pairs, pairs)
    with pytest.raises(TypeError):
        composite.Propagator.extract(None, pairs)  # type: ignore[arg-type]


def test_known_pairs_takes_other_name_sets_and_keywords_as_python_does() -> None:
    python = carriers.PYTHON_FUNCTIONS["known_pairs"]
    pairs = [(b"Traceparent", b"x"), ("b3", "y"), (b"b3", b"z")]

    class Names:  # fmt: skip
        names = frozenset(["b3"])
        lengths = frozenset([2])

    for names in [carriers.NameSet(["b3", "x" * 70]), carriers.NameSet([]), Names()]:
        _same(carriers.known_pairs, python, pairs, names)
    assert carriers.known_pairs(pairs=pairs, names=carriers.NameSet(["b3"])) == {"b3": ["y", "z"]}


def test_a_name_set_given_other_names_is_read_with_its_new_names() -> None:
    # The compiled reader remembers what it learnt of the last name sets: a NameSet whose
    # attributes are replaced must not be read with the old ones.
    python = carriers.PYTHON_FUNCTIONS["known_pairs"]
    pairs = [(b"Traceparent", b"x"), ("b3", "y"), (b"user-agent", b"z")]
    names = carriers.NameSet(["b3"])
    assert carriers.known_pairs(pairs, names) == {"b3": "y"}
    names.names, names.lengths = frozenset(["traceparent"]), frozenset([11])
    assert carriers.known_pairs(pairs, names) == {"traceparent": "x"}
    names.names, names.lengths = frozenset(["user-agent"]), frozenset([10])
    _same(carriers.known_pairs, python, pairs, names)


def test_propagators_of_many_format_sets_in_turn_read_as_python_does() -> None:
    # More name sets than the compiled reader remembers, read in turn, each several times.
    headers = {
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "b3": "0000000000000001-0000000000000002-1",
        "uber-trace-id": "0000000000000003:0000000000000004:0:1",
        "baggage": "k=v",
        "x-trace-info": "x",
    }
    pairs = [(name.encode(), value.encode()) for name, value in headers.items()]
    formats = ["default", "w3c", "b3", "jaeger", "b3,baggage", "jaeger,w3c", "xtraceinfo"]
    propagators = [Propagator(each) for each in formats]
    in_python = [_in_python(lambda each=each: Propagator(each).extract) for each in formats]
    for _ in range(3):
        for propagator, python in zip(propagators, in_python, strict=True):
            for carrier in (headers, pairs, dict(reversed(headers.items()))):
                _same(propagator.extract, python, carrier)


@st.composite
def composite_carriers(draw: st.DrawFn) -> dict[Any, Any]:
    headers = {**draw(w3c_headers()), **draw(b3_headers())}
    for name, value in [
        ("baggage", draw(st.sampled_from(["k=v", "a=1,b=2;p", "", "=", "k=v" * 2000]))),
        ("uber-trace-id", draw(st.sampled_from(["1:2:0:1", "x", "0000000000000001:2:0:1"]))),
        ("uberctx-k", "v"),
        ("jaeger-baggage", draw(st.sampled_from(["k=v", "a=1, b=2", "x"]))),
        ("x-trace-info", draw(st.sampled_from(["1:2:3", "x"]))),
    ]:
        if draw(st.integers(0, 2)) == 0:
            if "REQUEST_METHOD" in headers:
                headers["HTTP_" + name.upper().replace("-", "_")] = value
            else:
                headers[name] = value
    return headers


@settings(max_examples=300)
@given(composite_carriers(), st.sampled_from(["default", "w3c", "b3,baggage", "jaeger,w3c"]))
def test_the_composite_dict_reader_gives_what_python_gives(headers: Any, formats: str) -> None:
    propagator = Propagator(formats)
    state = propagator._dict_state
    python = composite.PYTHON_FUNCTIONS["_extract_dict"]
    _same(composite._extract_dict, python, state, headers, False, None)
    _same(propagator.extract, _in_python(lambda: Propagator(formats).extract), headers)


@settings(max_examples=300)
@given(header_pairs(), st.sampled_from(["default", "w3c", "jaeger,baggage"]))
def test_the_composite_reads_header_pairs_as_python_does(pairs: Any, formats: str) -> None:
    _same(Propagator(formats).extract, _in_python(lambda: Propagator(formats).extract), pairs)
    known = carriers.PYTHON_FUNCTIONS["known_pairs"](pairs, composite._ALL_NAMES)
    state = Propagator(formats)._dict_state
    python = composite.PYTHON_FUNCTIONS["_extract_dict"]
    _same(composite._extract_dict, python, state, known, True, pairs)


def test_the_composite_dict_reader_takes_odd_calls_as_python_does() -> None:
    python = composite.PYTHON_FUNCTIONS["_extract_dict"]
    state = Propagator()._dict_state
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    for args in [
        (state, headers, 1, None),  # known as an int
        (state[:-1], headers, False, None),  # a state that is not a propagator's
        (list(state), headers, False, None),
        ((["plan"], *state[1:]), headers, False, None),
        (state, headers, False),
    ]:
        _same(composite._extract_dict, python, *args)


def test_a_long_hostile_header_is_read_as_python_reads_it() -> None:
    for name, value in [
        ("traceparent", "00-" + "a" * 10_000_000),
        ("tracestate", "rojo=" + "\ud800" * 1000),
        ("b3", "0" * 10_000_000),
        ("x-b3-traceid", "a" * 10_000_000),
    ]:
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        headers = {"traceparent": traceparent, name: value}
        for module in MODULES.values():
            python = module.PYTHON_FUNCTIONS["extract"]
            _same(module.extract, _in_python(lambda python=python: python), headers)


# -- injection -------------------------------------------------------------------------------


@st.composite
def injected_contexts(draw: st.DrawFn) -> Any:
    context = draw(contexts())
    extra = draw(
        st.sampled_from([None, {}, {"baggage": ()}, {"tracestate": None}])
        | st.builds(lambda state: {"tracestate": state}, st.sampled_from(TRACESTATES))
    )
    context = context.replace(extra=extra)
    if draw(st.integers(0, 3)):
        return context
    # Anything with a context's fields, hostile values included.
    fields = {name: getattr(context, name) for name in TraceContext.__slots__}
    name = draw(st.sampled_from(["trace_id", "span_id", "parent_id", "sampled", "debug", "extra"]))
    fields[name] = draw(st.sampled_from([*HOSTILE_IDS, 0.0, "x", {"tracestate": [("a", "b")]}]))
    if draw(st.booleans()):
        del fields[draw(st.sampled_from(sorted(fields)))]
    return SimpleNamespace(**fields)


@given(st.sampled_from(sorted(MODULES)), injected_contexts(), st.data())
def test_inject_writes_what_python_writes(name: str, context: Any, data: st.DataObject) -> None:
    module = MODULES[name]
    before = data.draw(
        st.sampled_from(
            [
                {},
                {"x-b3-sampled": "1", "x-b3-flags": "1", "x-b3-parentspanid": "1"},
                {"tracestate": "old", "accept": "*/*"},
            ]
        )
    )
    carriers = {}
    for side, function in [
        ("compiled", module.inject),
        ("python", module.PYTHON_FUNCTIONS["inject"]),
    ]:
        carrier = dict(before)
        w3c._FOREIGN.clear()  # a cached list is not checked again: both sides start cold
        carriers[side] = (_outcome(function, context, carrier), carrier)
    assert carriers["compiled"] == carriers["python"]
    (result, _), written = carriers["compiled"]
    if result is None and isinstance(context, TraceContext):  # what was written reads back
        extracted = module.PYTHON_FUNCTIONS["extract"](written)
        assert extracted is not None and extracted.span_id == context.span_id


@pytest.mark.parametrize("name", sorted(MODULES))
def test_other_carriers_and_keywords_go_to_the_python_functions(name: str) -> None:
    module = MODULES[name]
    context = TraceContext(2**128 - 1, 2**64 - 1, 2**63, sampled=False)
    headers: list[tuple[str, str]] = []
    module.inject(context, headers)
    assert module.extract(headers) == module.PYTHON_FUNCTIONS["extract"](headers) == context
    assert module.extract(carrier=dict(headers)) == context
    with pytest.raises(TypeError):
        module.extract()
    with pytest.raises(TypeError):
        module.inject(context)


@given(
    st.tuples(
        st.sampled_from([1, 2**128 - 1]),
        st.sampled_from([1, 2**64 - 1]),
        st.sampled_from([None, 5]),
        st.sampled_from([None, True, False]),
        st.sampled_from([False, True, 0, 1]),
        st.sampled_from([None, {"tracestate": ()}]),
        st.sampled_from([False, True]),
    ),
    st.integers(2, 7),
)
def test_new_context_gives_what_python_gives(args: tuple[Any, ...], count: int) -> None:
    compiled = _context.new_context(*args[:count])
    python = _context.PYTHON_NEW_CONTEXT(*args[:count])
    assert type(compiled) is TraceContext
    for field in TraceContext.__slots__:
        assert getattr(compiled, field) is getattr(python, field)


def test_new_context_takes_keywords_as_python_does() -> None:
    assert _context.new_context(1, 2, debug=True) == _context.PYTHON_NEW_CONTEXT(1, 2, debug=True)
    with pytest.raises(TypeError):
        _context.new_context(1)


BAGGAGES = [
    (),
    (BaggageEntry("user", "alice smith"), BaggageEntry("n", "1", "p")),
    [BaggageEntry("user", "alice")],
    (BaggageEntry("bad key", "1"),),
    None,
    "user=alice",
]


@st.composite
def baggage_headers(draw: st.DrawFn) -> dict[Any, Any]:
    headers: dict[Any, Any] = {}
    if draw(st.integers(0, 5)):
        valid = draw(st.sampled_from(["user=alice,n=1;p", "", "a=" + "b" * 70_000, "x=%zz"]))
        headers["baggage"] = draw(
            st.just(valid) | mutations(valid) | header_text | st.sampled_from([None, b"a=1"])
        )
    return _spelled(draw, headers)


@given(baggage_headers(), st.booleans(), st.sampled_from([None, False, True]))
def test_baggage_extract_dict_gives_what_python_gives(
    headers: dict[Any, Any], environ: bool, exact: bool | None
) -> None:
    args = (headers, environ) if exact is None else (headers, environ, exact)
    _same(baggage.extract_dict, baggage.PYTHON_FUNCTIONS["extract_dict"], *args)
    _same(baggage.extract, _in_python(lambda: baggage.extract), headers)


@given(st.sampled_from(BAGGAGES), st.sampled_from([None, {}, {"tracestate": ()}]), st.data())
def test_baggage_inject_writes_what_python_writes(
    entries: Any, extra: dict[str, Any] | None, data: st.DataObject
) -> None:
    if entries is not None or extra is not None:
        extra = {**(extra or {}), "baggage": entries}
    context: Any = TraceContext(1, 2, extra=extra)
    if data.draw(st.booleans()):
        context = SimpleNamespace(extra=extra if data.draw(st.booleans()) else "x")
    before = data.draw(st.sampled_from([{}, {"baggage": "old=1"}]))
    written = []
    for function in (baggage.inject, baggage.PYTHON_FUNCTIONS["inject"]):
        carrier = dict(before)
        baggage._FORMATTED.clear()  # a cached text is not checked again: both sides start cold
        written.append((_outcome(function, context, carrier), carrier))
    assert written[0] == written[1]
