"""redis-py: a client span per command and per pipeline, sync and asyncio, command names only.

Patch every client (``redis.Redis``, ``redis.asyncio.Redis``, their pipelines, and the cluster
clients), or instrument one client::

    from tomograph.integrations.redis import instrument, patch
    patch()                              # every client, including those that already exist
    client = instrument(redis.Redis())   # or just this one (and the pipelines it makes)

A command's span is named after the command (``GET``, ``HSET``); a pipeline's after what it
sends (``MULTI`` for a transaction, ``PIPELINE`` otherwise) with the names of its commands.
Keys and values are never recorded unless ``record_keys=True`` (then the key, not the value).
Pub/sub messages are not traced. A command sent outside any span is not recorded unless
``root_commands=True``: a worker polling its queue, a broker's bookkeeping (Celery's kombu on a
redis broker sends dozens of commands per task) or a health check would each make a trace of one
span. See docs/redis.md for the tags.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from tomograph._cache import BoundedCache, memoize
from tomograph.context import CURRENT_SPAN, SUPPRESS_TRACING
from tomograph.integrations.patching import is_patched, patch_method, unpatch_method
from tomograph.model import SpanKind, TagValue, endpoint_for
from tomograph.span import CURRENT, Span
from tomograph.tracer import Tracer, get_tracer

__all__ = ["MAX_LISTED_COMMANDS", "instrument", "patch", "patched", "unpatch"]

#: How many command names a pipeline span lists in ``db.redis.commands`` (the count is exact).
MAX_LISTED_COMMANDS = 32
#: Longest command name or key kept; longer ones (never seen from redis-py's own methods,
#: only from ``execute_command`` with made-up names) are cut.
MAX_NAME_LENGTH = 64
MAX_KEY_LENGTH = 256

_CLIENT = SpanKind.CLIENT
#: True while a command of this context is being traced: a client instrumented twice (or a
#: subclass that calls ``super().execute_command``) gives one span, not two.
_in_command: ContextVar[bool] = ContextVar("tomograph_redis_command", default=False)


class _Options:
    """What one ``instrument()`` call (or ``patch()``) asked for."""

    __slots__ = ("record_keys", "root_commands", "service_name", "tracer")

    def __init__(
        self,
        tracer: Tracer | None = None,
        record_keys: bool = False,
        service_name: str = "redis",
        root_commands: bool = False,
    ) -> None:
        self.tracer = tracer
        self.record_keys = record_keys
        self.service_name = service_name
        self.root_commands = root_commands


def _new_target(
    service_name: str, host: Any, port: Any, db: Any, path: Any
) -> tuple[dict[str, TagValue], Any]:
    tags: dict[str, TagValue] = {"db.system": "redis"}
    if isinstance(db, int):
        tags["db.redis.database_index"] = db
    if isinstance(path, str) and path:
        tags["server.address"] = path  # a unix socket
        return tags, endpoint_for(service_name, None, None)
    port = port if isinstance(port, int) else None
    if isinstance(host, str) and host:
        tags["server.address"] = host
    if port:
        tags["server.port"] = port
    return tags, endpoint_for(service_name, host if isinstance(host, str) else None, port)


# A process talks to few servers: tags and endpoint are built once per (host, port, db).
_target = memoize(_new_target, 256)


# The usual case, by connection pool: one dict lookup per command instead of five reads.
_targets_of_pools: weakref.WeakKeyDictionary[Any, tuple[dict[str, TagValue], Any]] = (
    weakref.WeakKeyDictionary()
)


def _target_of(client: Any, service_name: str) -> tuple[dict[str, TagValue], Any]:
    pool = getattr(client, "connection_pool", None)
    if service_name == "redis" and pool is not None:
        try:
            return _targets_of_pools[pool]
        except (KeyError, TypeError):
            pass
        target = _new_target_of(pool, service_name)
        try:
            _targets_of_pools[pool] = target
        except TypeError:
            pass  # a pool that cannot be weakly referenced: not cached
        return target
    return _new_target_of(pool, service_name)


def _new_target_of(pool: Any, service_name: str) -> tuple[dict[str, TagValue], Any]:
    kwargs = getattr(pool, "connection_kwargs", None)
    if not isinstance(kwargs, dict):
        return _target(service_name, None, None, None, None)  # a cluster: the node varies
    return _target(
        service_name, kwargs.get("host"), kwargs.get("port"), kwargs.get("db"), kwargs.get("path")
    )


def _text(value: Any, limit: int) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        # Only the head is decoded: a 10 MB argument costs no more than a short one.
        text = bytes(value[: limit * 4]).decode("utf-8", "replace")
    elif isinstance(value, str):
        text = value
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# redis-py sends a few hundred distinct command names: each is upper-cased once.
_names: BoundedCache[Any, str] = BoundedCache(512)


def _command_name(args: Sequence[Any]) -> str:
    if not args:
        return "COMMAND"
    first = args[0]
    try:
        return _names[first]
    except (KeyError, TypeError):
        pass
    name = _text(first, MAX_NAME_LENGTH).upper()
    if isinstance(first, str | bytes) and len(first) <= MAX_NAME_LENGTH:
        _names[first] = name  # (a long made-up name is not kept alive by the cache)
    return name


#: Commands whose first argument is no key but a secret (AUTH's password, or its user name
#: followed by the password): never recorded, even with ``record_keys``.
_NO_KEY = frozenset({"AUTH"})


def _start(client: Any, options: _Options, name: str, args: Sequence[Any] | None) -> Span | None:
    if _in_command.get() or SUPPRESS_TRACING.get():
        return None
    if not options.root_commands and CURRENT_SPAN.get() is None:
        return None  # not part of a trace: see the module's docstring
    tags, remote = _target_of(client, options.service_name)
    span = Span(options.tracer or get_tracer(), name, _CLIENT, tags, CURRENT, None, remote)
    if span.sampled:
        span.tags["db.operation"] = name
        if args is not None and options.record_keys and len(args) > 1 and name not in _NO_KEY:
            span.tags["db.redis.key"] = _text(args[1], MAX_KEY_LENGTH)
    return span


def _pipeline_commands(pipeline: Any) -> list[Any]:
    # Where the queued commands are: ``command_stack`` for the plain pipelines; the cluster
    # pipelines of redis-py 6+ keep them in their execution strategy (older ones, in
    # ``command_stack`` or ``_command_stack``).
    strategy = getattr(pipeline, "_execution_strategy", None)
    for stack in (
        getattr(pipeline, "command_stack", None),
        getattr(strategy, "command_queue", None),
        getattr(strategy, "_command_queue", None),
        getattr(pipeline, "_command_stack", None),
    ):
        if isinstance(stack, list) and stack:
            return stack
    return []


def _start_pipeline(pipeline: Any, options: _Options) -> Span | None:
    # The asyncio pipeline says ``is_transaction`` (its ``transaction`` is a method).
    transaction = getattr(pipeline, "is_transaction", None)
    if transaction is None:
        transaction = getattr(pipeline, "transaction", False)
    transaction = transaction is True or getattr(pipeline, "explicit_transaction", False) is True
    name = "MULTI" if transaction else "PIPELINE"
    span = _start(pipeline, options, name, None)
    if span is not None and span.sampled:
        commands = _pipeline_commands(pipeline)
        names = []
        for command in commands[:MAX_LISTED_COMMANDS]:
            args = command[0] if isinstance(command, tuple) else getattr(command, "args", ())
            names.append(_command_name(args))
        span.tags["db.redis.pipeline_length"] = len(commands)
        span.tags["db.redis.commands"] = names
    return span


def _finish(span: Span, error: BaseException | None = None, results: Any = None) -> None:
    if error is not None:
        span.record_exception(error)
    elif isinstance(results, list):
        # raise_on_error=False: failed commands come back as exceptions among the results.
        failed = [result for result in results if isinstance(result, Exception)]
        if failed:
            span.record_exception(failed[0])
            span.tag("db.redis.failed_commands", len(failed))
    span.finish()


# -- wrappers: ``original`` is called as ``original(client, *args, **kwargs)`` -----------------


def _traced_command(original: Callable[..., Any], options: _Options) -> Callable[..., Any]:
    def execute_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        span = _start(self, options, _command_name(args), args)
        if span is None:
            return original(self, *args, **kwargs)
        token = _in_command.set(True)
        try:
            result = original(self, *args, **kwargs)
        except BaseException as error:
            _finish(span, error)
            raise
        finally:
            _in_command.reset(token)
        span.finish()
        return result

    return functools.wraps(original)(execute_command)


def _traced_async_command(original: Callable[..., Any], options: _Options) -> Callable[..., Any]:
    async def execute_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        span = _start(self, options, _command_name(args), args)
        if span is None:
            return await original(self, *args, **kwargs)
        token = _in_command.set(True)
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as error:
            _finish(span, error)
            raise
        finally:
            _in_command.reset(token)
        span.finish()
        return result

    return functools.wraps(original)(execute_command)


def _traced_execute(original: Callable[..., Any], options: _Options) -> Callable[..., Any]:
    def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        span = _start_pipeline(self, options)
        if span is None:
            return original(self, *args, **kwargs)
        token = _in_command.set(True)
        try:
            results = original(self, *args, **kwargs)
        except BaseException as error:
            _finish(span, error)
            raise
        finally:
            _in_command.reset(token)
        _finish(span, None, results)
        return results

    return functools.wraps(original)(execute)


def _traced_async_execute(original: Callable[..., Any], options: _Options) -> Callable[..., Any]:
    async def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        span = _start_pipeline(self, options)
        if span is None:
            return await original(self, *args, **kwargs)
        token = _in_command.set(True)
        try:
            results = await original(self, *args, **kwargs)
        except BaseException as error:
            _finish(span, error)
            raise
        finally:
            _in_command.reset(token)
        _finish(span, None, results)
        return results

    return functools.wraps(original)(execute)


Wrap = Callable[[Callable[..., Any], _Options], Callable[..., Any]]

#: What patch() replaces: (class, method, wrapper). Pipelines have their own execute_command
#: (it queues), so only the commands they run at once (after WATCH) are command spans.
_PATCHES: list[tuple[type, str, Wrap]] = [
    (redis.Redis, "execute_command", _traced_command),
    (redis.client.Pipeline, "execute", _traced_execute),
    (redis.client.Pipeline, "immediate_execute_command", _traced_command),
    (redis.asyncio.Redis, "execute_command", _traced_async_command),
    (redis.asyncio.client.Pipeline, "execute", _traced_async_execute),
    (redis.asyncio.client.Pipeline, "immediate_execute_command", _traced_async_command),
    (redis.cluster.RedisCluster, "execute_command", _traced_command),
    (redis.cluster.ClusterPipeline, "execute", _traced_execute),
    (redis.asyncio.cluster.RedisCluster, "execute_command", _traced_async_command),
    (redis.asyncio.cluster.ClusterPipeline, "execute", _traced_async_execute),
]


def _with_options(
    wrap: Wrap, options: _Options, original: Callable[..., Any]
) -> Callable[..., Any]:
    return wrap(original, options)


def patch(*, root_commands: bool = False) -> bool:
    """Trace every redis-py client, existing ones included; False if already done.

    Commands sent outside any span are recorded only with ``root_commands=True``.

    >>> patch() or patched()
    True
    >>> unpatch()
    True
    """
    if patched():
        return False
    options = _Options(root_commands=root_commands)
    for owner, name, wrap in _PATCHES:
        patch_method(owner, name, functools.partial(_with_options, wrap, options))
    return True


def unpatch() -> bool:
    """Undo :func:`patch`; False if it was not in effect."""
    undone = False
    for owner, name, _ in _PATCHES:
        undone = unpatch_method(owner, name) or undone
    return undone


def patched() -> bool:
    """True while :func:`patch` is in effect."""
    return is_patched(redis.Redis, "execute_command")


def _bound(wrap: Wrap, options: _Options, instance: Any) -> Callable[[Any], Any]:
    # patch_method hands an instance's bound method; the wrappers expect the client first.
    def make(bound_method: Callable[..., Any]) -> Any:
        def unbound(_client: Any, *args: Any, **kwargs: Any) -> Any:
            return bound_method(*args, **kwargs)

        return functools.partial(wrap(functools.wraps(bound_method)(unbound), options), instance)

    return make


def _instrument_pipeline(pipeline: Any, options: _Options) -> Any:
    asynchronous = isinstance(pipeline, redis.asyncio.client.Pipeline | _AsyncClusterPipeline)
    run = _traced_async_execute if asynchronous else _traced_execute
    patch_method(pipeline, "execute", _bound(run, options, pipeline))
    if hasattr(pipeline, "immediate_execute_command"):
        command = _traced_async_command if asynchronous else _traced_command
        patch_method(pipeline, "immediate_execute_command", _bound(command, options, pipeline))
    return pipeline


_AsyncClusterPipeline = redis.asyncio.cluster.ClusterPipeline


def instrument(
    client: Any,
    *,
    tracer: Tracer | None = None,
    record_keys: bool = False,
    service_name: str = "redis",
    root_commands: bool = False,
) -> Any:
    """Trace the commands of one client (sync, asyncio or cluster) and of the pipelines it makes.

    ``record_keys=True`` adds each command's first argument (the key, for data commands) as
    ``db.redis.key``; values are never recorded. ``service_name`` names the server in the
    trace (the remote endpoint). Commands sent outside any span are recorded only with
    ``root_commands=True``. Returns the client.

    >>> import redis
    >>> client = instrument(redis.Redis(port=1))
    """
    options = _Options(tracer, record_keys, service_name, root_commands)
    asynchronous = isinstance(client, redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster)
    command = _traced_async_command if asynchronous else _traced_command
    patch_method(client, "execute_command", _bound(command, options, client))

    def make_pipeline(pipeline_method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(pipeline_method)
        def pipeline(*args: Any, **kwargs: Any) -> Any:
            return _instrument_pipeline(pipeline_method(*args, **kwargs), options)

        return pipeline

    patch_method(client, "pipeline", make_pipeline)
    return client
