"""The compiled span hot path (tomograph._speedups) and its pure-Python fallback.

The compiled functions must behave exactly as the Python ones they shortcut: the tests here feed
both the same calls (the same random ids, thanks to a reseeded generator) and compare what comes
out, hostile values included. The whole suite also runs once with ``TOMOGRAPH_NO_EXTENSIONS=1``
(see the Makefile's ``test``), and under CI the first run must really be the compiled one.
"""

from __future__ import annotations

import contextvars
import importlib.util
import math
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tomograph
from tomograph import _accelerator
from tomograph.context import CURRENT_SPAN, ROOT_EXTRA
from tomograph.errors import TracingError
from tomograph.model import Endpoint, SpanKind, TraceContext
from tomograph.reporting.memory import MemoryBackend
from tomograph.sampling import always, never, probabilistic
from tomograph.span import CURRENT, PYTHON_HOT_PATH, Span, make_span

span_module = sys.modules["tomograph.span"]
ACCELERATED = span_module.ACCELERATED
SPEEDUPS_BUILT = importlib.util.find_spec("tomograph._speedups") is not None
compiled_only = pytest.mark.compiled_only  # left out of the pure-Python run (tests/conftest.py)


def _compiler_available() -> bool:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(compiler) is not None


def test_ci_runs_the_compiled_hot_path_where_a_compiler_exists() -> None:
    # Without this, a build that silently failed would run the suite twice in pure Python.
    disabled = os.environ.get(_accelerator.DISABLE_VARIABLE, "") not in ("", "0")
    built = importlib.util.find_spec("tomograph._speedups") is not None
    if os.environ.get("CI") == "true" and not disabled and _compiler_available():
        assert built, "tomograph._speedups was not built: `pip install -e .` needs the headers"
        assert ACCELERATED
    assert (built and not disabled) == ACCELERATED


SOURCE = Path(__file__).parents[1] / "src" / "tomograph" / "_speedups.c"


@pytest.mark.skipif(not SOURCE.exists() or not _compiler_available(), reason="needs the source")
def test_the_extension_uses_only_functions_the_python_headers_declare() -> None:
    # A function the headers no longer declare (Python 3.13 moved _PySet_NextEntry into its
    # internal headers) is an error for GCC 14 and clang: the optional build then fails
    # quietly and every compiled function is lost.
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    result = subprocess.run(
        [
            compiler,
            "-fsyntax-only",
            "-Werror=implicit-function-declaration",
            f"-I{sysconfig.get_paths()['include']}",
            str(SOURCE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _run(code: str, **environ: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != _accelerator.DISABLE_VARIABLE}
    env.update(environ)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


PROBE = (
    "import sys, tomograph; s = sys.modules['tomograph.span']; "
    "print(s.ACCELERATED, type(s.make_span).__name__, type(tomograph.Tracer.span).__name__)"
)


def test_the_environment_variable_forces_pure_python() -> None:
    assert _run(PROBE, TOMOGRAPH_NO_EXTENSIONS="1") == "False function function"


@compiled_only
def test_without_the_variable_the_compiled_functions_are_in_place() -> None:
    assert _run(PROBE) == "True builtin_function_or_method method_descriptor"
    assert _run(PROBE, TOMOGRAPH_NO_EXTENSIONS="0").startswith("True")


# -- the same behaviour ---------------------------------------------------------------------

HUGE = "x" * (10 * 1024 * 1024)
NAN = float("nan")  # one object: NaN equals itself only by identity
NAMES = ["op", "", HUGE, "\ud800 lone surrogate", None, 2**63, float("nan")]
KINDS = [None, SpanKind.SERVER, SpanKind.CLIENT, "server", "bogus", 5, float("nan")]
TAGS: list[Any] = [
    None,
    {},
    {"a": 1, "nan": float("nan"), "big": 2**63, "text": HUGE},
    {"\ud800": "\udfff"},
    [("a", 1)],
    "not a mapping",
    MappingProxyType({"a": 1}),
    0,
]


class _OddContext:
    """A parent that is neither a Span nor a TraceContext, with hostile field values."""

    trace_id = 2**130
    span_id = -1
    parent_id = float("nan")
    sampled = float("nan")
    debug = 0
    extra = "extra"


class _LoudSampler:
    def __call__(self, trace_id: int, parent: Any) -> Any:
        return trace_id % 2  # an int, not a bool: stored as given


def _tracers() -> dict[str, Any]:
    memory = MemoryBackend()
    shared = tomograph.Tracer("shared", [memory], join_shared_spans=True)

    class SubTracer(tomograph.Tracer):
        pass

    class NoAttributes:
        pass

    return {
        "always": tomograph.Tracer("svc", [memory], sampler=always()),
        "never": tomograph.Tracer("svc", [memory], sampler=never()),
        "half": tomograph.Tracer("svc", [memory], sampler=probabilistic(0.5)),
        "loud": tomograph.Tracer("svc", [memory], sampler=_LoudSampler()),  # type: ignore[arg-type]
        "64 bit": tomograph.Tracer("svc", [memory], trace_id_bits=64),
        "shared": shared,
        "subclass": SubTracer("sub", [memory]),
        "not a tracer": NoAttributes(),
    }


def _parents(tracer: tomograph.Tracer) -> dict[str, Any]:
    sampled = tomograph.Tracer("p", sampler=always()).start_span("parent", parent=None)
    unsampled = tomograph.Tracer("p", sampler=never()).start_span("parent", parent=None)
    half_made = object.__new__(Span)  # a Span with no fields set
    return {
        "current": CURRENT,
        "none": None,
        "sampled span": sampled,
        "unsampled span": unsampled,
        "half-made span": half_made,
        "context": TraceContext(2**127 + 5, 2**64 - 1, 7, True, False, False, {"k": "v"}),
        "unsampled context": TraceContext(1, 2, None, False),
        "undecided context": TraceContext(1, 2, None, None),
        "debug context": TraceContext(1, 2, None, False, True),
        "odd context": _OddContext(),
        "an int": 2**63,
    }


ENDPOINTS = [None, Endpoint("here", "127.0.0.1"), "", 0, float("nan")]
FIELDS = [
    "_classic",
    "_token",
    "debug",
    "end_ns",
    "error",
    "extra",
    "kind",
    "local_endpoint",
    "name",
    "parent_id",
    "remote_endpoint",
    "sampled",
    "shared",
    "span_id",
    "tags",
    "trace_id",
]


def _outcome(call: Callable[[], Any], seed: int) -> Any:
    """What a call gives, comparably: its fields or its exception, with the same random ids."""
    random.seed(seed)
    try:
        span = call()
    except Exception as error:
        return ("raised", type(error), str(error))
    fields = {}
    for name in FIELDS:
        try:
            value = getattr(span, name)
        except AttributeError as error:
            value = ("missing", str(error))
        if isinstance(value, float) and math.isnan(value):
            value = "NaN"
        if isinstance(value, MappingProxyType):
            try:
                value = ("read-only", dict(value))
            except AttributeError:  # a read-only view of a str: MappingProxyType takes one
                value = ("read-only", "not a mapping")
        fields[name] = value
    fields["times"] = [type(getattr(span, n, None)).__name__ for n in ("start_ns", "notes_raw")]
    fields["class"] = type(span)
    return fields


@compiled_only
@settings(max_examples=400, deadline=None)
@given(
    tracer_name=st.sampled_from(list(_tracers())),
    name=st.sampled_from(NAMES),
    kind=st.sampled_from(KINDS),
    tags=st.sampled_from(TAGS),
    parent_name=st.sampled_from(list(_parents(tomograph.Tracer("x")))),
    local=st.sampled_from(ENDPOINTS),
    remote=st.sampled_from(ENDPOINTS),
    keywords=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_compiled_make_span_gives_what_the_python_one_gives(
    tracer_name: str,
    name: Any,
    kind: Any,
    tags: Any,
    parent_name: str,
    local: Any,
    remote: Any,
    keywords: bool,
    seed: int,
) -> None:
    tracer = _tracers()[tracer_name]
    parent = _parents(tracer)[parent_name]
    python_make_span = PYTHON_HOT_PATH["make_span"]
    args = (tracer, name, kind, tags, parent, local, remote)
    if keywords:
        kw = {"kind": kind, "tags": tags, "parent": parent, "local_endpoint": local}
        kw["remote_endpoint"] = remote
        calls = [
            lambda f: f(tracer, name, **kw),
            lambda f: f(tracer, name=name, **kw),
        ]
    else:
        calls = [lambda f: f(*args)]
    with tomograph.Tracer("current").span("current"):
        for call in calls:
            expected = _outcome(lambda call=call: call(python_make_span), seed)
            assert _outcome(lambda call=call: call(make_span), seed) == expected
            if not isinstance(tracer, tomograph.Tracer):
                continue
            method_args = args[1:]
            expected = _outcome(lambda a=method_args: python_make_span(tracer, *a), seed)
            assert _outcome(lambda a=method_args: tracer.span(*a), seed) == expected


@compiled_only
@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),  # no name
        (("a", None, None, CURRENT, None, None, "extra"), {}),  # too many
        (("a",), {"nonsense": 1}),
        (("a",), {"name": "twice"}),
        ((), {"kind": "server"}),
    ],
)
def test_bad_calls_fail_as_the_python_function_fails(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    tracer = tomograph.Tracer("svc")
    with pytest.raises(TypeError) as python_error:
        PYTHON_HOT_PATH["make_span"](tracer, *args, **kwargs)
    with pytest.raises(TypeError) as compiled_error:
        make_span(tracer, *args, **kwargs)
    assert str(compiled_error.value) == str(python_error.value)
    with pytest.raises(TypeError) as method_error:
        tracer.span(*args, **kwargs)
    assert str(method_error.value) == str(python_error.value)


def _life(enter: Any, exit_: Any, finish: Any, tag: Any, annotate: Any, seed: int) -> list[Any]:
    """A span's life through the given functions, hostile steps included; what each step did."""
    random.seed(seed)
    memory = MemoryBackend()
    record: list[Any] = []

    def step(name: str, action: Callable[[], Any]) -> None:
        try:
            result = action()
            record.append((name, "ok", result is None or type(result).__name__))
        except BaseException as error:
            record.append((name, type(error), str(error)))

    for sampler in (always(), never()):
        tracer = tomograph.Tracer("svc", [memory], sampler=sampler)
        span = tracer.span("op", parent=None)
        step("enter", lambda span=span: enter(span))
        record.append(("current", CURRENT_SPAN.get() is span))
        step("tag", lambda span=span: tag(span, "k", NAN))
        step("tag huge", lambda span=span: tag(span, "\ud800", HUGE))
        step("tag unhashable", lambda span=span: tag(span, ["k"], 1))
        step("tag no value", lambda span=span: tag(span, "k"))
        step("annotate", lambda span=span: annotate(span, "note"))
        step("annotate duration", lambda span=span: annotate(span, "note", 2**63))
        step("annotate keyword", lambda span=span: annotate(span, "n", duration_us=1))
        step("annotate nothing", lambda span=span: annotate(span))
        error = ValueError("boom")
        step("exit", lambda span=span, error=error: exit_(span, ValueError, error, None))
        step("exit again", lambda span=span: exit_(span, None, None, None))
        step("exit short", lambda span=span: exit_(span, None))
        step("finish", lambda span=span: finish(span))
        record.append(("current after", CURRENT_SPAN.get()))
        record.append(("fields", span.tags, [n[1:] for n in getattr(span, "notes_raw", [])]))
        record.append(("error", span.error, span.end_ns == -1, span.duration is None))

        other = tracer.span("other", parent=None)
        contextvars.copy_context().run(enter, other)  # entered in another context
        step("exit elsewhere", lambda other=other: exit_(other, None, None, None))
        late = tracer.span("late", parent=None)
        step("finish at", lambda late=late: finish(late, 2**62 // 1000))
        step("finish at NaN", lambda t=tracer: finish(t.span("nan", parent=None), float("nan")))
        step("finish at 2**63", lambda t=tracer: finish(t.span("big", parent=None), 2**63))
        step(
            "finish keyword", lambda t=tracer: finish(t.span("kw", parent=None), timestamp_us=None)
        )
        step("finish too many", lambda t=tracer: finish(t.span("x", parent=None), None, None))
    record.append(("reported", [(s.name, s.tags, s.error) for s in memory.spans]))
    return record


@compiled_only
@pytest.mark.parametrize("seed", [0, 1, 2**31])
def test_compiled_span_methods_do_what_the_python_ones_do(seed: int) -> None:
    python = _life(
        PYTHON_HOT_PATH["enter"],
        PYTHON_HOT_PATH["exit"],
        PYTHON_HOT_PATH["finish"],
        PYTHON_HOT_PATH["tag"],
        PYTHON_HOT_PATH["annotate"],
        seed,
    )
    compiled = _life(Span.__enter__, Span.__exit__, Span.finish, Span.tag, Span.annotate, seed)
    assert compiled == python
    assert ("tag unhashable", TypeError, "unhashable type: 'list'") in compiled  # it ran


@compiled_only
def test_a_subclass_of_span_takes_the_python_methods() -> None:
    calls: list[str] = []

    class Recorded(Span):
        __slots__ = ()

        def record_exception(self, exc: BaseException) -> None:
            calls.append(type(exc).__name__)
            super().record_exception(exc)

    span = tomograph.Tracer("svc", sampler=always()).span("op", parent=None)
    span.__class__ = Recorded
    with pytest.raises(KeyError), span:
        raise KeyError("k")
    assert calls == ["KeyError"]
    assert span.error and span.finished


# -- threads, forks, contexts ---------------------------------------------------------------


def test_32_threads_at_once_each_see_their_own_spans() -> None:
    memory = MemoryBackend(max_spans=100_000)
    tracer = tomograph.Tracer("svc", [memory], sampler=always())
    barrier = threading.Barrier(32)
    failures: list[str] = []

    def work(index: int) -> None:
        barrier.wait()
        for _ in range(50):
            with tracer.span(f"outer {index}") as outer, tracer.span("inner") as inner:
                inner.tag("thread", index)
                if CURRENT_SPAN.get() is not inner or inner.parent_id != outer.span_id:
                    failures.append(f"thread {index}: wrong current span")
            if CURRENT_SPAN.get() is not None:
                failures.append(f"thread {index}: a span stayed current")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(memory.spans) == 32 * 50 * 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_makes_spans_with_ids_of_its_own() -> None:
    tracer = tomograph.Tracer("svc", sampler=always())
    read, write = os.pipe()
    with tracer.span("parent") as parent:
        pid = os.fork()
        if pid == 0:  # the child: reports through the pipe, never returns into pytest
            try:
                with tracer.span("child") as child:
                    ok = CURRENT_SPAN.get() is child and child.parent_id == parent.span_id
                line = f"{int(ok)} {child.span_id} {tracer.span('root', parent=None).trace_id}"
                os.write(write, line.encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            ok, child_span_id, child_trace_id = pipe.read().split()
        os.waitpid(pid, 0)
        mine = tracer.span("child")
    assert ok == "1"
    # CPython reseeds the generator in a forked child: parent and child draw different ids.
    assert int(child_span_id) != mine.span_id
    assert int(child_trace_id) != tracer.span("root", parent=None).trace_id


def test_root_extra_and_baggage_follow_the_context() -> None:
    tracer = tomograph.Tracer("svc", sampler=always())
    token = ROOT_EXTRA.set({"tenant": "a"})
    try:
        with tracer.span("root", parent=None) as root, tracer.span("child") as child:
            assert root.extra == {"tenant": "a"} and child.extra is root.extra
    finally:
        ROOT_EXTRA.reset(token)


def test_finishing_with_a_timestamp_still_checks_it() -> None:
    span = tomograph.Tracer("svc", sampler=always()).start_span("op")
    with pytest.raises(TracingError):
        span.finish(float("nan"))
    assert not span.finished


# -- importing again ------------------------------------------------------------------------

AGAIN = """
import importlib, sys
import tomograph
from tomograph.context import CURRENT_SPAN
first = sys.modules["tomograph.span"]
first_make_span = first.make_span
old = tomograph.Tracer("old", sampler=tomograph.sampling.always())
{again}
new = sys.modules["tomograph.span"]
fresh = sys.modules["tomograph"].Tracer("new", sampler=tomograph.sampling.always())
with old.span("a") as a, old.span("b") as b:
    assert CURRENT_SPAN.get() is b and b.parent_id == a.span_id
assert CURRENT_SPAN.get() is None
with fresh.span("c") as c:
    c.tag("k", 1)
assert c.finished and c.tags == {{"k": 1}}
print(new.ACCELERATED, type(first_make_span).__name__, type(new.make_span).__name__)
"""


@pytest.mark.parametrize(
    "again",
    [
        'importlib.reload(sys.modules["tomograph.span"])',
        "for name in [n for n in sys.modules if n.startswith('tomograph')"
        " and n != 'tomograph._speedups']: del sys.modules[name]\nimport tomograph",
        "for name in [n for n in sys.modules if n.startswith('tomograph')]:"
        " del sys.modules[name]\nimport tomograph",
    ],
    ids=["reload", "clear-but-extension", "clear-all"],
)
def test_importing_tomograph_again_runs_the_new_modules_in_pure_python(again: str) -> None:
    # The extension serves the Span class it was set up with; a second one runs Python.
    compiled = "builtin_function_or_method" if SPEEDUPS_BUILT else "function"
    assert _run(AGAIN.format(again=again)) == f"False {compiled} function"


SUBINTERPRETER = """
import sys, _testcapi
import tomograph
code = (
    "import sys, tomograph; span = sys.modules['tomograph.span']; "
    "tomograph.Tracer('s').span('x').finish(); print('sub', span.ACCELERATED, flush=True)"
)
print("rc", _testcapi.run_in_subinterp(code), flush=True)
with tomograph.Tracer("main").span("y"):
    pass
print("main ok", flush=True)
"""


@pytest.mark.skipif(importlib.util.find_spec("_testcapi") is None, reason="needs _testcapi")
def test_tomograph_imports_in_a_subinterpreter_too() -> None:
    # mod_wsgi's application groups: the extension is shared, its set-up belongs to the first.
    assert _run(SUBINTERPRETER).splitlines() == ["sub False", "rc 0", "main ok"]


# -- remote parents -------------------------------------------------------------------------


class _RemoteParent:
    span_id = 5
    parent_id = None
    sampled = None
    debug = False
    extra = None

    @property
    def trace_id(self) -> int:  # Python code: must not run with an error pending
        return 7


class _TracerWithoutSampler:
    """A duck-typed tracer: make_span reads these attributes (no ``_sampler``)."""

    local_endpoint = None
    trace_id_bits = 64
    root_decision = None
    root_follows_parent = True
    join_shared_spans = False

    def _report(self, span: Span) -> None:
        pass


def test_a_tracer_without_a_sampler_fails_with_the_attribute_error() -> None:
    with pytest.raises(AttributeError, match="_sampler"):
        make_span(_TracerWithoutSampler(), "op", parent=_RemoteParent())


REPLACED_DEBUG = """
import gc
from tomograph import Tracer
from tomograph.span import Span, make_span
class Flag:
    dead = False
    def __bool__(self):
        print("alive" if not self.dead else "freed")
        return False
    def __del__(self):
        self.dead = True
class Remote:
    trace_id = 0xABC; sampled = True; span_id = 5; parent_id = None
    @property
    def debug(self):
        return Flag()  # the new span's slot holds the only reference
    @property
    def extra(self):  # runs while make_span is half-way: drops the slot's reference
        for o in gc.get_objects():
            if type(o) is Span and getattr(o, "trace_id", None) == 0xABC:
                o.debug = False
make_span(Tracer("s"), "x", parent=Remote())
"""


def test_a_remote_parent_that_replaces_the_debug_flag_under_make_span() -> None:
    # The flag must stay alive until make_span has read it (was a use after free).
    assert _run(REPLACED_DEBUG) == "alive"


# -- keyword arguments ----------------------------------------------------------------------


def test_span_methods_take_their_arguments_by_keyword() -> None:
    span = tomograph.Tracer("svc", sampler=always()).span("op", parent=None)
    span.__enter__()
    span.tag(key="a", value=1)
    span.tag("b", value=2)
    span.annotate(value="note", duration_us=3)
    span.__exit__(exc_type=None, exc=None, tb=None)
    assert span.tags == {"a": 1, "b": 2} and span.finished
    assert [note[1:] for note in span.notes_raw] == [("note", 3)]
    assert CURRENT_SPAN.get() is None


KEYWORD_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("tag", (), {"key": "a", "value": 1}),
    ("tag", ("a",), {"value": 1}),
    ("tag", ("a",), {"key": "b"}),
    ("tag", ("a", 1), {"bogus": 1}),
    ("annotate", (), {"value": "v", "duration_us": 1}),
    ("annotate", ("v",), {"duration_us": 1}),
    ("annotate", (), {"duration_us": 1}),
    ("finish", (), {"timestamp_us": None}),
    ("finish", (None,), {"timestamp_us": None}),
    ("exit", (), {"exc_type": None, "exc": None, "tb": None}),
    ("exit", (None,), {"exc": None, "tb": None}),
    ("exit", (None, None, None), {"tb": None}),
    ("exit", (), {"exc_type": None}),
]


@compiled_only
@pytest.mark.parametrize(("method", "args", "kwargs"), KEYWORD_CALLS)
def test_compiled_span_methods_take_the_keywords_the_python_ones_take(
    method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    compiled = {"tag": Span.tag, "annotate": Span.annotate, "finish": Span.finish}
    compiled["exit"] = Span.__exit__
    outcomes = []
    for function in (compiled[method], PYTHON_HOT_PATH[method]):
        span = tomograph.Tracer("svc", sampler=always()).span("op", parent=None)
        try:
            function(span, *args, **kwargs)
            outcomes.append(("ok", span.tags, span.finished, len(span.notes_raw)))
        except TypeError as error:
            outcomes.append(("TypeError", str(error).split("() ")[-1]))
    assert outcomes[0] == outcomes[1]


@compiled_only
@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "op", "kind": None, "tags": {"a": 1}, "parent": None},
        {"name": "op", "local_endpoint": None, "remote_endpoint": None},
        {"tracer": "x", "name": "op"},
    ],
)
def test_compiled_make_span_takes_the_keywords_the_python_one_takes(
    kwargs: dict[str, Any],
) -> None:
    tracer = tomograph.Tracer("svc", sampler=always())
    python = PYTHON_HOT_PATH["make_span"]
    for call in (lambda: make_span(tracer, **kwargs), lambda: tracer.span(**kwargs)):
        try:
            expected: Any = type(python(tracer, **kwargs)).__name__
        except TypeError as error:
            expected = str(error)
        try:
            got: Any = type(call()).__name__
        except TypeError as error:
            got = str(error)
        assert got == expected


REFUSED_LAYOUTS = """
import sys, tomograph
from tomograph import _speedups
span = sys.modules["tomograph.span"]
span.speedups = _speedups
class Wide:  # one slot more than the compiled make_span fills
    __slots__ = span.Span.__slots__ + ("more",)
class Other:
    __slots__ = ("debug",)
class Borrowed:  # a slot descriptor of another class: its offset means nothing here
    __slots__ = span.Span.__slots__
Borrowed.debug = Other.__dict__["debug"]
print(span._install_compiled(Wide), span._install_compiled(Borrowed))
print(span._install_compiled(span.Span), type(span.make_span(tomograph.Tracer("s"), "x")).__name__)
"""


@pytest.mark.skipif(not SPEEDUPS_BUILT, reason="needs the compiled extension built")
def test_the_extension_refuses_a_span_class_it_does_not_know() -> None:
    # Pure Python at import, so the extension is still to set up in the child.
    lines = _run(REFUSED_LAYOUTS, TOMOGRAPH_NO_EXTENSIONS="1").splitlines()
    assert lines == ["False False", "True Span"]


def test_the_hot_path_functions_carry_the_python_docstrings() -> None:
    assert make_span.__doc__ == PYTHON_HOT_PATH["make_span"].__doc__
    assert tomograph.Tracer.span.__doc__ == PYTHON_HOT_PATH["make_span"].__doc__
    for name in ("finish", "tag", "annotate"):
        assert getattr(Span, name).__doc__ == PYTHON_HOT_PATH[name].__doc__


# -- introspection --------------------------------------------------------------------------


def _parameters(function: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    # names, kinds and defaults: what help(), IDEs and signature-reading frameworks use (a
    # compiled function's text signature carries no annotations)
    import inspect

    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def test_the_hot_path_functions_have_the_signatures_of_the_python_ones() -> None:
    # Runs in both builds: compiled, the functions below are the extension's; pure, the Python
    # ones, so the expected values hold for both.
    tracer = tomograph.Tracer("svc", sampler=always())
    span = tracer.span("op", parent=None)
    python = PYTHON_HOT_PATH
    assert _parameters(make_span) == _parameters(python["make_span"])
    assert _parameters(tracer.span) == _parameters(python["make_span"])[1:]
    bound = {"enter": span.__enter__, "exit": span.__exit__, "finish": span.finish}
    bound.update(tag=span.tag, annotate=span.annotate)
    for name, method in bound.items():
        assert _parameters(method) == _parameters(python[name])[1:], name
    unbound = {"enter": Span.__enter__, "exit": Span.__exit__, "finish": Span.finish}
    unbound.update(tag=Span.tag, annotate=Span.annotate, make_span=tomograph.Tracer.span)
    for name, function in unbound.items():
        # the instance itself comes first (positional-only in a compiled method)
        got, expected = _parameters(function), _parameters(python[name])
        assert got[0][0] == expected[0][0] and got[1:] == expected[1:], name


def test_the_current_parent_default_reads_as_current() -> None:
    import inspect

    parent = inspect.signature(tomograph.Tracer("svc").span).parameters["parent"]
    assert parent.default is span_module.CURRENT
    assert repr(parent.default) == "CURRENT"
    assert str(parent).replace(" ", "").endswith("=CURRENT")  # not <object object at 0x...>


def test_current_is_only_itself() -> None:
    import copy
    import pickle

    current = span_module.CURRENT
    assert current != "CURRENT" and current == current  # noqa: PLR0124
    assert "CURRENT" != current  # noqa: SIM300 (the str on the left: its comparison is asked too)
    assert copy.deepcopy(current) is current and pickle.loads(pickle.dumps(current)) is current
