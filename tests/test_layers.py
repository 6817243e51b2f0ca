"""Imports run one way, down the layers, and no package reaches into another's private parts.

Every module under ``src/tomograph`` is parsed (never imported) and each of its imports is
checked against :data:`LAYERS`:

(a) a module may import modules of its own layer and of the layers below it, never above;
(b) a private module (``tomograph.integrations._endpoint``) or a private name
    (``from tomograph.integrations.urllib import _traced_request``) belongs to its package:
    another package that needs it asks for it to move down a layer, into a public module;
(c) the collector never imports reporting: it decodes with the codec layer, as senders encode
    with it, and a collector that imports the sending side drags the tracer's transport along.

What counts as an import: every ``import`` and ``from ... import`` anywhere in the module,
inside functions too (a lazy import still couples the modules, it only delays the cost), and
under ``if TYPE_CHECKING:`` too (a type annotation that names an upper layer makes the lower
layer's meaning depend on it, and the next edit turns it into a runtime import). A literal
``"tomograph.module:attribute"`` string is an import done later (the lazy tables of the package
root and of ``config``), and so is ``importlib.import_module("tomograph.module")``.

:data:`KNOWN_VIOLATIONS` lists the violations the code has today, each with the change that
removes it. The test fails on a violation not in the list, and on an entry that no longer
happens, so the list only shrinks.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "tomograph"

# The layers, bottom to top. An entry names a module or a package (the package and everything
# under it); the most specific entry wins. The package root ``tomograph`` is the one entry that
# means the module alone (its ``__init__``), not the tree. A module of the tree that no entry
# covers fails the test: every new module gets a deliberate place.
LAYERS: list[tuple[str, list[str]]] = [
    (
        "foundation",  # plain data, ids, time, error types, text: no I/O, leaves of the graph
        [
            "tomograph.model",
            "tomograph.ids",
            "tomograph.clock",
            "tomograph.errors",
            "tomograph.text",
            # URLs without credentials and URL query options: reporting reads its backends'
            # options from them, integrations record URLs with them.
            "tomograph.urls",
            "tomograph._cache",  # the one bounded cache
            # which span hot path runs, compiled or pure Python: chosen before the first span
            "tomograph._accelerator",
            "tomograph._speedups",  # that compiled hot path (C, built where a compiler exists)
            "tomograph._version",  # written once, read by the root and the OTLP exporter
        ],
    ),
    (
        "core",  # the current span, the span, samplers, the tracer
        [
            "tomograph.context",
            "tomograph.span",
            "tomograph.sampling",
            "tomograph.tracer",
            # The interface the tracer hands finished spans to: it belongs to the tracer that
            # calls it (reporting implements it, the tracer never learns about reporting).
            "tomograph.backend",
        ],
    ),
    (
        "propagation",  # trace context in headers: one module per header format
        ["tomograph.propagation"],
    ),
    (
        "encoding",  # spans on the wire: one module per wire format, encode and decode, pure
        ["tomograph.encoding"],
    ),
    (
        "reporting",  # backends and the background transport that sends encoded spans
        ["tomograph.reporting"],
    ),
    (
        # configure() assembles a tracer from sampling, propagation and reporting backends made
        # from URLs, and it is the one reader of the environment: it names all of them, so it
        # sits above reporting. The default tracer itself lives in the tracer module, so the
        # layers below never import config; facades that configure (eventlet's patcher) sit above.
        "config",
        ["tomograph.config"],
    ),
    (
        "integrations+facades",  # adapters to libraries, facades of other APIs, configure()
        [
            "tomograph.integrations",
            "tomograph.classic",
            "tomograph.opentracing",
            "tomograph.opentelemetry",
            "tomograph.eventlet",
            "tomograph.tornado",
            # The package root is the public facade: it re-exports the classic API and config
            # and imports integrations (Middleware) on first use. Nothing below it may import
            # it, not even for __version__.
            "tomograph",
        ],
    ),
    (
        "collector",  # the embedded Zipkin-compatible server, its storage and its web page
        ["tomograph.collector", "tomograph.ui"],
    ),
    (
        "commands",  # what the ``tomograph`` command runs; nothing in the library imports it
        [
            "tomograph.cli",
            "tomograph.__main__",  # ``python -m tomograph``: runs the cli
            # What ``tomograph run`` starts in the programs it runs (their sitecustomize).
            "tomograph._bootstrap",
            "tomograph.demo",
            "tomograph.demo_services",
            # The terminal waterfall renders spans for ``tomograph demo``/``serve`` output: a
            # view for the commands, so the library never depends on terminal rendering.
            "tomograph.waterfall",
        ],
    ),
]

#: Packages that must never import another, whatever their layers: (importer, imported, why).
FORBIDDEN: list[tuple[str, str, str]] = [
    (
        "tomograph.collector",
        "tomograph.reporting",
        "the collector decodes with the codec layer; it never imports the sending side",
    ),
]

# Violations allowed for now, as (importer, what it imports) -> the change that will remove it.
# A private name is written ``module.name``. None is left: a wrong-way import is fixed, not
# listed. The test names an entry that no longer happens, so the list cannot outlive its cause.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


# --- the checker -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One import a module makes: what it names, where, and whether only for type checking."""

    target: str  # a module, or ``module.name`` for a name imported from a module
    module: str  # the module the import loads (``target`` without a trailing name)
    line: int
    typing_only: bool = False


@dataclass(frozen=True)
class Violation:
    importer: str
    imported: str
    line: int
    rule: str  # what is wrong, in words

    @property
    def key(self) -> tuple[str, str]:
        return (self.importer, self.imported)

    def __str__(self) -> str:
        return f"{self.importer}:{self.line} imports {self.imported}: {self.rule}"


def module_name(path: Path, root: Path = SOURCE_ROOT) -> str:
    """``src/tomograph/reporting/zipkin.py`` -> ``tomograph.reporting.zipkin``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules(root: Path = SOURCE_ROOT) -> dict[str, str]:
    """Every module of the package, by name, with its source text."""
    return {
        module_name(path, root): path.read_text(encoding="utf-8")
        for path in sorted((root / PACKAGE).rglob("*.py"))
    }


def _is_package(name: str, modules: Iterable[str]) -> bool:
    return any(other.startswith(name + ".") for other in modules)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _lazy_target(node: ast.AST) -> str | None:
    """The module a literal lazy import names: ``"tomograph.x:attr"`` or import_module("...")."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        module, colon, attribute = node.value.partition(":")
        if colon and module.startswith(PACKAGE) and attribute.replace(".", "").isidentifier():
            return module
    if (
        isinstance(node, ast.Call)
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and node.args[0].value.startswith(PACKAGE)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            or (isinstance(node.func, ast.Name) and node.func.id in {"import_module", "__import__"})
        )
    ):
        return node.args[0].value
    return None


def imports_of(name: str, source: str, modules: Iterable[str]) -> list[Import]:
    """The imports of tomograph modules that module ``name`` makes, wherever they are written."""
    modules = set(modules)
    package = name if _is_package(name, modules) or name == PACKAGE else name.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, typing_only)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    found.append(Import(alias.name, alias.name, node.lineno, typing_only))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            if origin == PACKAGE or origin.startswith(PACKAGE + "."):
                for alias in node.names:
                    submodule = f"{origin}.{alias.name}"
                    if submodule in modules:
                        found.append(Import(submodule, submodule, node.lineno, typing_only))
                    else:
                        found.append(Import(submodule, origin, node.lineno, typing_only))
        else:
            lazy = _lazy_target(node)
            if lazy is not None:
                found.append(Import(lazy, lazy, getattr(node, "lineno", 0), typing_only))
        for child in ast.iter_child_nodes(node):
            visit(child, typing_only)

    visit(ast.parse(source), False)
    return found


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of the layer ``module`` belongs to, or None if none says."""
    best: tuple[int, int] | None = None  # (length of the entry, layer)
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            covers = module == entry or (entry != PACKAGE and module.startswith(entry + "."))
            if covers and (best is None or len(entry) > best[0]):
                best = (len(entry), index)
    return None if best is None else best[1]


def _private_part(target: str) -> int | None:
    """The index of the first private component of a dotted name (dunders are public)."""
    for index, part in enumerate(target.split(".")):
        if part.startswith("_") and not (part.startswith("__") and part.endswith("__")):
            return index
    return None


def _owner(target: str, index: int, modules: set[str]) -> str:
    """Who may use the private thing at ``target``'s component ``index``: the package that holds
    it; for a private name of a module at the top of the tree, that module alone."""
    holder = ".".join(target.split(".")[:index])
    if holder in modules and not _is_package(holder, modules) and holder != PACKAGE:
        parent = holder.rpartition(".")[0]
        return holder if parent == PACKAGE else parent
    return holder


def _inside(module: str, owner: str) -> bool:
    return module == owner or module.startswith(owner + ".")


def check_module(name: str, source: str, modules: Iterable[str]) -> list[Violation]:
    """The layer, privacy and forbidden-pair violations in one module's source."""
    modules = set(modules) | {name}
    importer_layer = layer_of(name)
    violations: list[Violation] = []
    for found in imports_of(name, source, modules):
        typing_note = " (under TYPE_CHECKING: still a coupling)" if found.typing_only else ""
        imported_layer = layer_of(found.module)
        if (
            importer_layer is not None
            and imported_layer is not None
            and imported_layer > importer_layer
        ):
            rule = (
                f"layer {LAYERS[importer_layer][0]!r} imports the higher layer "
                f"{LAYERS[imported_layer][0]!r}{typing_note}"
            )
            violations.append(Violation(name, found.module, found.line, rule))
        private = _private_part(found.target)
        if private is not None:
            owner = _owner(found.target, private, modules)
            if not _inside(name, owner):
                # the private module itself, or the private name in a public module
                private_thing = ".".join(found.target.split(".")[: private + 1])
                rule = f"reaches into a private part of {owner}{typing_note}"
                violations.append(Violation(name, private_thing, found.line, rule))
        for importer, imported, why in FORBIDDEN:
            if _inside(name, importer) and _inside(found.module, imported):
                violations.append(Violation(name, found.module, found.line, why + typing_note))
    return list(dict.fromkeys(violations))  # one line importing two names is one violation


def check_tree(sources: Mapping[str, str]) -> list[Violation]:
    """Every violation in the tree, in module order."""
    return [
        violation
        for name in sorted(sources)
        for violation in check_module(name, sources[name], sources)
    ]


def compare(
    violations: Iterable[Violation], known: Mapping[tuple[str, str], str]
) -> tuple[list[Violation], list[tuple[str, str]]]:
    """The violations the allowlist does not excuse, and the allowlist entries no longer seen."""
    violations = list(violations)
    new = [violation for violation in violations if violation.key not in known]
    seen = {violation.key for violation in violations}
    stale = [key for key in known if key not in seen]
    return new, stale


# --- the rules, on the real tree --------------------------------------------------------------


def test_every_module_has_a_layer() -> None:
    unplaced = [name for name in source_modules() if layer_of(name) is None]
    assert unplaced == [], (
        f"modules with no layer: {unplaced}; add each to LAYERS in tests/test_layers.py, "
        "with the reason for its place if it is not obvious"
    )


def test_imports_run_down_the_layers_and_stay_out_of_other_packages_privates() -> None:
    new, stale = compare(check_tree(source_modules()), KNOWN_VIOLATIONS)
    message = []
    if new:
        message.append(
            "imports that break the layer rules (see docs/architecture.md; move what both "
            "sides need down a layer, into a public module):\n  "
            + "\n  ".join(str(violation) for violation in new)
        )
    if stale:
        message.append(
            "KNOWN_VIOLATIONS entries that no longer happen; delete them from "
            "tests/test_layers.py:\n  " + "\n  ".join(f"{key}" for key in stale)
        )
    assert not message, "\n".join(message)


def test_importing_the_core_and_its_standard_backends_loads_only_the_standard_library() -> None:
    # Zero runtime dependencies in the core: `import tomograph`, propagation, and configuring the
    # backends that need no extra must not load a third-party module. A fresh interpreter without
    # site-packages (-S): a third-party import fails outright, and no .pth file loads anything.
    script = textwrap.dedent(
        """
        import sys
        before = set(sys.modules)
        import tomograph, tomograph.propagation
        tomograph.configure(
            service="svc",
            backends=["log://", "memory://", "statsd://127.0.0.1:1", "zipkin+http://127.0.0.1:1"],
        )
        tomograph.get_tracer().close(0)
        roots = {name.partition(".")[0] for name in set(sys.modules) - before}
        print(sorted(roots - set(sys.stdlib_module_names) - {"tomograph"}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", script],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SOURCE_ROOT), "PATH": ""},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


# --- the checker catches what it is there to catch ---------------------------------------------

SYNTHETIC_TREE = {
    "tomograph",
    "tomograph.model",
    "tomograph.span",
    "tomograph.config",
    "tomograph.classic",
    "tomograph.propagation",
    "tomograph.propagation.w3c",
    "tomograph.reporting",
    "tomograph.reporting._http",
    "tomograph.reporting.zipkin",
    "tomograph.integrations",
    "tomograph.integrations._endpoint",
    "tomograph.integrations.urllib",
    "tomograph.tornado",
    "tomograph.tornado.handlers",
    "tomograph.collector",
    "tomograph.collector.ingest",
}


def _check(name: str, source: str) -> list[str]:
    return [
        str(violation) for violation in check_module(name, textwrap.dedent(source), SYNTHETIC_TREE)
    ]


def test_a_planted_import_up_the_layers_is_caught_with_both_layers_and_the_line() -> None:
    found = _check(
        "tomograph.model",
        """
        import json

        def to_wire(span):
            from tomograph.reporting.zipkin import ZipkinBackend
            return ZipkinBackend
        """,
    )
    assert found == [
        "tomograph.model:5 imports tomograph.reporting.zipkin: "
        "layer 'foundation' imports the higher layer 'reporting'"
    ]


def test_an_upward_import_for_type_checking_only_is_caught_too() -> None:
    found = _check(
        "tomograph.span",
        """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from tomograph.config import Settings
        """,
    )
    assert found == [
        "tomograph.span:4 imports tomograph.config: layer 'core' imports the higher layer "
        "'config' (under TYPE_CHECKING: still a coupling)"
    ]


def test_the_package_root_counts_as_the_facade_not_as_the_whole_tree() -> None:
    assert _check("tomograph.reporting.zipkin", "from tomograph import __version__") == [
        "tomograph.reporting.zipkin:1 imports tomograph: "
        "layer 'reporting' imports the higher layer 'integrations+facades'"
    ]
    assert _check("tomograph.reporting.zipkin", "from tomograph import model") == []
    assert _check("tomograph.classic", "import tomograph.span") == []


def test_relative_and_lazy_string_imports_are_resolved() -> None:
    assert _check("tomograph.propagation.w3c", "from ..reporting import zipkin") == [
        "tomograph.propagation.w3c:1 imports tomograph.reporting.zipkin: "
        "layer 'propagation' imports the higher layer 'reporting'"
    ]
    assert _check("tomograph.span", "LAZY = {'x': 'tomograph.config:configure'}") == [
        "tomograph.span:1 imports tomograph.config: layer 'core' imports the higher layer 'config'"
    ]
    assert _check(
        "tomograph.model", "import importlib\nimportlib.import_module('tomograph.collector')"
    ) == [
        "tomograph.model:2 imports tomograph.collector: layer 'foundation' imports the higher "
        "layer 'collector'"
    ]


def test_another_packages_private_module_or_name_is_caught_its_own_are_not() -> None:
    assert _check("tomograph.tornado.handlers", "from tomograph.integrations import _endpoint") == [
        "tomograph.tornado.handlers:1 imports tomograph.integrations._endpoint: "
        "reaches into a private part of tomograph.integrations"
    ]
    assert _check(
        "tomograph.tornado.handlers", "from tomograph.integrations.urllib import _traced_request"
    ) == [
        "tomograph.tornado.handlers:1 imports tomograph.integrations.urllib._traced_request: "
        "reaches into a private part of tomograph.integrations"
    ]
    assert _check("tomograph.reporting.zipkin", "from tomograph.reporting._http import send") == []
    assert _check("tomograph.integrations.urllib", "from ._endpoint import peer_endpoint") == []
    # a top-level module's private name is that module's own
    assert _check("tomograph.opentracing._tracer", "from tomograph.classic import _endpoint") == [
        "tomograph.opentracing._tracer:1 imports tomograph.classic._endpoint: "
        "reaches into a private part of tomograph.classic"
    ]


def test_the_collector_importing_reporting_is_caught_although_reporting_is_lower() -> None:
    assert _check("tomograph.collector.ingest", "from tomograph.reporting import zipkin") == [
        "tomograph.collector.ingest:1 imports tomograph.reporting.zipkin: the collector decodes "
        "with the codec layer; it never imports the sending side"
    ]


def _layer_name(module: str) -> str | None:
    index = layer_of(module)
    return None if index is None else LAYERS[index][0]


def test_a_module_takes_its_most_specific_entrys_layer_the_root_only_its_own() -> None:
    assert _layer_name("tomograph.encoding.zipkin_v1_thrift") == "encoding"
    assert _layer_name("tomograph.reporting.transport") == "reporting"
    assert _layer_name("tomograph") == "integrations+facades"
    assert _layer_name("tomograph.telemetry") is None  # new: no layer until the table says


def test_imports_within_a_layer_and_down_are_allowed() -> None:
    assert _check("tomograph.tornado.handlers", "from tomograph.integrations import urllib") == []
    assert _check("tomograph.config", "from tomograph.reporting import zipkin") == []
    assert _check("tomograph.collector.ingest", "from tomograph.propagation import w3c") == []


def test_an_allowlist_entry_that_no_longer_happens_is_reported_as_stale() -> None:
    seen = Violation("tomograph.a", "tomograph.b", 3, "up")
    unseen = ("tomograph.c", "tomograph.d")
    new, stale = compare([seen], {seen.key: "some branch", unseen: "another branch"})
    assert (new, stale) == ([], [unseen])
    new, stale = compare([seen], {})
    assert (new, stale) == ([seen], [])
