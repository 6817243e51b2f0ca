"""tomograph.opentracing passes the compatibility harness that ships with ``opentracing``."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from opentracing.harness.api_check import APICompatibilityCheckMixin
from opentracing.harness.scope_check import ScopeCompatibilityCheckMixin

import tomograph
from tomograph.opentracing import ContextVarsScopeManager, ThreadLocalScopeManager, Tracer
from tomograph.opentracing.scope_managers import _ACTIVE
from tomograph.reporting.memory import MemoryBackend


@pytest.fixture(autouse=True)
def no_active_scope() -> Any:
    """Each check starts with no active scope: the harness leaves some scopes open on purpose
    (test_close_wrong_order), and a context variable outlives a test."""
    token = _ACTIVE.set(None)
    yield
    _ACTIVE.reset(token)


def _is_parent(parent: Any, span: Any) -> bool:
    if parent is None:
        return span.tomograph_span.parent_id is None
    return (
        span.tomograph_span.parent_id == parent.tomograph_span.span_id
        and span.tomograph_span.trace_id == parent.tomograph_span.trace_id
    )


class TestAPIWithThreadLocalScopes(APICompatibilityCheckMixin):
    def tracer(self) -> Tracer:
        return Tracer(tomograph.Tracer("harness", backends=[MemoryBackend()]))

    def check_baggage_values(self) -> bool:
        return True

    def check_scope_manager(self) -> bool:
        return True

    def is_parent(self, parent: Any, span: Any) -> bool:
        return _is_parent(parent, span)


class TestAPIWithContextVarsScopes(TestAPIWithThreadLocalScopes):
    def tracer(self) -> Tracer:
        return Tracer(
            tomograph.Tracer("harness", backends=[MemoryBackend()]),
            scope_manager=ContextVarsScopeManager(),
        )


class TestContextVarsScopeManager(ScopeCompatibilityCheckMixin):
    def scope_manager(self) -> ContextVarsScopeManager:
        return ContextVarsScopeManager()


class TestContextVarsScopeManagerInATask(ScopeCompatibilityCheckMixin):
    """The same checks run inside an asyncio task, as asyncio applications would use it."""

    def scope_manager(self) -> ContextVarsScopeManager:
        return ContextVarsScopeManager()

    def run_test(self, test_fn: Any) -> None:
        async def main() -> None:
            test_fn()

        asyncio.run(main())


class TestContextVarsScopeManagerInAThread(ScopeCompatibilityCheckMixin):
    def scope_manager(self) -> ContextVarsScopeManager:
        return ContextVarsScopeManager()

    def run_test(self, test_fn: Any) -> None:
        errors: list[BaseException] = []

        def target() -> None:
            try:
                test_fn()
            except BaseException as error:
                errors.append(error)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if errors:
            raise errors[0]


class TestThreadLocalScopeManager(ScopeCompatibilityCheckMixin):
    def scope_manager(self) -> ThreadLocalScopeManager:
        return ThreadLocalScopeManager()


def test_default_scope_manager_is_thread_local() -> None:
    memory = MemoryBackend()
    tracer = Tracer(tomograph.Tracer("svc", backends=[memory]))
    seen_elsewhere: list[Any] = []
    with tracer.start_active_span("main") as scope:
        other = threading.Thread(target=lambda: seen_elsewhere.append(tracer.active_span))
        other.start()
        other.join()
        assert tracer.active_span is scope.span
    assert seen_elsewhere == [None]  # another thread sees none

    async def leave_a_scope_open() -> Any:
        return tracer.start_active_span("in a task")

    async def run() -> tuple[Any, Any]:
        scope = await asyncio.create_task(leave_a_scope_open())
        seen = tracer.active_span
        scope.close()
        return scope, seen

    # Thread-local, not per context: what a task of this thread activates is active here too
    # (ContextVarsScopeManager would keep it inside the task).
    scope, seen_after_the_task = asyncio.run(run())
    assert seen_after_the_task is scope.span
    assert tracer.active_span is None
    assert memory.names() == ["main", "in a task"]  # tomograph spans, reported on close
