"""Database client cost: tomograph's redis-py and psycopg integrations beside OpenTelemetry's.

Against real servers on loopback (a throw-away redis-server and PostgreSQL cluster, as the
tests start them): µs per operation added to the untraced call, for a redis ``GET``, a redis
pipeline of 10 commands, and a psycopg 3 ``SELECT`` with a parameter. Both tracers record
every span into memory (bounded), so the numbers are the cost of tracing, not of exporting.
The round trip itself is tens of µs and varies: each figure is the best of several runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
import redis  # noqa: E402
from tests.support.postgres import postgres_cluster  # noqa: E402
from tests.support.redis_server import redis_server  # noqa: E402

import tomograph  # noqa: E402
from _harness import Result, print_table, time_per_op  # noqa: E402
from tomograph.integrations import psycopg as tomograph_psycopg  # noqa: E402
from tomograph.integrations import redis as tomograph_redis  # noqa: E402
from tomograph.reporting.memory import MemoryBackend  # noqa: E402


def cases(client: redis.Redis, conn: psycopg.Connection) -> dict[str, Callable[[], object]]:
    def pipeline() -> object:
        pipe = client.pipeline(transaction=False)
        for _ in range(10):
            pipe.get("key")
        return pipe.execute()

    return {
        "redis GET": lambda: client.get("key"),
        "redis pipeline of 10": pipeline,
        "psycopg SELECT": lambda: conn.execute("SELECT %s::int", (1,)).fetchone(),
    }


def otel_provider() -> tuple[Any, Callable[[], None]] | None:
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        return None
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def bound() -> None:
        if len(exporter._finished_spans) > 1000:
            exporter.clear()  # keep memory bounded, as tomograph's MemoryBackend does

    return provider, bound


def measure(operation: Callable[[], object], after: Callable[[], None] | None = None) -> float:
    if after is None:
        return time_per_op(operation, min_time=0.1, repeats=3)

    def step() -> None:
        operation()
        after()

    return time_per_op(step, min_time=0.1, repeats=3)


class NoNetworkRedis(redis.Redis):
    """A client whose commands stop before the network: what is left is the tracing."""

    def _execute_command(self, *args: Any, **options: Any) -> Any:
        return b"value"


ROUNDS = 7


def main() -> None:
    # The three libraries take turns, round after round, and each keeps its best round: the
    # machine's other work then weighs on all of them alike.
    best: dict[tuple[str, str], float] = {}
    otel = otel_provider()
    try:
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor
    except ImportError:
        otel = None
        print("(OpenTelemetry's redis/psycopg instrumentation not installed)", file=sys.stderr)
    memory = MemoryBackend(max_spans=1000)
    tomograph.configure(service="bench", backends=[memory], environ={})
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        postgres_url = stack.enter_context(postgres_cluster())
        dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
        client = redis.Redis.from_url(redis_url)
        client.set("key", "value")
        offline = NoNetworkRedis()
        conn = stack.enter_context(psycopg.connect(dsn, autocommit=True))
        otel_conn = None
        if otel is not None:
            otel_conn = stack.enter_context(psycopg.connect(dsn, autocommit=True))
            PsycopgInstrumentor.instrument_connection(otel_conn, tracer_provider=otel[0])

        def run(library: str, connection: Any, after: Callable[[], None] | None) -> None:
            operations = cases(client, connection)
            operations["redis GET, no network"] = lambda: offline.get("key")
            for name, operation in operations.items():
                took = measure(operation, after)
                best[name, library] = min(best.get((name, library), took), took)

        for _ in range(ROUNDS):
            run("none", conn, None)
            tomograph_redis.patch()
            tomograph_psycopg.patch()
            run("tomograph", conn, memory.clear)
            tomograph_redis.unpatch()
            tomograph_psycopg.unpatch()
            if otel is not None:
                RedisInstrumentor().instrument(tracer_provider=otel[0])
                run("opentelemetry", otel_conn, otel[1])
                RedisInstrumentor().uninstrument()
        client.close()
    results = [
        Result(name, library, took - best[name, "none"])
        for (name, library), took in best.items()
        if library != "none"
    ]
    print_table(
        "Database clients (µs added per operation, best of rounds; over loopback except "
        "the 'no network' row; ratio: peer / tomograph)",
        results,
    )


if __name__ == "__main__":
    main()
