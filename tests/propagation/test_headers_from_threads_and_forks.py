"""The header functions (compiled or not) from 32 threads on their first call, and in a forked
child whose parent filled the caches of parsed and formatted text.

Each case runs in a fresh child process, so the first call really is the first, and prints
every distinct answer; in both builds there must be exactly one, the expected headers."""

from __future__ import annotations

import os

import pytest
from tests.support.isolated import run_script

ROUND_TRIP = """
    import os
    import threading

    from tomograph.propagation import b3, baggage, w3c
    from tomograph.propagation._context import new_context

    extra = {"tracestate": (("rojo", "1"),), "baggage": baggage.parse_baggage("k=v,a=b")}
    context = new_context(0x4BF92F3577B34DA6A3CE929D0E0E4736, 2, 7, True, False, extra)

    def round_trip():
        headers = {}
        for module in (w3c, b3, baggage):
            module.inject(context, headers)
        read = w3c.extract(dict(headers))
        single = b3.extract({"b3": "4bf92f3577b34da6a3ce929d0e0e4736-0000000000000002-1"})
        entries = baggage.extract_dict(dict(headers), False, True)
        return repr(
            (
                sorted(headers.items()),
                hex(read.trace_id), read.span_id, read.parent_id, read.extra,
                single.span_id, single.sampled,
                [(entry.key, entry.value) for entry in entries],
            )
        )
"""

THREADS = (
    ROUND_TRIP
    + """
    barrier = threading.Barrier(32)
    answers = set()

    def work():
        barrier.wait()
        for _ in range(100):
            answers.add(round_trip())

    threads = [threading.Thread(target=work) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for answer in sorted(answers):
        print(answer)
"""
)

FORK = (
    ROUND_TRIP
    + """
    round_trip()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        answers = {round_trip() for _ in range(50)}
        os.write(write, "\\n".join(sorted(answers)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        print(pipe.read())
    os.waitpid(pid, 0)
"""
)

EXPECTED = repr(
    (
        [
            ("baggage", "k=v,a=b"),
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000002-01"),
            ("tracestate", "tomograph=0000000000000002;1;0000000000000007,rojo=1"),
            ("x-b3-parentspanid", "0000000000000007"),
            ("x-b3-sampled", "1"),
            ("x-b3-spanid", "0000000000000002"),
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ],
        "0x4bf92f3577b34da6a3ce929d0e0e4736",
        2,
        7,
        {"tracestate": (("rojo", "1"),)},
        2,
        True,
        [("k", "v"), ("a", "b")],
    )
)


def test_32_threads_on_the_first_call_all_get_the_same_headers() -> None:
    assert run_script(THREADS).splitlines() == [EXPECTED]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_reads_and_writes_headers_as_its_parent() -> None:
    assert run_script(FORK).splitlines() == [EXPECTED]
