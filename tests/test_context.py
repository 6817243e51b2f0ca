"""The current span is correct and isolated across threads, asyncio tasks and greenlets."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading

import tomograph
from tomograph import Tracer
from tomograph.reporting.memory import MemoryBackend


def test_new_thread_starts_without_a_current_span() -> None:
    tracer = Tracer("svc")
    seen: list[object] = []
    with tracer.span("main"):
        thread = threading.Thread(target=lambda: seen.append(tomograph.current_span()))
        thread.start()
        thread.join()
    assert seen == [None]


def test_threads_keep_their_own_stacks() -> None:
    backend = MemoryBackend()
    tracer = Tracer("svc", backends=[backend])
    barrier = threading.Barrier(4)
    errors: list[str] = []

    def worker(n: int) -> None:
        with tracer.span(f"outer-{n}") as outer:
            barrier.wait()  # all threads hold a span at the same time
            with tracer.span(f"inner-{n}") as inner:
                barrier.wait()
                if inner.parent_id != outer.span_id:
                    errors.append(f"thread {n}: wrong parent")
                if tomograph.current_span() is not inner:
                    errors.append(f"thread {n}: wrong current span")
            if tomograph.current_span() is not outer:
                errors.append(f"thread {n}: stack not restored")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({s.trace_id for s in backend.spans}) == 4


def test_trace_continues_in_another_thread_through_its_context() -> None:
    backend = MemoryBackend()
    tracer = Tracer("svc", backends=[backend])
    with tracer.span("request") as request:
        context = request.context
        thread = threading.Thread(target=lambda: tracer.span("job", parent=context).finish())
        thread.start()
        thread.join()
    job = backend.find("job")
    assert job.trace_id == request.trace_id and job.parent_id == request.span_id


def test_asyncio_tasks_inherit_and_stay_isolated() -> None:
    backend = MemoryBackend()
    tracer = Tracer("svc", backends=[backend])

    async def child(n: int) -> tuple[int | None, int]:
        with tracer.span(f"child-{n}") as span:
            await asyncio.sleep(0.01 * (3 - n))  # interleave the tasks
            current = tomograph.current_span()
            assert current is span
            return span.parent_id, span.trace_id

    async def main() -> None:
        with tracer.span("root") as root:
            results = await asyncio.gather(*(asyncio.create_task(child(n)) for n in range(3)))
            assert tomograph.current_span() is root
        assert all(parent == root.span_id for parent, _ in results)
        assert all(trace == root.trace_id for _, trace in results)

    asyncio.run(main())
    assert sorted(backend.names()) == ["child-0", "child-1", "child-2", "root"]


def test_task_spans_do_not_leak_into_the_creator() -> None:
    tracer = Tracer("svc")

    async def opens_span() -> None:
        tracer.span("left open").__enter__()  # never exited: must stay inside the task

    async def main() -> object:
        await asyncio.create_task(opens_span())
        return tomograph.current_span()

    assert asyncio.run(main()) is None


GREENLET_SCRIPT = """
import json, sys
LIB = sys.argv[1]
if LIB == "eventlet":
    import eventlet
    eventlet.monkey_patch()
    spawn, sleep = eventlet.spawn, eventlet.sleep
    def wait(threads):
        return [t.wait() for t in threads]
else:
    from gevent import monkey
    monkey.patch_all()
    import gevent
    spawn, sleep = gevent.spawn, gevent.sleep
    def wait(threads):
        gevent.joinall(threads)
        return [t.value for t in threads]

import tomograph
from tomograph.reporting.memory import MemoryBackend

backend = MemoryBackend()
tracer = tomograph.Tracer("svc", backends=[backend])

def worker(n):
    with tracer.span("outer-%d" % n) as outer:
        sleep(0.01)
        with tracer.span("inner-%d" % n) as inner:
            sleep(0.01)
            ok = tomograph.current_span() is inner and inner.parent_id == outer.span_id
        ok = ok and tomograph.current_span() is outer
    return ok and tomograph.current_span() is None

def continues(context):
    with tracer.span("continued", parent=context) as span:
        sleep(0.001)
        return span.trace_id == context.trace_id and span.parent_id == context.span_id

with tracer.span("main") as main:
    results = wait([spawn(worker, n) for n in range(5)])
    results += wait([spawn(continues, main.context)])
    results.append(tomograph.current_span() is main)
print(json.dumps({"results": results, "traces": len({s.trace_id for s in backend.spans})}))
"""


def run_greenlet_script(library: str) -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(GREENLET_SCRIPT), library],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def test_eventlet_greenlets_have_isolated_spans() -> None:
    result = run_greenlet_script("eventlet")
    assert result["results"] == [True] * 7
    assert result["traces"] == 6  # five worker traces + main with its continuation


def test_gevent_greenlets_have_isolated_spans() -> None:
    result = run_greenlet_script("gevent")
    assert result["results"] == [True] * 7
    assert result["traces"] == 6
