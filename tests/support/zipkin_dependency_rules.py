"""Zipkin's dependency-link rules, written out plainly: the reference the collector's linker is
checked against.

Zipkin (``zipkin2.internal``) links a trace in four steps, each followed here literally and
without any shortcut, so that this file can be read side by side with the rules:

1. each span is built as Zipkin's model builds it: a parent id equal to the span's own id is
   dropped, and a CLIENT span is never ``shared``;
2. the spans are cleaned (``Trace.merge``): sorted by id, then non-shared before shared (a
   CLIENT first among the non-shared), then by local endpoint (none first); pieces of one span
   (same id, same shared flag, local endpoints that do not disagree) are merged into one; a
   SERVER right after a CLIENT of the same id is marked shared, and a shared span without a
   parent id takes the one of the span before it with the same id;
3. the tree is built (``SpanNode.Builder``): spans are indexed by id (a shared one by id and
   local endpoint), then placed in the cleaned order; the first span without a parent is the
   root, and every span whose parent is not found hangs off the root (a synthetic one when no
   span is a root);
4. the tree is walked from the root (``DependencyLinker``) and each span adds at most two links.

tomograph adds one rule, documented with ``/dependencies``: a call is also an error when the
client half of a shared RPC (the CLIENT span of the same id) has an ``error`` tag. Zipkin takes
the client's error only when the server span is its child under another id, so a client that
timed out on a server that answered fine counts no error there.

The store keeps a span's local and remote endpoint as their service names only, so an endpoint
here is its service name (None: no endpoint). The input order matters only where Zipkin's sort
leaves spans tied; callers give the spans in the order the store reads them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

Links = dict[tuple[str, str], tuple[int, int]]


@dataclass(frozen=True)
class LinkSpan:
    """What the rules read of a span."""

    id: str
    parent_id: str | None = None
    kind: str | None = None
    shared: bool = False
    service: str | None = None
    remote: str | None = None
    error: bool = False
    timestamp: int = 0


def from_dict(span: dict[str, Any]) -> LinkSpan:
    """A Zipkin v2 span dict as the rules read it."""
    local = span.get("localEndpoint") or {}
    remote = span.get("remoteEndpoint") or {}
    return LinkSpan(
        id=span["id"],
        parent_id=span.get("parentId"),
        kind=span.get("kind"),
        shared=span.get("shared") is True,
        service=local.get("serviceName") or None,
        remote=remote.get("serviceName") or None,
        error="error" in (span.get("tags") or {}),
        timestamp=span.get("timestamp") or 0,
    )


# -- 1. the model ------------------------------------------------------------------------------


def built(span: LinkSpan) -> LinkSpan:
    if span.parent_id == span.id:
        span = replace(span, parent_id=None)
    if span.shared and span.kind == "CLIENT":
        span = replace(span, shared=False)
    return span


# -- 2. cleaning -------------------------------------------------------------------------------


def cleanup_order(span: LinkSpan) -> tuple[Any, ...]:
    if span.shared:
        shared_rank = 2
    elif span.kind == "CLIENT":
        shared_rank = 0
    else:
        shared_rank = 1
    # local endpoint: none first; then by service name
    return (span.id, shared_rank, span.service is not None, span.service or "")


def merged(first: LinkSpan, later: LinkSpan) -> LinkSpan:
    """``first`` with what it lacks taken from ``later`` (tags are a union)."""
    return LinkSpan(
        id=first.id,
        parent_id=first.parent_id if first.parent_id is not None else later.parent_id,
        kind=first.kind if first.kind is not None else later.kind,
        shared=first.shared,
        service=first.service if first.service is not None else later.service,
        remote=first.remote if first.remote is not None else later.remote,
        error=first.error or later.error,
        timestamp=first.timestamp or later.timestamp,
    )


def cleaned(spans: list[LinkSpan]) -> list[LinkSpan]:
    if len(spans) <= 1:
        return list(spans)
    result = sorted(spans, key=cleanup_order)  # a stable sort: ties keep their input order
    out: list[LinkSpan] = []
    i = 0
    while i < len(result):
        span = result[i]
        tracked_service = span.service  # what the pieces merged so far say of the endpoint
        j = i + 1
        while j < len(result) and result[j].id == span.id:
            piece = result[j]
            agrees = (
                tracked_service is None or piece.service is None or tracked_service == piece.service
            )
            if piece.shared != span.shared or not agrees:
                break
            span = merged(span, piece)
            if tracked_service is None:
                tracked_service = piece.service
            j += 1
        if out and out[-1].id == span.id:
            last = out[-1]
            if last.kind == "CLIENT" and span.kind == "SERVER" and not span.shared:
                span = replace(span, shared=True)
            if span.shared and span.parent_id is None and last.parent_id is not None:
                span = replace(span, parent_id=last.parent_id)
        out.append(built(span))
        i = j
    return out


# -- 3. the tree -------------------------------------------------------------------------------


@dataclass(eq=False)
class Node:
    span: LinkSpan | None
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)

    def add_child(self, child: Node) -> None:
        if child is self:
            raise AssertionError("Zipkin refuses a node as its own child")
        self.children.append(child)
        child.parent = self


def key(span_id: str, shared: bool, service: str | None) -> tuple[Any, ...]:
    """An id alone for a span that is not shared; id and endpoint for a shared one."""
    return ("shared", span_id, service) if shared else ("id", span_id)


def plain(span_id: str | None) -> tuple[Any, ...] | None:
    return None if span_id is None else ("id", span_id)


def tree(spans: list[LinkSpan]) -> Node:
    spans = cleaned(spans)
    span_to_parent: dict[Any, Any] = {}  # insertion-ordered, as Zipkin's LinkedHashMap
    key_to_node: dict[Any, Node] = {}
    for span in spans:
        if span.shared:
            span_to_parent[key(span.id, True, span.service)] = plain(span.id)
        else:
            span_to_parent[key(span.id, False, None)] = plain(span.parent_id)
    root: Node | None = None
    for span in spans:
        own_key = key(span.id, span.shared, span.service)
        no_endpoint_key = key(span.id, span.shared, None) if span.service is not None else own_key
        parent: Any = None
        if span.shared:
            parent = plain(span.id)
        elif span.parent_id is not None:
            parent = key(span.parent_id, True, span.service)
            if parent in span_to_parent:
                span_to_parent[no_endpoint_key] = parent
            else:
                parent = plain(span.parent_id)
        node = Node(span)
        if parent is None and root is None:
            root = node
            span_to_parent.pop(no_endpoint_key, None)
        elif span.shared:
            key_to_node[own_key] = node
            key_to_node[no_endpoint_key] = node
        else:
            key_to_node[no_endpoint_key] = node
    if root is None:
        root = Node(None)
    for child_key, parent_key in span_to_parent.items():
        child = key_to_node[child_key]
        found = key_to_node.get(parent_key) if parent_key is not None else None
        (found or root).add_child(child)
    return root


def breadth_first(root: Node) -> list[Node]:
    queue = deque(root.children if root.span is None else [root])
    order: list[Node] = []
    while queue:
        node = queue.popleft()
        order.append(node)
        queue.extend(node.children)
    return order


# -- 4. the links ------------------------------------------------------------------------------


def first_remote_ancestor(node: Node) -> LinkSpan | None:
    ancestor = node.parent
    while ancestor is not None:
        if ancestor.span is not None and ancestor.span.kind is not None:
            return ancestor.span
        ancestor = ancestor.parent
    return None


def trace_links(spans: list[LinkSpan]) -> Links:
    """(parent, child) -> (calls, errors) of one trace, by Zipkin's rules."""
    calls: dict[tuple[str, str], list[int]] = {}

    def add(parent: str, child: str, error: bool) -> None:
        counts = calls.setdefault((parent, child), [0, 0])
        counts[0] += 1
        counts[1] += error

    if not spans:
        return {}
    root = tree([built(span) for span in spans])
    for node in breadth_first(root):
        span = node.span
        assert span is not None
        kind = span.kind
        if kind == "CLIENT" and node.children:
            continue  # the server's name is better
        if kind is None:
            if span.service is not None and span.remote is not None:
                kind = "CLIENT"
            else:
                continue
        if kind in ("SERVER", "CONSUMER"):
            child, parent = span.service, span.remote
            if node is root and parent is None:
                continue
        elif kind in ("CLIENT", "PRODUCER"):
            parent, child = span.service, span.remote
        else:
            continue
        error = span.error
        if kind in ("PRODUCER", "CONSUMER"):
            if parent is not None and child is not None:
                add(parent, child, error)
            continue
        ancestor = first_remote_ancestor(node)
        if ancestor is not None and ancestor.service is not None:
            if kind == "CLIENT" and span.service is not None and ancestor.service != span.service:
                add(ancestor.service, span.service, False)
            if kind == "SERVER" or parent is None:
                parent = ancestor.service
            if (
                not error
                and ancestor.kind == "CLIENT"
                and span.parent_id is not None
                and span.parent_id == ancestor.id
            ):
                error = ancestor.error
            elif not error and ancestor.kind == "CLIENT" and span.shared and span.id == ancestor.id:
                error = ancestor.error  # TOMOGRAPH'S ADDITION (see the module doc)
        if parent is not None and child is not None:
            add(parent, child, error)
    return {pair: (count, errors) for pair, (count, errors) in calls.items()}
