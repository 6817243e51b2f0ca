"""tomograph's public surface, written down: a change to it is a decision, not an accident.

:data:`PUBLIC_API` is the ``__all__`` of the package root, of every public subpackage, and of
the modules the README and docs/ tell users to import from, as sorted literal lists. A name added
or removed fails the test until the list here is edited on purpose (and CHANGELOG.md says so).
Every pinned name must exist and be documented.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from types import ModuleType

import pytest

SOURCE_ROOT = Path(__file__).resolve().parents[1] / "src"

PUBLIC_API: dict[str, list[str]] = {
    # --- the package root and every public subpackage ---
    "tomograph": [
        "ConfigurationError",
        "Endpoint",
        "Middleware",
        "Note",
        "Span",
        "SpanKind",
        "TraceContext",
        "Tracer",
        "TracingError",
        "__version__",
        "add_trace_info_header",
        "annotate",
        "configure",
        "current_span",
        "flush",
        "get_trace_info",
        "get_tracer",
        "sampling",
        "span",
        "start",
        "start_http",
        "start_span",
        "stats",
        "stop",
        "tag",
        "traced",
    ],
    "tomograph.encoding": [],  # its modules are the surface: one per wire format
    "tomograph.collector": [
        "CollectorSettings",
        "QueryRequest",
        "SpanStore",
        "SqliteSpanStore",
        "create_app",
        "default_db_path",
        "serve",
    ],
    "tomograph.eventlet": ["api", "patcher"],
    "tomograph.integrations": [
        "INTEGRATIONS",
        "Integration",
        "PATCHABLE",
        "patch",
        "patch_all",
        "patch_when_imported",
        "select",
        "unpatch_all",
    ],
    "tomograph.opentelemetry": [
        "Propagator",
        "RuntimeContext",
        "Span",
        "SpanLimits",
        "Tracer",
        "TracerProvider",
        "install",
        "patch",
        "patched",
        "provider_from_environment",
        "uninstall",
        "unpatch",
    ],
    "tomograph.opentracing": [
        "ContextVarsScopeManager",
        "Span",
        "SpanContext",
        "ThreadLocalScopeManager",
        "Tracer",
    ],
    "tomograph.propagation": [
        "Propagator",
        "default_propagator",
        "extract",
        "inject",
        "set_default_propagator",
    ],
    "tomograph.reporting": ["LogBackend", "MemoryBackend"],
    "tomograph.tornado": [
        "DivakLoggerAdapter",
        "HeaderRelayTransformer",
        "HttpClientMixin",
        "Logger",
        "ProbabilisticSampler",
        "Recorder",
        "RequestIdPropagator",
        "RequestTracker",
        "ZipkinPropagation",
        "ZipkinReporter",
    ],
    # --- modules the README and docs/ tell users to import from ---
    "tomograph.context": [
        "ROOT_EXTRA",
        "SUPPRESS_TRACING",
        "attach",
        "current_span",
        "detach",
        "suppress_tracing",
    ],
    "tomograph.sampling": [
        "AlwaysSampler",
        "NeverSampler",
        "ParentBasedSampler",
        "ProbabilisticSampler",
        "RateLimitedSampler",
        "Sampler",
        "always",
        "constant_root_decision",
        "never",
        "parent_based",
        "probabilistic",
        "rate_limited",
        "undo_root_sample",
    ],
    "tomograph.propagation.baggage": [
        "BAGGAGE",
        "BaggageEntry",
        "adopt_baggage",
        "extract",
        "format_baggage",
        "get_baggage",
        "get_baggage_entries",
        "get_baggage_item",
        "inject",
        "is_sendable",
        "is_valid_key",
        "merge_baggage",
        "parse_baggage",
        "percent_decode",
        "remove_baggage",
        "replace_baggage",
        "set_baggage",
        "with_baggage",
    ],
    "tomograph.integrations.aiohttp": [
        "REQUEST_KEY",
        "TracingMiddleware",
        "TracingTraceConfig",
        "patch",
        "patched",
        "setup",
        "unpatch",
    ],
    "tomograph.integrations.asgi": [
        "SCOPE_KEY",
        "TracingMiddleware",
        "WEBSOCKET_CLOSE_CODES_IN_ERROR",
    ],
    "tomograph.integrations.django": [
        "StatementTracer",
        "TracingMiddleware",
        "patch",
        "patched",
        "trace_database",
        "unpatch",
        "untrace_database",
    ],
    "tomograph.integrations.celery": ["CeleryTracing", "patch", "patched", "unpatch"],
    "tomograph.integrations.flask": ["ENDPOINT_TAG", "Tracing", "patch", "patched", "unpatch"],
    "tomograph.integrations.http_client": ["ClientCall", "begin"],
    "tomograph.integrations.http_server": [
        "EXTRACT",
        "HttpServerHandler",
        "ServerMiddlewareBase",
        "enclosing_server_span",
    ],
    "tomograph.integrations.http_status": [
        "CLIENT_ERRORS_FROM",
        "SERVER_ERRORS_FROM",
        "record_status",
    ],
    "tomograph.integrations.patching": [
        "is_patched",
        "patch_method",
        "unpatch_method",
        "unpatched",
    ],
    "tomograph.integrations.httpx": [
        "AsyncTracingTransport",
        "TracingTransport",
        "patch",
        "patched",
        "unpatch",
    ],
    "tomograph.integrations.logging": [
        "SpanNoteHandler",
        "TraceIdFilter",
        "install",
        "install_note_handler",
        "installed",
        "patch",
        "patched",
        "structlog_processor",
        "uninstall",
        "unpatch",
    ],
    "tomograph.integrations.requests": ["instrument_session", "patch", "patched", "unpatch"],
    "tomograph.integrations.psycopg": [
        "instrument_connection",
        "patch",
        "patched",
        "statement_text",
        "unpatch",
    ],
    "tomograph.integrations.psycopg2": ["instrument_connection", "patch", "patched", "unpatch"],
    "tomograph.integrations.redis": [
        "MAX_LISTED_COMMANDS",
        "instrument",
        "patch",
        "patched",
        "unpatch",
    ],
    "tomograph.integrations.sqlalchemy": [
        "ClassicListener",
        "Instrumentation",
        "StatementRecorder",
        "after_execute",
        "before_execute",
        "dbapi_error",
        "instrument",
        "patch",
        "patched",
        "uninstrument",
        "unpatch",
    ],
    "tomograph.integrations.urllib": [
        "TracingHTTPConnection",
        "TracingHTTPHandler",
        "TracingHTTPSConnection",
        "TracingHTTPSHandler",
        "build_opener",
        "patch",
        "patch_connection_class",
        "patched",
        "unpatch",
        "unpatch_connection_class",
    ],
    "tomograph.integrations.starlette": ["UNTRACED", "patch", "patched", "unpatch"],
    "tomograph.integrations.urllib3": ["instrument", "patch", "patched", "unpatch"],
    "tomograph.integrations.wsgi": ["ENVIRON_KEY", "Middleware", "route_of"],
    "tomograph.eventlet.api": ["put_annotation", "put_key_value"],
    "tomograph.eventlet.patcher": ["disable_trace_patch", "enable_trace_patch", "is_enabled"],
    "tomograph.opentracing.binary": [
        "BinaryFormatError",
        "MAX_BAGGAGE_BYTES",
        "MAX_BAGGAGE_ITEMS",
        "VERSION",
        "decode",
        "encode",
    ],
}

# Public constants documented nowhere yet (no ``#:`` line, no mention in the module docstring), as
# "module.NAME". The test fails once one of them is documented, so that its entry goes.
UNDOCUMENTED_CONSTANTS: set[str] = {
    "tomograph.opentracing.binary.VERSION",
    "tomograph.propagation.baggage.BAGGAGE",
}

UPDATE_DELIBERATELY = (
    "If the change is deliberate, update PUBLIC_API in tests/test_public_api.py and say what "
    "changed for users in CHANGELOG.md."
)


def public_packages() -> list[str]:
    """Every package under src/tomograph with no private component in its name."""
    names = []
    for init in sorted((SOURCE_ROOT / "tomograph").rglob("__init__.py")):
        parts = init.parent.relative_to(SOURCE_ROOT).parts
        if not any(part.startswith("_") for part in parts):
            names.append(".".join(parts))
    return names


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


def constant_documentation(source: str, name: str) -> bool | tuple[str, str]:
    """Whether ``source`` documents its constant ``name``: a ``#:`` line right above the
    assignment or a string right after it (as Sphinx reads them), or the module docstring naming
    it (``:data:`NAME``` or ````NAME````). For a name the module imports instead: (module, name)
    to look in."""
    lines = source.splitlines()
    tree = ast.parse(source)
    docstring = ast.get_docstring(tree) or ""
    if f":data:`{name}`" in docstring or f"``{name}``" in docstring:
        return True
    for index, node in enumerate(tree.body):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
            following = tree.body[index + 1] if index + 1 < len(tree.body) else None
            return above.startswith("#:") or (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            )
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return (node.module, alias.name)
    return False


def _constant_is_documented(module: ModuleType, name: str) -> bool:
    found = constant_documentation(inspect.getsource(module), name)
    if isinstance(found, tuple):
        return _constant_is_documented(_module(found[0]), found[1])
    return found


def is_documented(module: ModuleType, name: str) -> bool:
    """Modules, classes and functions by their own docstring; constants as Sphinx reads them;
    dunders such as ``__version__`` by convention."""
    if name.startswith("__") and name.endswith("__"):
        return True
    value = getattr(module, name)
    if inspect.ismodule(value) or inspect.isclass(value) or inspect.isroutine(value):
        return bool((value.__doc__ or "").strip())
    if callable(value):  # an instance used as a function: its class says what it does
        return bool((type(value).__doc__ or "").strip())
    return _constant_is_documented(module, name)


def test_every_public_package_is_pinned() -> None:
    unpinned = [name for name in public_packages() if name not in PUBLIC_API]
    assert unpinned == [], (
        f"public packages whose names are not pinned: {unpinned}. Add each package's sorted "
        f"__all__ to PUBLIC_API. {UPDATE_DELIBERATELY}"
    )


@pytest.mark.parametrize("module_name", sorted(PUBLIC_API))
def test_the_public_names_are_the_pinned_ones(module_name: str) -> None:
    module = _module(module_name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module_name} has no __all__"
    assert len(exported) == len(set(exported)), f"{module_name}.__all__ repeats a name"
    added = sorted(set(exported) - set(PUBLIC_API[module_name]))
    removed = sorted(set(PUBLIC_API[module_name]) - set(exported))
    assert (added, removed) == ([], []), (
        f"the public surface of {module_name} changed: added {added}, removed {removed}. "
        + UPDATE_DELIBERATELY
    )


@pytest.mark.parametrize("module_name", sorted(PUBLIC_API))
def test_the_pinned_lists_are_sorted_so_a_diff_shows_the_change(module_name: str) -> None:
    assert PUBLIC_API[module_name] == sorted(PUBLIC_API[module_name])


@pytest.mark.parametrize("module_name", sorted(PUBLIC_API))
def test_every_public_name_exists_and_is_documented(module_name: str) -> None:
    module = _module(module_name)
    missing = [name for name in PUBLIC_API[module_name] if not hasattr(module, name)]
    assert missing == [], f"{module_name}.__all__ names what the module does not have: {missing}"
    undocumented = [
        name
        for name in PUBLIC_API[module_name]
        if f"{module_name}.{name}" not in UNDOCUMENTED_CONSTANTS and not is_documented(module, name)
    ]
    assert undocumented == [], (
        f"public names of {module_name} with no docstring: {undocumented} (a constant is "
        "documented by a `#:` line above it or by the module docstring naming it)"
    )


def test_the_undocumented_constants_list_only_holds_undocumented_pinned_names() -> None:
    stale = []
    for qualified in sorted(UNDOCUMENTED_CONSTANTS):
        module_name, _, name = qualified.rpartition(".")
        pinned = name in PUBLIC_API.get(module_name, [])
        if not pinned or is_documented(_module(module_name), name):
            stale.append(qualified)
    assert stale == [], (
        f"documented now or no longer public; remove from UNDOCUMENTED_CONSTANTS: {stale}"
    )


def test_a_constant_is_documented_by_a_comment_line_or_a_string_after_it() -> None:
    source = (
        "from tomograph.model import KINDS\n"
        "#: How many.\n"
        "LIMIT = 1\n"
        "NAME: str = 'x'\n"
        "'What it is.'\n"
        "# a plain comment is no documentation\n"
        "BARE = 2\n"
        "NAMED = 3\n"
    )
    assert constant_documentation('"""At most :data:`NAMED` items."""\n' + source, "NAMED") is True
    assert constant_documentation(source, "LIMIT") is True
    assert constant_documentation(source, "NAME") is True
    assert constant_documentation(source, "BARE") is False
    assert constant_documentation(source, "KINDS") == ("tomograph.model", "KINDS")
    assert constant_documentation(source, "ABSENT") is False
