"""Service links from traces, with Zipkin's rules (``GET /api/v2/dependencies``).

A trace is arranged as a tree first, as Zipkin arranges it. A span whose parent id is its own id
has no parent; pieces of one span reported apart are merged; a server span that shares its id
with the client span that called it (B3 ``shared``; a SERVER right after a CLIENT of the same
id counts as shared) becomes that client's child, so the two halves of one RPC count as one
call; the first span without a parent (by id) is the root, and spans whose parent is missing
hang off it. Links are then taken from server and consumer spans (parent: the nearest remote
ancestor's service), from leaf client/producer spans (child: their remote service, which
covers uninstrumented peers) and from local spans that know both sides. Spans that only reach
each other in a cycle are not in the tree. One rule is added to Zipkin's: a call is an error
when the client half of a shared RPC failed, as when the server half did.

The linker reads a span as a :data:`LinkRow`, the columns a store keeps for it; ties in Zipkin's
order of spans keep the order of the rows, so a store passes them in a fixed order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tomograph.collector.span_fields import is_error, local_service, remote_service
from tomograph.collector.storage import DependencyLink, SpanDict

__all__ = ["DependencyLinker", "LinkCounts", "LinkRow", "link_row", "trace_links"]

#: A span as the linker reads it: (id, parent id, kind, shared, local service, remote service,
#: error); an absent service is "" (or None), ``shared`` and ``error`` are 0/1 (or bools).
LinkRow = tuple[str, str | None, str | None, int, str | None, str | None, int]
#: (parent, child) -> [calls, errors]
LinkCounts = dict[tuple[str, str], list[int]]

_NO_NODE = -1  # the parent of the root, and of the spans under a synthetic root


def link_row(span: SpanDict) -> LinkRow:
    """The :data:`LinkRow` of a span dict.

    >>> link_row({"traceId": "a" * 16, "id": "b" * 16, "kind": "SERVER", "tags": {"error": ""}})
    ('bbbbbbbbbbbbbbbb', None, 'SERVER', 0, '', '', 1)
    """
    return (
        span["id"],
        span.get("parentId"),
        span.get("kind"),
        1 if span.get("shared") is True else 0,
        local_service(span),
        remote_service(span),
        1 if is_error(span) else 0,
    )


def trace_links(rows: Sequence[LinkRow], into: LinkCounts | None = None) -> LinkCounts:
    """The links of one trace's spans, added to ``into`` (a new dict by default).

    >>> trace_links([("1" * 16, None, "CLIENT", 0, "web", "db", 1)])
    {('web', 'db'): [1, 1]}
    """
    links: LinkCounts = {} if into is None else into
    if not rows:
        return links
    placed = _simple_tree(rows)
    spans, parents, children, root = placed if placed is not None else _merged_tree(rows)
    _count(spans, parents, children, root, links)
    return links


def _simple_tree(
    rows: Sequence[LinkRow],
) -> tuple[Sequence[LinkRow], list[int], dict[int, list[int]], int] | None:
    """The tree of a trace where no two spans have one id and one shared flag (the usual
    trace: only the client and server halves of an RPC share an id); None for any other.

    Zipkin's cleaning changes nothing in such a trace but a shared span's missing parent id, so
    the rows are placed as they are: the order Zipkin would process them in matters only for
    the root, which is the span without a parent of the lowest id.
    """
    plain: dict[str, int] = {}  # id -> the span that is not shared
    shared: dict[str, int] = {}  # id -> the shared span
    spans: list[LinkRow] | None = None  # the rows, once one of them needs changing
    root = _NO_NODE
    root_id = ""
    for index, row in enumerate(rows):
        span_id, parent_id, kind, is_shared, service, remote, error = row
        if parent_id == span_id or (is_shared and kind == "CLIENT"):
            # Zipkin's model: no span is its own parent, a client span is never shared
            if spans is None:
                spans = list(rows)
            if parent_id == span_id:
                parent_id = None
            if kind == "CLIENT":
                is_shared = 0
            spans[index] = (span_id, parent_id, kind, is_shared, service, remote, error)
        if is_shared:
            shared[span_id] = index
        else:
            plain[span_id] = index
            if parent_id is None and (root == _NO_NODE or span_id < root_id):
                root, root_id = index, span_id
    if len(plain) + len(shared) != len(rows):
        return None  # an id repeated with one shared flag (checked once, not per span)
    if spans is None:
        spans = rows  # type: ignore[assignment]
    assert spans is not None
    parents = [_NO_NODE] * len(spans)
    children: dict[int, list[int]] = {}
    for index, row in enumerate(spans):
        if index == root:
            continue
        parent_id = row[1]
        if row[3]:  # shared: under the client half of its RPC
            parent = plain.get(row[0], root)
            if parent_id is None and parent != root and spans[parent][1] is not None:
                # the client's parent id, as Zipkin fills it in (read by the error rule)
                if spans is rows:
                    spans = list(rows)
                spans[index] = (row[0], spans[parent][1], *row[2:])
        elif parent_id is None:
            parent = root
        elif (
            shared
            and parent_id in shared
            and ((spans[shared[parent_id]][4] or "") == (row[4] or ""))
        ):
            parent = shared[parent_id]  # a span in a server of its own service
        else:
            parent = plain.get(parent_id, root)
        parents[index] = parent
        below = children.get(parent)
        if below is None:
            children[parent] = [index]
        else:
            below.append(index)
    return spans, parents, children, root


def _merged_tree(
    rows: Sequence[LinkRow],
) -> tuple[list[LinkRow], list[int], dict[int, list[int]], int]:
    """The tree of any trace, by Zipkin's cleaning and placing of spans step by step."""
    spans = _cleaned([_built(row) for row in rows])
    # keys: an id alone for a span that is not shared, (id, service) for a shared one
    wanted: dict[object, object] = {}  # a span's key -> its parent's key (None: the root)
    for row in spans:
        if row[3]:
            wanted[(row[0], row[4] or None)] = row[0]
        else:
            wanted[row[0]] = row[1]
    nodes: dict[object, int] = {}
    root = _NO_NODE
    for index, row in enumerate(spans):
        span_id, parent_id, service = row[0], row[1], row[4] or None
        own_key: object = (span_id, service) if row[3] else span_id
        bare_key: object = (span_id, None) if row[3] else span_id
        parent: object = None
        if row[3]:
            parent = span_id
        elif parent_id is not None:
            parent = (parent_id, service)
            if parent in wanted:
                wanted[bare_key] = parent
            else:
                parent = parent_id
        if parent is None and root == _NO_NODE:
            root = index
            wanted.pop(bare_key, None)
        else:
            nodes[own_key] = index
            nodes[bare_key] = index
    parents = [_NO_NODE] * len(spans)
    children: dict[int, list[int]] = {}
    for key, parent_key in wanted.items():
        child = nodes[key]
        parent = nodes.get(parent_key, root) if parent_key is not None else root
        parents[child] = parent
        children.setdefault(parent, []).append(child)
    return spans, parents, children, root


def _built(row: LinkRow) -> LinkRow:
    """The span as Zipkin's model holds it: not its own parent; a client is never shared."""
    span_id, parent_id, kind, shared = row[0], row[1], row[2], row[3]
    return (
        span_id,
        None if parent_id == span_id else parent_id,
        kind,
        0 if kind == "CLIENT" else (1 if shared else 0),
        row[4] or None,
        row[5] or None,
        1 if row[6] else 0,
    )


def _cleanup_order(row: LinkRow) -> tuple[str, int, bool, str]:
    """Zipkin's order: by id; the client, other unshared spans, then shared; no service first."""
    rank = 2 if row[3] else (0 if row[2] == "CLIENT" else 1)
    return (row[0], rank, row[4] is not None, row[4] or "")


def _cleaned(spans: list[LinkRow]) -> list[LinkRow]:
    """Zipkin's cleaning of a trace: pieces of one span merged, shared flags and parent ids of
    shared spans filled in from the client span of the same id."""
    spans = sorted(spans, key=_cleanup_order)  # stable: ties keep the rows' order
    out: list[LinkRow] = []
    index = 0
    while index < len(spans):
        span = spans[index]
        index += 1
        service = span[4]  # of the pieces merged so far
        while index < len(spans) and spans[index][0] == span[0]:
            piece = spans[index]
            if piece[3] != span[3] or (service and piece[4] and piece[4] != service):
                break  # another span with this id (another server, or the other RPC half)
            span = (
                span[0],
                span[1] if span[1] is not None else piece[1],
                span[2] if span[2] is not None else piece[2],
                span[3],
                span[4] if span[4] is not None else piece[4],
                span[5] if span[5] is not None else piece[5],
                span[6] or piece[6],
            )
            service = service or piece[4]
            index += 1
        if out and out[-1][0] == span[0]:
            last = out[-1]
            if last[2] == "CLIENT" and span[2] == "SERVER" and not span[3]:
                span = (*span[:3], 1, *span[4:])
            if span[3] and span[1] is None and last[1] is not None:
                span = (span[0], last[1], *span[2:])
        out.append(_built(span))
    return out


def _add(links: LinkCounts, parent: str, child: str, error: object) -> None:
    counts = links.get((parent, child))
    if counts is None:
        links[(parent, child)] = [1, 1 if error else 0]
    else:
        counts[0] += 1
        if error:
            counts[1] += 1


def _count(
    spans: Sequence[LinkRow],
    parents: list[int],
    children: dict[int, list[int]],
    root: int,
    links: LinkCounts,
) -> None:
    """Add the links of the tree's spans, from the root breadth first."""
    queue = [root] if root != _NO_NODE else list(children.get(_NO_NODE, ()))
    # nearest[node]: the node if it has a kind, else its nearest ancestor with one, set from
    # its parent's (set first, breadth first): walking up per span would be quadratic in a long
    # chain of local spans. One slot more, at index _NO_NODE (-1): the root's parent, none.
    nearest = [_NO_NODE] * (len(spans) + 1)
    children_of = children.get  # bound once: looked up for every span
    counted = links.get
    for node in queue:  # the list grows behind the loop: breadth first
        below = children_of(node)
        if below is not None:
            queue.extend(below)
        span_id, parent_id, kind, is_shared, service, remote, error = spans[node]
        ancestor = nearest[parents[node]]  # the nearest ancestor with a kind
        nearest[node] = ancestor if kind is None else node
        if kind == "SERVER":
            if node == root and not remote:
                continue  # who called the root is not known
            parent, child = remote, service
        elif kind == "CLIENT":
            if below is not None:
                continue  # the server half names the link better
            parent, child = service, remote
        elif kind is None:
            if not (service and remote):
                continue  # a local span
            kind = "CLIENT"
            parent, child = service, remote
        elif kind == "PRODUCER":
            if service and remote:
                _add(links, service, remote, error)
            continue
        elif kind == "CONSUMER":
            if remote and service:
                _add(links, remote, service, error)
            continue
        else:
            continue  # a kind Zipkin does not know
        if ancestor != _NO_NODE:
            ancestor_id, _, ancestor_kind, _, ancestor_service, _, ancestor_error = spans[ancestor]
            if ancestor_service:
                if kind == "CLIENT" and service and ancestor_service != service:
                    _add(links, ancestor_service, service, 0)  # a client named for its peer
                if kind == "SERVER" or not parent:
                    parent = ancestor_service
                if not error and ancestor_kind == "CLIENT" and ancestor_error:
                    if parent_id is not None and parent_id == ancestor_id:
                        error = 1  # an RPC split over two ids: the client's error
                    elif is_shared and ancestor_id == span_id:
                        # not in Zipkin: the client half of a shared RPC failed (a timeout
                        # on a server that answered fine is still a failed call)
                        error = 1
        if parent and child:  # _add, written out: most spans get here
            pair = (parent, child)
            counts = counted(pair)
            if counts is None:
                links[pair] = [1, 1 if error else 0]
            else:
                counts[0] += 1
                if error:
                    counts[1] += 1


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
        self._counts: LinkCounts = {}

    def put_trace(self, spans: Iterable[SpanDict]) -> None:
        """Add the links of one trace."""
        self.put_rows([link_row(span) for span in spans])

    def put_rows(self, rows: Sequence[LinkRow]) -> None:
        """Add the links of one trace's spans as :data:`LinkRow` tuples."""
        trace_links(rows, self._counts)

    def links(self) -> list[DependencyLink]:
        """The links counted so far, sorted by parent then child."""
        return [
            DependencyLink(parent=parent, child=child, callCount=calls, errorCount=errors)
            for (parent, child), (calls, errors) in sorted(self._counts.items())
        ]
