"""Carriers and contexts whose own code runs in the middle of a header read or write.

A key's ``__eq__``/``__hash__`` or an object's ``__del__`` runs Python code while a header is
looked up or written; that code may delete the very values being read. The compiled functions
(``tomograph._speedups``) must hold what they still use, so such code can change the answer
only as it would in Python, and never crash the process. Each case runs in a child process
(a crash would otherwise end the test run) and, in both builds, must print the Python answer.
"""

from __future__ import annotations

import pytest
from tests.support.isolated import run_script as run

# The tracestate members are hashed while being looked up in the formatted-text cache; hashing
# drops the context's last reference to them and fills the freed memory.
MEMBERS_FREED_WHILE_HASHED = """
    from tomograph.propagation import {module}
    from tomograph.propagation._context import new_context

    class Dropper:
        def __init__(self, extra):
            self.extra = extra

        def __hash__(self):
            extra, self.extra = self.extra, None
            if extra is not None:
                extra.clear()
                global filler
                filler = [bytearray(b"\\xff" * 40) for _ in range(2000)]
            return 1

    for _ in range(200):
        extra = {{}}
        extra["{key}"] = (Dropper(extra),) + tuple((object(),) for _ in range(8))
        try:
            {module}.inject(new_context(1, 2, None, True, False, extra), {{}})
        except TypeError:
            pass  # the Python function refuses members that are not pairs
    print("alive")
"""

# The cached header text is dropped, by a finalizer, while the context is released.
TEXT_DROPPED_BY_A_FINALIZER = """
    from tomograph.propagation import {module}
    from tomograph.propagation._context import new_context

    cache = {cache}
    members = {members}

    class Clear:
        def __del__(self):
            cache.clear()
            global filler
            filler = ["".join(["Q"] * 302) for _ in range(3000)]

    class Context:
        trace_id, span_id, parent_id, sampled, debug = 1, 2, None, True, False

        @property
        def extra(self):
            return {{"{key}": members, "z": Clear()}}

    for _ in range(50):
        {module}.inject(new_context(1, 2, None, True, False, {{"{key}": members}}), {{}})
        carrier = {{}}
        {module}.inject(Context(), carrier)
    print(carrier["{key}"])
"""

# A key whose __eq__ runs during a later lookup removes a header read before.
B3_HEADER_REMOVED_DURING_A_LATER_LOOKUP = """
    from tomograph.propagation import b3

    class Remover:
        def __init__(self, carrier):
            self.carrier = carrier

        def __hash__(self):
            return hash("x-b3-sampled")

        def __eq__(self, other):
            if "x-b3-traceid" in self.carrier:
                del self.carrier["x-b3-traceid"]
                global filler
                filler = "".join(["fedcba98", "76543210"])
            return False

    carrier = {"x-b3-traceid": "".join(["01234567", "89abcdef"])}
    carrier["x-b3-spanid"] = "00f067aa0ba902b7"
    carrier[Remover(carrier)] = 1
    print(hex(b3.extract_dict(carrier, False, True).trace_id))
"""

W3C_HEADER_REMOVED_DURING_A_LATER_LOOKUP = """
    from tomograph.propagation import w3c

    armed = False

    class Remover:
        def __init__(self, carrier):
            self.carrier = carrier

        def __hash__(self):
            return hash("tracestate")

        def __eq__(self, other):
            if armed and self.carrier.pop("traceparent", None) is not None:
                global filler
                filler = ["".join(["00-", "f" * 49, "-01"]) for _ in range(50)]
            return False

    parent = "".join(["00-4bf92f3577b34da6a3ce929d0e0e4736-", "00f067aa0ba902b7-01"])
    carrier = {"traceparent": parent}
    carrier[Remover(carrier)] = 1
    carrier["tracestate"] = "tomograph=00f067aa0ba902b7;d;0000000000000003"
    armed = True
    context = w3c.extract_dict(carrier, False, True)
    print(hex(context.trace_id), hex(context.parent_id), context.debug)
"""


@pytest.mark.parametrize(("module", "key"), [("w3c", "tracestate"), ("baggage", "baggage")])
def test_members_freed_while_they_are_hashed_do_not_crash_inject(module: str, key: str) -> None:
    assert run(MEMBERS_FREED_WHILE_HASHED.format(module=module, key=key)) == "alive"


@pytest.mark.parametrize(
    ("module", "key", "cache", "members", "expected"),
    [
        (
            "w3c",
            "tracestate",
            "w3c._FOREIGN",
            '(("a", "".join(["v"] * 200)),)',
            "tomograph=0000000000000002;1,a=" + "v" * 200,
        ),
        (
            "baggage",
            "baggage",
            "baggage._FORMATTED",
            'baggage.parse_baggage("".join(["k=", "v" * 300]))',
            "k=" + "v" * 300,
        ),
    ],
)
def test_header_text_dropped_by_a_finalizer_is_still_written_whole(
    module: str, key: str, cache: str, members: str, expected: str
) -> None:
    script = TEXT_DROPPED_BY_A_FINALIZER.format(
        module=module, key=key, cache=cache, members=members
    )
    assert run(script) == expected


def test_a_b3_header_removed_during_a_later_lookup_is_read_as_it_was() -> None:
    assert run(B3_HEADER_REMOVED_DURING_A_LATER_LOOKUP) == "0x123456789abcdef"


def test_a_traceparent_removed_during_the_tracestate_lookup_is_read_as_it_was() -> None:
    assert run(W3C_HEADER_REMOVED_DURING_A_LATER_LOOKUP) == (
        "0x4bf92f3577b34da6a3ce929d0e0e4736 0x3 True"
    )


# A key whose __eq__ raises the first time it runs (a Ctrl-C or sys.exit() arriving while a
# header is looked up; any exception a stateful __eq__ raises once). The Python functions let
# it through from that first run; the compiled ones must too, and must not run __eq__ again.
RAISED_ONCE_DURING_A_LOOKUP = """
    import signal
    import sys

    from tomograph.propagation import {module}

    armed, calls = False, 0

    class Once:
        def __hash__(self):
            return hash("{key}")

        def __eq__(self, other):
            global calls
            calls += armed
            if calls == 1:
                {raise_it}
            return False

    # The key first: looking the header up then meets it before the header itself.
    carrier = {{Once(): 1}}
    carrier.update({{"{key}": {value}}})
    armed = True
    try:
        outcome = {call}
    except BaseException as raised:  # noqa: BLE001 - what got through is the answer
        outcome = type(raised).__name__
    print(outcome, calls)
"""

# What raises inside __eq__: a Ctrl-C delivered by the signal handler, sys.exit(), an error.
RAISERS = {
    "KeyboardInterrupt": "signal.raise_signal(signal.SIGINT)",
    "SystemExit": "sys.exit(3)",
    "LookupError": "raise LookupError('once')",
}

# Each format's extract_dict and extract, with a well-formed header under the colliding key's
# name (the lookup that compares the hostile key with it comes first in both builds).
LOOKUPS = [
    ("w3c", "traceparent", '"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"'),
    ("w3c", "tracestate", '"rojo=1"'),
    ("b3", "b3", '"4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"'),
    ("b3", "x-b3-sampled", '"1"'),
    ("baggage", "baggage", '"k=v"'),
]


@pytest.mark.parametrize("raised", sorted(RAISERS))
@pytest.mark.parametrize(
    "call", ["extract_dict(carrier, False, True)", "extract(carrier)"], ids=["dict", "extract"]
)
@pytest.mark.parametrize(("module", "key", "value"), LOOKUPS, ids=[key for _, key, _ in LOOKUPS])
def test_an_exception_raised_once_by_a_key_during_a_lookup_gets_through(
    module: str, key: str, value: str, call: str, raised: str
) -> None:
    if key == "tracestate":  # read only after a well-formed traceparent
        value += ', "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"'
    if key == "x-b3-sampled":  # read only after the single header was found absent
        value += ', "x-b3-traceid": "4bf92f3577b34da6", "x-b3-spanid": "00f067aa0ba902b7"'
    script = RAISED_ONCE_DURING_A_LOOKUP.format(
        module=module, key=key, value=value, call=f"{module}.{call}", raise_it=RAISERS[raised]
    )
    assert run(script) == f"{raised} 1"


def test_an_exception_raised_once_while_telling_an_environ_gets_through() -> None:
    script = RAISED_ONCE_DURING_A_LOOKUP.format(
        module="w3c",
        key="REQUEST_METHOD",
        value='"GET", "HTTP_TRACEPARENT": "00-' + "1" * 32 + "-" + "2" * 16 + '-01"',
        call="w3c.extract(carrier)",
        raise_it=RAISERS["KeyboardInterrupt"],
    )
    assert run(script) == "KeyboardInterrupt 1"


# A context whose property getter is interrupted once, while inject reads it. The Python
# functions read a context's fields in their own order and decide on odd values themselves,
# so the compiled ones hand an Exception over to them (the getter runs again); a
# KeyboardInterrupt or SystemExit gets through at once.
INTERRUPTED_WHILE_INJECT_READS = """
    import signal
    import sys

    from tomograph.propagation import {module}

    calls = 0

    class Context:
        trace_id, span_id, parent_id, sampled, debug = 1, 2, None, True, False

        @property
        def extra(self):
            global calls
            calls += 1
            if calls == 1:
                {raise_it}
            return None

    try:
        {module}.inject(Context(), {{}})
        outcome = "written"
    except BaseException as raised:  # noqa: BLE001 - what got through is the answer
        outcome = type(raised).__name__
    print(outcome)
"""


@pytest.mark.parametrize("raised", ["KeyboardInterrupt", "SystemExit"])
@pytest.mark.parametrize("module", ["w3c", "baggage"])
def test_an_interrupt_raised_while_inject_reads_a_context_gets_through(
    module: str, raised: str
) -> None:
    script = INTERRUPTED_WHILE_INJECT_READS.format(module=module, raise_it=RAISERS[raised])
    assert run(script) == raised


# A tracestate member whose __hash__ is interrupted while inject looks up its formatted text.
MEMBER_INTERRUPTED_WHILE_HASHED = """
    import signal

    from tomograph.propagation import w3c
    from tomograph.propagation._context import new_context

    calls = 0

    class Member(tuple):
        def __hash__(self):
            global calls
            calls += 1
            if calls == 1:
                signal.raise_signal(signal.SIGINT)
            return 1

    members = (Member(("rojo", "1")),)
    try:
        w3c.inject(new_context(1, 2, None, True, False, {"tracestate": members}), {})
        outcome = "written"
    except BaseException as raised:  # noqa: BLE001 - what got through is the answer
        outcome = type(raised).__name__
    print(outcome)
"""


def test_an_interrupt_raised_while_a_tracestate_member_is_hashed_gets_through() -> None:
    assert run(MEMBER_INTERRUPTED_WHILE_HASHED) == "KeyboardInterrupt"


# The composite propagator looks for baggage after reading the context: a key whose __eq__ runs
# then removes the traceparent and the plan's keys; the context read before stands.
ENVIRON_EMPTIED_DURING_THE_BAGGAGE_LOOKUP = """
    from tomograph.propagation import Propagator

    class Remover:
        def __init__(self, carrier):
            self.carrier = carrier

        def __hash__(self):
            return hash("HTTP_BAGGAGE")

        def __eq__(self, other):
            for key in [k for k in self.carrier if isinstance(k, str)]:
                del self.carrier[key]
            global filler
            filler = ["".join(["00-", "f" * 49, "-01"]) for _ in range(50)]
            return False

    environ = {"REQUEST_METHOD": "GET"}
    parent = "".join(["00-4bf92f3577b34da6a3ce929d0e0e4736-", "00f067aa0ba902b7-01"])
    environ["HTTP_TRACEPARENT"] = parent
    environ[Remover(environ)] = 1
    context = Propagator().extract(environ)
    print(hex(context.trace_id), hex(context.span_id), context.extra, sorted(map(str, environ)))
"""

# The collector runs while the pairs are read (here: at every allocation), and a finalizer
# empties the list of pairs and fills the memory it held.
PAIRS_CLEARED_BY_A_FINALIZER = """
    import gc
    from tomograph.propagation import Propagator, carriers, composite

    pairs = []

    class Clear:
        def __init__(self):
            self.cycle = self

        def __del__(self):
            pairs.clear()
            global filler
            filler = [(bytes(30), bytes(30)) for _ in range(100)]

    gc.set_threshold(1, 1, 1)
    for round in range(300):
        pairs[:] = [(b"b3", b"1"), (b"b3", bytes(round % 7)), (b"host", b"x")] * 3
        Clear()
        found = carriers.known_pairs(pairs, composite._ALL_NAMES)
        assert set(found) <= {"b3"}, found
        pairs[:] = [(b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
        Clear()
        Propagator().extract(pairs)
    print("alive")
"""

# A key whose __eq__ raises KeyboardInterrupt while the composite propagator looks for a header:
# the interrupt reaches the caller (extract only turns Exception into "no context").
INTERRUPTED_DURING_A_LOOKUP = """
    from tomograph.propagation import Propagator

    armed = False

    class Interrupt:
        def __hash__(self):
            return hash("{key}")

        def __eq__(self, other):
            if armed:
                raise KeyboardInterrupt
            return False

    environ = {{"REQUEST_METHOD": "GET", Interrupt(): 1}}
    environ["HTTP_TRACEPARENT"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    armed = True
    try:
        Propagator().extract(environ)
    except KeyboardInterrupt:
        print("interrupted")
    else:
        print("swallowed")
"""

# A repeated header makes a list of its values; the collector runs while that list is made, and
# a collector callback finds the dict being filled and empties it, dropping the first value.
DUPLICATE_DROPPED_BY_A_COLLECTION = """
    import gc
    from tomograph.propagation import carriers, composite

    names = ["b3", "tracestate", "traceparent", "baggage", "x-b3-traceid", "x-b3-spanid"]
    armed = False

    def meddle(phase, info):
        if armed and phase == "start":
            for found in gc.get_objects():
                if (
                    type(found) is dict
                    and found.keys() <= set(names)
                    and any(type(v) is list for v in found.values())
                ):
                    found.clear()
                    global filler
                    filler = [("%05d" % i).encode().decode() for i in range(3000)]

    gc.callbacks.append(meddle)
    gc.set_threshold(1, 1, 1)
    for round in range(300):
        pairs = []
        for name in names:
            pairs += [(name.encode(), f"{name}-{round}-{n}".encode()) for n in (1, 2)]
        found = None
        armed = True
        found = carriers.known_pairs(pairs, composite._ALL_NAMES)
        armed = False
        for name, values in found.items():
            assert values == [f"{name}-{round}-1", f"{name}-{round}-2"], (name, values)
    print("alive")
"""

# The compiled reader remembers the names of the last few name sets it read; a collector
# callback, run while pairs are read (at the lists repeated headers make), reads other pairs
# with more other name sets than it remembers, which replace the one being read. The first read
# goes on with its own names.
NAMES_REPLACED_WHILE_PAIRS_ARE_READ = """
    import gc
    from tomograph.propagation import carriers, composite

    others = [carriers.NameSet(["user-agent", "accept", "x-other-12", str(n)]) for n in range(9)]
    armed = False

    def meddle(phase, info):
        global filler
        if armed and phase == "start":
            for other in others:
                carriers.known_pairs([(b"user-agent", b"x")], other)
            filler = [(bytes(30), bytes(30)) for _ in range(100)]

    gc.callbacks.append(meddle)
    gc.set_threshold(1, 1, 1)
    repeated = (b"b3", b"baggage", b"x-b3-spanid", b"x-b3-traceid")
    for round in range(300):
        pairs = [(name, value) for name in repeated for value in (b"1", b"2")]
        pairs += [
            (b"traceparent", b"tp"), (b"User-Agent", b"u"), (b"Tracestate", b"ts"),
            (b"accept", b"a"), (b"x-other-12", b"o"),
        ]
        armed = True
        found = carriers.known_pairs(pairs, composite._ALL_NAMES)
        armed = False
        expected = {name.decode(): ["1", "2"] for name in repeated}
        assert found == {**expected, "traceparent": "tp", "tracestate": "ts"}, found
    print("alive")
"""


def test_names_read_by_a_collector_callback_while_pairs_are_read_leave_the_read_its_own() -> None:
    assert run(NAMES_REPLACED_WHILE_PAIRS_ARE_READ) == "alive"


# A name set of the caller's holds a str subclass: looking a header name up in it runs the
# subclass's __eq__, which empties the list pair being read and the list of pairs (freeing the
# pair) before the pair's value is read. Python's item[1] then finds the pair empty.
PAIR_EMPTIED_BY_A_NAMES_EQ = """
    from tomograph.propagation import carriers

    pairs = []

    class Meddling(str):
        __hash__ = str.__hash__

        def __eq__(self, other):
            if pairs:
                pairs[0].clear()
                pairs.clear()
                global filler
                filler = [bytearray(b"\\xcc" * 64) for _ in range(1000)]
            return str.__eq__(self, other)

    names = carriers.NameSet([Meddling("traceparent"), "b3"])
    answers = set()
    for _ in range(50):
        pairs.append([b"traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"])
        try:
            answers.add(repr(carriers.known_pairs(pairs, names)))
        except IndexError as error:
            answers.add(f"IndexError: {error}")
    print(*answers)
"""


def test_a_pair_emptied_by_a_wanted_names_eq_is_read_as_python_reads_it() -> None:
    assert run(PAIR_EMPTIED_BY_A_NAMES_EQ) == "IndexError: list index out of range"


def test_an_environ_emptied_during_the_baggage_lookup_keeps_the_context_read() -> None:
    assert run(ENVIRON_EMPTIED_DURING_THE_BAGGAGE_LOOKUP).startswith(
        "0x4bf92f3577b34da6a3ce929d0e0e4736 0xf067aa0ba902b7 None ['<__main__.Remover object"
    )


def test_pairs_cleared_by_a_finalizer_while_they_are_read_do_not_crash() -> None:
    assert run(PAIRS_CLEARED_BY_A_FINALIZER) == "alive"


@pytest.mark.parametrize("key", ["HTTP_TRACEPARENT", "HTTP_BAGGAGE", "HTTP_UBER_TRACE_ID"])
def test_an_interrupt_raised_by_a_key_during_a_lookup_is_not_swallowed(key: str) -> None:
    assert run(INTERRUPTED_DURING_A_LOOKUP.format(key=key)) == "interrupted"


def test_a_duplicate_header_dropped_by_a_collection_while_pairs_are_read_does_not_crash() -> None:
    assert run(DUPLICATE_DROPPED_BY_A_COLLECTION) == "alive"
