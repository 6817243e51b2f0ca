"""Service links from traces, with Zipkin's rules (``GET /api/v2/dependencies``).

A trace is arranged as a tree first. A server span that shares its id with the client span that
called it (B3 ``shared``) becomes that client's child, so the two halves of one RPC count as one
call. Links are then taken from server and consumer spans (parent: the nearest remote ancestor's
service), from leaf client/producer spans (child: their remote service, which covers
uninstrumented peers) and from local spans that know both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tomograph.collector.span_fields import is_error, local_service, remote_service
from tomograph.collector.storage import DependencyLink, SpanDict

__all__ = ["DependencyLinker", "SpanNode", "build_span_tree", "link_span"]


@dataclass(eq=False, slots=True)
class SpanNode:
    """One span in a trace tree (``span`` is None for a synthetic root of a headless trace)."""

    span: SpanDict | None
    parent: SpanNode | None = None
    children: list[SpanNode] = field(default_factory=list)

    def add_child(self, child: SpanNode) -> None:
        """Attach ``child`` under this node."""
        child.parent = self
        self.children.append(child)

    def walk(self) -> Iterable[SpanNode]:
        """This node and its descendants, breadth first."""
        queue = [self]
        for node in queue:  # the list grows behind the loop: breadth first, no pop(0)
            yield node
            queue.extend(node.children)


def _key(span_id: str, shared: bool, service: str | None) -> tuple[str, bool, str | None]:
    return (span_id, shared, service if shared else None)


def build_span_tree(spans: Sequence[SpanDict]) -> SpanNode:
    """Arrange one trace's spans as a tree; spans whose parent is missing hang off the root.

    >>> root = build_span_tree([
    ...     {"traceId": "a" * 16, "id": "1" * 16, "kind": "CLIENT"},
    ...     {"traceId": "a" * 16, "id": "1" * 16, "kind": "SERVER", "shared": True}])
    >>> root.children[0].span["kind"]
    'SERVER'
    """
    nodes: dict[tuple[str, bool, str | None], SpanNode] = {}
    wanted_parent: dict[tuple[str, bool, str | None], tuple[str, bool, str | None] | None] = {}
    ordered = sorted(spans, key=lambda s: (bool(s.get("shared")), s.get("timestamp") or 0))
    services = [local_service(s) for s in ordered]
    shared_keys = {
        _key(s["id"], True, service)
        for s, service in zip(ordered, services, strict=True)
        if s.get("shared") is True
    }
    root: SpanNode | None = None
    for span, service in zip(ordered, services, strict=True):
        shared = bool(span.get("shared"))
        key = _key(span["id"], shared, service)
        if key in nodes:
            continue  # a duplicate id: keep the first, as Zipkin's tree does
        node = SpanNode(span)
        nodes[key] = node
        parent_key: tuple[str, bool, str | None] | None
        if shared:
            parent_key = _key(span["id"], False, None)  # the client half of the same RPC
        elif span.get("parentId"):
            # a local span under a shared server span of the same service is most specific
            shared_parent = _key(span["parentId"], True, service)
            parent_key = (
                shared_parent
                if shared_parent in shared_keys
                else _key(span["parentId"], False, None)
            )
        else:
            parent_key = None
        if parent_key is None and root is None:
            root = node
        else:
            wanted_parent[key] = parent_key
    if root is None:
        root = SpanNode(None)
    for key, parent_key in wanted_parent.items():
        child = nodes[key]
        parent = nodes.get(parent_key) if parent_key is not None else None
        if parent is None and parent_key is not None and not parent_key[1]:
            # the parent may only exist as a shared span (its client half was not reported)
            parent = next(
                (n for k, n in nodes.items() if k[0] == parent_key[0] and k[1] and n is not child),
                None,
            )
        (parent or root).add_child(child)
    return root


def _remote_ancestor(node: SpanNode) -> SpanNode | None:
    ancestor = node.parent
    while ancestor is not None:
        if ancestor.span is not None and ancestor.span.get("kind"):
            return ancestor
        ancestor = ancestor.parent
    return None


class DependencyLinker:
    """Counts calls and errors between services over any number of traces.

    >>> linker = DependencyLinker()
    >>> linker.put_trace([
    ...     {"traceId": "a" * 16, "id": "1" * 16, "kind": "CLIENT",
    ...      "localEndpoint": {"serviceName": "web"}, "remoteEndpoint": {"serviceName": "db"}}])
    >>> linker.links()
    [{'parent': 'web', 'child': 'db', 'callCount': 1, 'errorCount': 0}]
    """

    def __init__(self) -> None:
        self._calls: dict[tuple[str, str], int] = {}
        self._errors: dict[tuple[str, str], int] = {}

    def put_trace(self, spans: Sequence[SpanDict]) -> None:
        """Add the links of one trace."""
        if not spans:
            return
        root = build_span_tree(spans)
        for node in root.walk():
            span = node.span
            if span is None:
                continue
            kind = span.get("kind")
            if kind == "CLIENT" and node.children:
                continue  # the server half names the link better
            service = local_service(span) or None
            remote = remote_service(span) or None
            if kind is None:
                if service and remote:
                    kind = "CLIENT"
                else:
                    continue
            if kind in ("SERVER", "CONSUMER"):
                child, parent = service, remote
                if node is root and parent is None:
                    continue
            else:
                parent, child = service, remote
            error = is_error(span)
            if kind in ("PRODUCER", "CONSUMER"):
                if parent and child:
                    self._add(parent, child, error)
                continue
            ancestor = _remote_ancestor(node)
            ancestor_span = ancestor.span if ancestor is not None else None
            ancestor_service = local_service(ancestor_span) if ancestor_span else ""
            if ancestor_span is not None and ancestor_service:
                if kind == "CLIENT" and service and ancestor_service != service:
                    self._add(ancestor_service, service, False)  # a client with a wrong name
                if kind == "SERVER" or parent is None:
                    parent = ancestor_service
                if (
                    not error
                    and ancestor_span.get("kind") == "CLIENT"
                    and span.get("parentId") is not None
                    and span.get("parentId") == ancestor_span.get("id")
                ):
                    error = is_error(ancestor_span)
                elif not error and span.get("shared") and ancestor_span.get("kind") == "CLIENT":
                    error = is_error(ancestor_span)  # the client half of a shared RPC failed
            if parent and child:
                self._add(parent, child, error)

    def _add(self, parent: str, child: str, error: bool) -> None:
        pair = (parent, child)
        self._calls[pair] = self._calls.get(pair, 0) + 1
        if error:
            self._errors[pair] = self._errors.get(pair, 0) + 1

    def links(self) -> list[DependencyLink]:
        """The links counted so far, sorted by parent then child."""
        return [
            DependencyLink(
                parent=parent,
                child=child,
                callCount=count,
                errorCount=self._errors.get((parent, child), 0),
            )
            for (parent, child), count in sorted(self._calls.items())
        ]


def link_span(
    span_id: str,
    parent_id: str | None,
    kind: str | None,
    shared: int,
    service: str,
    remote: str,
    error: int,
    ts: int | None,
) -> SpanDict:
    """A span dict with just what :class:`DependencyLinker` reads, from a store's columns.

    >>> link_span("b" * 16, None, "SERVER", 0, "web", "", 1, 5)["tags"]
    {'error': ''}
    """
    span: SpanDict = {"traceId": "", "id": span_id, "timestamp": ts}
    if parent_id:
        span["parentId"] = parent_id
    if kind:
        span["kind"] = kind
    if shared:
        span["shared"] = True
    if service:
        span["localEndpoint"] = {"serviceName": service}
    if remote:
        span["remoteEndpoint"] = {"serviceName": remote}
    if error:
        span["tags"] = {"error": ""}
    return span
