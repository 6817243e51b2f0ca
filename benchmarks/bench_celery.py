"""Celery task cost: tomograph's Celery tracing beside OpenTelemetry's ``CeleryInstrumentor``.

Per task, in one process, the µs each adds to Celery's own work:

- **publish**: what Celery does around sending a message that a tracer hooks: the
  ``before_task_publish`` and ``after_task_publish`` signals, dispatched as Celery dispatches
  them, with a fresh copy of a real message's headers (the broker's own work, the same with or
  without tracing, is left out);
- **execute**: the worker's execution of a task, ``celery.app.trace.trace_task`` with the
  request a worker builds from the message's headers (``task_prerun``/``task_postrun`` fire;
  the pool and the broker round trip are left out);
- **publish + execute**: both, the producer's context travelling in the headers.

Both tracers record every span into memory (tomograph's bounded MemoryBackend; OpenTelemetry's
SDK with an in-memory exporter behind a SimpleSpanProcessor, cleared as it fills). The
``no-op receivers`` row is the floor of any tracer hooked on Celery's signals: Celery
dispatching them to receivers that do nothing. Each library is measured in several rounds,
interleaved with the others, keeping its best time: this machine's other work then weighs on
none of them more than on the rest.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from celery import Celery, signals
from celery.app.trace import trace_task

import tomograph
from _harness import Result, print_table, time_per_op
from tomograph import config
from tomograph.integrations import celery as celery_tracing
from tomograph.reporting.memory import MemoryBackend

ROUNDS = 5
app = Celery("bench", broker="memory://")
app.conf.task_default_queue = "bench"


@app.task(ignore_result=True)
def add(x: int, y: int) -> int:
    return x + y


#: The task itself, as a worker's signals hand it over (``add`` is Celery's lazy proxy to it).
TASK = add._get_current_object()  # type: ignore[attr-defined]

#: The headers of the last message sent, as a worker receives them.
_sent: dict[str, Any] = {}


def _capture(headers: dict[str, Any] | None = None, **_: Any) -> None:
    _sent.clear()
    if headers:
        _sent.update(headers)


def _message_headers() -> dict[str, Any]:
    """The headers Celery builds for ``add.apply_async((1, 2))``, before any tracer writes."""
    signals.before_task_publish.connect(_capture, weak=False)
    try:
        add.apply_async((1, 2))
    finally:
        signals.before_task_publish.disconnect(_capture)
    return dict(_sent)


def _request(headers: dict[str, Any]) -> dict[str, Any]:
    """The request a worker builds from a message's headers (what ``trace_task`` is given)."""
    return {
        **headers,
        "delivery_info": {"exchange": "", "routing_key": "bench", "redelivered": False},
        "hostname": "bench@localhost",
        "reply_to": None,
        "correlation_id": headers.get("id"),
    }


def _publish(template: dict[str, Any]) -> dict[str, Any]:
    headers = dict(template)
    body = ((1, 2), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None})
    signals.before_task_publish.send(
        sender=add.name,
        body=body,
        exchange="",
        routing_key="bench",
        declare=[],
        headers=headers,
        properties={},
        retry_policy=None,
    )
    signals.after_task_publish.send(
        sender=add.name, body=body, headers=headers, exchange="", routing_key="bench"
    )
    return headers


def cases(template: dict[str, Any]) -> dict[str, Callable[[], None]]:
    traced_headers = _publish(template)  # as this tracer writes them
    request = _request(traced_headers)

    def publish() -> None:
        _publish(template)

    def execute() -> None:
        trace_task(TASK, request["id"], (1, 2), {}, request, app=app)

    def publish_and_execute() -> None:
        sent = _request(_publish(template))
        trace_task(TASK, sent["id"], (1, 2), {}, sent, app=app)

    return {"publish": publish, "execute": execute, "publish + execute": publish_and_execute}


def _ignore(**_: Any) -> None:
    return None


_HOOKS = (
    signals.before_task_publish,
    signals.after_task_publish,
    signals.task_prerun,
    signals.task_postrun,
)


def connect_empty() -> Callable[[], None]:
    for signal in _HOOKS:
        signal.connect(_ignore, weak=False)

    def disconnect() -> None:
        for signal in _HOOKS:
            signal.disconnect(_ignore)

    return disconnect


def connect_tomograph() -> Callable[[], None]:
    tomograph.configure(service="bench", backends=[MemoryBackend(max_spans=1000)], environ={})
    celery_tracing.patch()

    def disconnect() -> None:
        celery_tracing.unpatch()
        config.reset()

    return disconnect


def connect_opentelemetry() -> Callable[[], None]:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    class BoundedExporter(InMemorySpanExporter):
        def export(self, spans: Any) -> Any:
            if len(self._finished_spans) > 1000:
                self.clear()  # keep memory bounded, as tomograph's MemoryBackend does
            return super().export(spans)

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(BoundedExporter()))
    instrumentor = CeleryInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    return instrumentor.uninstrument  # type: ignore[no-any-return]


def main() -> None:
    libraries: dict[str, Callable[[], Callable[[], None]]] = {
        "bare": lambda: lambda: None,
        "no-op receivers": connect_empty,
        "tomograph": connect_tomograph,
    }
    try:
        import opentelemetry.instrumentation.celery
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        print("(opentelemetry-instrumentation-celery not installed: skipped)", file=sys.stderr)
    else:
        libraries["opentelemetry-celery"] = connect_opentelemetry
    template = _message_headers()
    best: dict[tuple[str, str], float] = {}
    for _ in range(ROUNDS):
        for case in ("publish", "execute", "publish + execute"):
            for library, connect in libraries.items():
                disconnect = connect()
                try:
                    took = time_per_op(cases(template)[case], min_time=0.1, repeats=3)
                finally:
                    disconnect()
                best[case, library] = min(best.get((case, library), took), took)
    bare = {case: took for (case, library), took in best.items() if library == "bare"}
    print(
        "\nCelery without tracing (µs per task): "
        + ", ".join(f"{case} {took:.1f}" for case, took in bare.items())
    )
    added = [
        Result(case, library, took - bare[case])
        for (case, library), took in best.items()
        if library != "bare"
    ]
    print_table(
        "Celery task tracing, in process (µs added per task; ratio: peer / tomograph)", added
    )


if __name__ == "__main__":
    main()
