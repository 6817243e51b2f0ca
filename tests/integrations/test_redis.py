"""redis-py commands and pipelines become client spans: against a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from tests.support.redis_server import redis_server
from tests.support.servers import free_port
from tests.support.thread_calls import all_at_once

import tomograph
from tomograph.context import CURRENT_SPAN, suppress_tracing
from tomograph.integrations import redis as traced_redis
from tomograph.model import SpanKind
from tomograph.reporting.memory import MemoryBackend

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(autouse=True)
def in_a_trace(memory: MemoryBackend) -> Iterator[None]:
    # Commands sent outside any span are not recorded by default (see the tests at the end):
    # each test sends its commands inside one, as an application serving a request does.
    with tomograph.get_tracer().span("test"):
        yield


@pytest.fixture
def patched() -> Iterator[None]:
    assert traced_redis.patch()
    yield
    traced_redis.unpatch()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    connection.flushdb()
    yield connection
    connection.close()


def client_spans(memory: MemoryBackend) -> list[tomograph.Span]:
    return [s for s in memory.spans if s.kind is SpanKind.CLIENT]


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])


# -- commands --------------------------------------------------------------------------------


def test_each_command_is_a_client_span_named_after_the_command(
    memory: MemoryBackend, client: redis.Redis, patched: None, redis_url: str
) -> None:
    client.set("user:1", "secret-value")
    assert client.get("user:1") == b"secret-value"
    client.hset("h", mapping={"field": "secret-field-value"})
    spans = client_spans(memory)
    assert [s.name for s in spans] == ["SET", "GET", "HSET"]
    get = spans[1]
    assert get.tags["db.system"] == "redis"
    assert get.tags["db.operation"] == "GET"
    assert get.tags["db.redis.database_index"] == 0
    assert get.tags["server.address"] == "127.0.0.1"
    assert get.tags["server.port"] == port_of(redis_url)
    assert get.remote_endpoint == tomograph.Endpoint("redis", "127.0.0.1", None, port_of(redis_url))


def test_keys_and_values_are_never_recorded_by_default(
    memory: MemoryBackend, client: redis.Redis, patched: None
) -> None:
    client.set("user:secret-key", "secret-value")
    client.hset("h", mapping={"secret-field": "secret-field-value"})
    recorded = repr([(s.name, s.tags, s.annotations) for s in client_spans(memory)])
    assert "secret" not in recorded


def test_record_keys_opt_in_records_the_key_never_the_value(
    memory: MemoryBackend, redis_url: str
) -> None:
    client = traced_redis.instrument(redis.Redis.from_url(redis_url), record_keys=True)
    client.set("user:42", "secret-value")
    span = memory.find("SET")
    assert span.tags["db.redis.key"] == "user:42"
    assert "secret-value" not in repr(span.tags)


def test_record_keys_never_records_the_password_of_auth(
    memory: MemoryBackend, redis_url: str
) -> None:
    # AUTH's first argument is the password (or the user name, then the password): no key.
    client = traced_redis.instrument(redis.Redis.from_url(redis_url), record_keys=True)
    for args in (("s3cret-password",), ("default", "s3cret-password")):
        try:
            client.execute_command("AUTH", *args)
        except redis.exceptions.RedisError:
            pass  # a server without that user or password says so: the span is made either way
    spans = client_spans(memory)
    assert [span.name for span in spans] == ["AUTH", "AUTH"]
    assert "s3cret" not in repr([(span.tags, span.annotations) for span in spans])


def test_command_span_is_a_child_of_the_current_span(
    memory: MemoryBackend, client: redis.Redis, patched: None
) -> None:
    with tomograph.get_tracer().span("request") as parent:
        client.ping()
    ping = memory.find("PING")
    assert (ping.trace_id, ping.parent_id) == (parent.trace_id, parent.span_id)


def test_clients_made_before_patch_are_traced(memory: MemoryBackend, client: redis.Redis) -> None:
    traced_redis.patch()
    try:
        client.incr("counter")
    finally:
        traced_redis.unpatch()
    client.incr("counter")  # after unpatch: nothing
    assert [s.name for s in client_spans(memory)] == ["INCRBY"]  # redis-py sends incr() as INCRBY


def test_a_server_error_is_an_error_span_and_reaches_the_caller(
    memory: MemoryBackend, client: redis.Redis, patched: None
) -> None:
    client.set("name", "not a number")
    with pytest.raises(redis.ResponseError):
        client.incr("name")
    span = memory.find("INCRBY")
    assert span.error
    assert span.tags["exception.type"] == "ResponseError"


def test_a_server_that_is_down_gives_an_error_span(memory: MemoryBackend, patched: None) -> None:
    down = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=2)
    with pytest.raises(redis.ConnectionError):
        down.get("k")
    span = memory.find("GET")
    assert span.error
    assert span.tags["exception.type"] == "ConnectionError"


def test_pubsub_messages_are_not_traced_publish_is(
    memory: MemoryBackend, client: redis.Redis, patched: None
) -> None:
    pubsub = client.pubsub()
    pubsub.subscribe("news")
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    client.publish("news", "hello")
    message = None
    for _ in range(50):
        message = pubsub.get_message(timeout=0.2)
        if message is not None:
            break
    assert message is not None and message["data"] == b"hello"
    pubsub.close()
    assert [s.name for s in client_spans(memory)] == ["PUBLISH"]


def test_first_commands_from_32_threads_at_once_each_get_their_span(
    memory: MemoryBackend, client: redis.Redis, patched: None
) -> None:
    tracer = tomograph.get_tracer()
    parents: dict[int, int] = {}
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            with tracer.span(f"job {index}") as parent:
                parents[index] = parent.span_id
                client.set(f"k{index}", index)
        except BaseException as error:
            errors.append(error)

    all_at_once(32, work)
    assert errors == []
    sets = [s for s in client_spans(memory) if s.name == "SET"]
    assert sorted(s.parent_id for s in sets) == sorted(parents.values())


def test_made_up_and_binary_command_names_are_bounded(
    memory: MemoryBackend, client: redis.Redis, patched: None
) -> None:
    with pytest.raises(redis.ResponseError):
        client.execute_command(b"\xff" * 10_000_000)
    span = client_spans(memory)[-1]
    assert len(span.name) <= traced_redis.MAX_NAME_LENGTH
    assert span.error


# -- pipelines ---------------------------------------------------------------------------------


def test_a_transaction_is_one_span_with_its_command_names(
    memory: MemoryBackend, client: redis.Redis, patched: None
) -> None:
    with client.pipeline() as pipe:
        pipe.set("a", "secret-1").incr("n").get("a")
        assert pipe.execute() == [True, 1, b"secret-1"]
    spans = client_spans(memory)
    assert [s.name for s in spans] == ["MULTI"]
    assert spans[0].tags["db.redis.pipeline_length"] == 3
    assert spans[0].tags["db.redis.commands"] == ["SET", "INCRBY", "GET"]
    assert "secret" not in repr(spans[0].tags)


def test_a_plain_pipeline_is_one_span_and_long_ones_list_a_bounded_number_of_names(
    memory: MemoryBackend, client: redis.Redis, patched: None
) -> None:
    pipe = client.pipeline(transaction=False)
    for index in range(100):
        pipe.set(f"k{index}", index)
    pipe.execute()
    span = memory.find("PIPELINE")
    assert span.tags["db.redis.pipeline_length"] == 100
    assert len(span.tags["db.redis.commands"]) == traced_redis.MAX_LISTED_COMMANDS  # type: ignore[arg-type]


def test_failed_commands_in_a_pipeline_make_an_error_span_even_when_not_raised(
    memory: MemoryBackend, client: redis.Redis, patched: None
) -> None:
    client.set("text", "abc")
    pipe = client.pipeline(transaction=False)
    pipe.incr("text").set("x", 1)
    results = pipe.execute(raise_on_error=False)
    assert isinstance(results[0], redis.ResponseError)
    span = memory.find("PIPELINE")
    assert span.error
    assert span.tags["db.redis.failed_commands"] == 1
    assert span.tags["exception.type"] == "ResponseError"


def test_watched_commands_before_multi_are_their_own_spans(
    memory: MemoryBackend, client: redis.Redis, patched: None
) -> None:
    client.set("balance", 10)
    with client.pipeline() as pipe:
        pipe.watch("balance")
        balance = int(pipe.get("balance"))  # type: ignore[arg-type]
        pipe.multi()
        pipe.set("balance", balance - 1)
        pipe.execute()
    names = [s.name for s in client_spans(memory)]
    assert names == ["SET", "WATCH", "GET", "MULTI"]


def test_instrument_traces_one_client_and_its_pipelines_only(
    memory: MemoryBackend, redis_url: str
) -> None:
    traced = traced_redis.instrument(redis.Redis.from_url(redis_url))
    plain = redis.Redis.from_url(redis_url)
    traced.set("a", 1)
    plain.set("b", 2)
    traced.pipeline().get("a").execute()
    plain.pipeline().get("b").execute()
    assert [s.name for s in client_spans(memory)] == ["SET", "MULTI"]


def test_instrument_and_patch_together_give_one_span(
    memory: MemoryBackend, redis_url: str, patched: None
) -> None:
    client = traced_redis.instrument(redis.Redis.from_url(redis_url))
    client.get("a")
    assert [s.name for s in client_spans(memory)] == ["GET"]


def test_patch_twice_is_a_no_op_and_unpatch_restores_exactly() -> None:
    original = redis.Redis.execute_command
    original_execute = redis.asyncio.client.Pipeline.execute
    assert traced_redis.patch()
    assert not traced_redis.patch()
    assert traced_redis.patched()
    assert traced_redis.unpatch()
    assert not traced_redis.patched()
    assert not traced_redis.unpatch()
    assert redis.Redis.execute_command is original
    assert redis.asyncio.client.Pipeline.execute is original_execute


def test_suppressed_tracing_records_nothing(
    memory: MemoryBackend, client: redis.Redis, patched: None
) -> None:
    with suppress_tracing():
        client.set("a", 1)
    assert client_spans(memory) == []


# -- asyncio -----------------------------------------------------------------------------------


def test_asyncio_commands_pipelines_and_errors(
    memory: MemoryBackend, redis_url: str, patched: None
) -> None:
    async def main() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            with tomograph.get_tracer().span("request"):
                await client.set("a", "secret-value")
                assert await client.get("a") == b"secret-value"
                async with client.pipeline() as pipe:
                    await pipe.incr("n").get("n").execute()
                with pytest.raises(redis.ResponseError):
                    await client.incr("a")
        finally:
            await client.aclose()

    asyncio.run(main())
    spans = client_spans(memory)
    assert [s.name for s in spans] == ["SET", "GET", "MULTI", "INCRBY"]
    parent = memory.find("request")
    assert {s.parent_id for s in spans} == {parent.span_id}
    assert spans[2].tags["db.redis.commands"] == ["INCRBY", "GET"]
    assert spans[3].error and spans[3].tags["exception.type"] == "ResponseError"
    assert "secret" not in repr([s.tags for s in spans])


def test_asyncio_concurrent_tasks_each_get_their_own_span(
    memory: MemoryBackend, redis_url: str, patched: None
) -> None:
    tracer = tomograph.get_tracer()

    async def one(client: redis.asyncio.Redis, index: int) -> int:
        with tracer.span(f"task {index}") as parent:
            await client.set(f"k{index}", index)
            return parent.span_id

    async def main() -> list[int]:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            return list(await asyncio.gather(*(one(client, i) for i in range(32))))
        finally:
            await client.aclose()

    parents = asyncio.run(main())
    sets = [s for s in client_spans(memory) if s.name == "SET"]
    assert sorted(s.parent_id for s in sets) == sorted(parents)


def test_asyncio_instrument_one_client(memory: MemoryBackend, redis_url: str) -> None:
    async def main() -> None:
        client = traced_redis.instrument(redis.asyncio.Redis.from_url(redis_url))
        try:
            await client.get("a")
            await client.pipeline(transaction=False).get("a").execute()
        finally:
            await client.aclose()

    asyncio.run(main())
    assert [s.name for s in client_spans(memory)] == ["GET", "PIPELINE"]


def test_asyncio_server_down(memory: MemoryBackend, patched: None) -> None:
    async def main() -> None:
        client = redis.asyncio.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=2)
        with pytest.raises(redis.ConnectionError):
            await client.get("k")
        await client.aclose()

    asyncio.run(main())
    assert memory.find("GET").tags["exception.type"] == "ConnectionError"


# -- cluster -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    # The cluster bus port is the client port + 10000 unless named: above 55535 that fails.
    bus = ("--cluster-port", str(free_port()))
    options = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", *bus)
    with redis_server(*options) as url:
        node = redis.Redis.from_url(url)
        node.execute_command("CLUSTER ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 20
        while node.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
            assert time.monotonic() < deadline, "the one-node cluster never became ready"
            time.sleep(0.05)
        node.close()
        yield url


def test_cluster_commands_and_pipelines(
    memory: MemoryBackend, cluster_url: str, patched: None
) -> None:
    cluster = redis.cluster.RedisCluster.from_url(cluster_url)
    memory.clear()  # the client's discovery of the cluster's nodes
    try:
        cluster.set("a", "secret-value")
        assert cluster.get("a") == b"secret-value"
        pipe = cluster.pipeline()
        pipe.set("b", 1).get("b")
        assert pipe.execute() == [True, b"1"]
    finally:
        cluster.close()
    spans = client_spans(memory)
    assert [s.name for s in spans] == ["SET", "GET", "PIPELINE"]
    assert spans[2].tags["db.redis.commands"] == ["SET", "GET"]
    assert all(s.tags["db.system"] == "redis" for s in spans)
    assert "secret" not in repr([s.tags for s in spans])


def test_asyncio_cluster_commands_and_pipelines(
    memory: MemoryBackend, cluster_url: str, patched: None
) -> None:
    async def main() -> None:
        cluster = redis.asyncio.cluster.RedisCluster.from_url(cluster_url)
        try:
            await cluster.initialize()
            memory.clear()
            await cluster.set("a", 1)
            async with cluster.pipeline() as pipe:
                await pipe.get("a").incr("a").execute()
        finally:
            await cluster.aclose()

    asyncio.run(main())
    spans = client_spans(memory)
    assert [s.name for s in spans] == ["SET", "PIPELINE"]
    assert spans[1].tags["db.redis.pipeline_length"] == 2


def test_patch_before_configure_reports_to_the_tracer_configured_later(redis_url: str) -> None:
    from tomograph import config

    client = redis.Redis.from_url(redis_url)
    assert traced_redis.patch()  # at import time, before the application configures tomograph
    try:
        backend = MemoryBackend()
        tomograph.configure(service="late", backends=[backend], environ={})
        client.get("a")
        assert [s.name for s in backend.spans] == ["GET"]
    finally:
        traced_redis.unpatch()
        config.reset()
        client.close()


def test_unsampled_commands_record_nothing_and_still_work(
    redis_url: str, client: redis.Redis, patched: None
) -> None:
    from tomograph import config
    from tomograph.sampling import never

    backend = MemoryBackend()
    tomograph.configure(service="s", backends=[backend], sampler=never(), environ={})
    try:
        with outside_any_span_but(lambda: tomograph.span("an unsampled request")):
            client.set("a", 1)
            assert client.get("a") == b"1"
            with pytest.raises(redis.ResponseError):
                client.hget("a", "field")
    finally:
        config.reset()
    assert backend.spans == []


@contextlib.contextmanager
def outside_any_span_but(start: Callable[[], Any]) -> Iterator[None]:
    """Leave the test's span for the span ``start()`` makes: a root span of its own."""
    token = CURRENT_SPAN.set(None)
    try:
        with start():
            yield
    finally:
        CURRENT_SPAN.reset(token)


def outside_any_span(work: object) -> None:
    contextvars.Context().run(work)  # type: ignore[arg-type]


def test_commands_outside_any_span_are_not_recorded_by_default(
    memory: MemoryBackend, client: redis.Redis, patched: None
) -> None:
    # A worker's queue polling or a broker's bookkeeping would each make a one-span trace.
    outside_any_span(lambda: client.set("a", 1))
    outside_any_span(lambda: client.pipeline().incr("a").incr("a").execute())
    assert client_spans(memory) == []
    client.get("a")  # inside the test's span: recorded
    assert [s.name for s in client_spans(memory)] == ["GET"]


def test_root_commands_records_commands_outside_any_span_as_traces_of_their_own(
    memory: MemoryBackend, client: redis.Redis, redis_url: str
) -> None:
    assert traced_redis.patch(root_commands=True)
    try:
        outside_any_span(lambda: client.set("a", 1))
    finally:
        traced_redis.unpatch()
    one = traced_redis.instrument(redis.Redis.from_url(redis_url), root_commands=True)
    outside_any_span(lambda: one.get("a"))
    spans = client_spans(memory)
    assert [s.name for s in spans] == ["SET", "GET"]
    assert all(s.parent_id is None for s in spans)
