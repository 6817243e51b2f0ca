"""tomograph.opentracing passes the compatibility harness that ships with ``opentracing``."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from opentracing.harness.api_check import APICompatibilityCheckMixin
from opentracing.harness.scope_check import ScopeCompatibilityCheckMixin

import tomograph
from tomograph.opentracing import ContextVarsScopeManager, Span, ThreadLocalScopeManager, Tracer
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
    tracer = Tracer(tomograph.Tracer("svc"))
    assert isinstance(tracer.scope_manager, ThreadLocalScopeManager)
    assert isinstance(tracer.start_span("x"), Span)
