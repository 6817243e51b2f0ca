// Zipkin v2 spans as the views see them. No DOM here: Node's test runner can import this module.

/** The span's service (its local endpoint's name), "unknown" if it has none. */
export const serviceOf = (span) => (span.localEndpoint && span.localEndpoint.serviceName) || "unknown";

/** The service on the other side of a client/server/producer/consumer span, "" if not known. */
export const remoteOf = (span) => (span.remoteEndpoint && span.remoteEndpoint.serviceName) || "";

/** Whether the span is marked failed (an "error" tag, whatever its value). */
export const isError = (span) => Boolean(span.tags && Object.prototype.hasOwnProperty.call(span.tags, "error"));

/**
 * Arranges spans as a tree the way Zipkin does: a shared (server) span hangs under the client span
 * with the same id; spans whose parent was not reported become roots.
 * Returns { roots, order }: nodes { span, children, depth }, `order` depth-first by start time.
 */
export function buildTree(spans) {
  const nodes = spans.map((span) => ({ span, children: [], depth: 0 }));
  const plain = new Map();
  const shared = new Map();
  for (const node of nodes) {
    const s = node.span;
    if (s.shared) shared.set(`${s.id}/${serviceOf(s)}`, node);
    else if (!plain.has(s.id)) plain.set(s.id, node);
  }
  const roots = [];
  for (const node of nodes) {
    const s = node.span;
    let parent = null;
    if (s.shared) parent = plain.get(s.id) || null;
    else if (s.parentId) {
      parent = shared.get(`${s.parentId}/${serviceOf(s)}`) || plain.get(s.parentId) || null;
      if (!parent) for (const [key, candidate] of shared) if (key.startsWith(`${s.parentId}/`)) { parent = candidate; break; }
    }
    if (parent && parent !== node) parent.children.push(node);
    else roots.push(node);
  }
  const byStart = (a, b) => (a.span.timestamp || 0) - (b.span.timestamp || 0);
  const order = [];
  const visit = (node, depth) => {
    node.depth = depth;
    order.push(node);
    node.children.sort(byStart);
    for (const child of node.children) visit(child, depth + 1);
  };
  roots.sort((a, b) => (a.span.parentId ? 1 : 0) - (b.span.parentId ? 1 : 0) || byStart(a, b));
  for (const root of roots) visit(root, 0);
  return { roots, order };
}

/** A trace's tree and headline numbers: root, order, start, end, duration, services, errors, depth. */
export function summarize(spans) {
  const { roots, order } = buildTree(spans);
  const timed = spans.filter((s) => s.timestamp);
  const start = Math.min(...timed.map((s) => s.timestamp));
  const end = Math.max(...timed.map((s) => s.timestamp + (s.duration || 0)));
  const root = roots[0] ? roots[0].span : spans[0];
  return {
    root, order, start, end,
    duration: timed.length ? Math.max(end - start, root.duration || 0) : root.duration || 0,
    services: [...new Set(spans.map(serviceOf))],
    errors: spans.filter(isError).length,
    depth: order.reduce((d, n) => Math.max(d, n.depth + 1), 0),
  };
}
