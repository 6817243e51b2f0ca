// Zipkin v2 spans as the views see them. No DOM here: Node's test runner can import this module.

/** The span's service (its local endpoint's name), "unknown" if it has none. */
export const serviceOf = (span) => (span.localEndpoint && span.localEndpoint.serviceName) || "unknown";

/** The service on the other side of a client/server/producer/consumer span, "" if not known. */
export const remoteOf = (span) => (span.remoteEndpoint && span.remoteEndpoint.serviceName) || "";

/** A trace id as the collector stores it: lower case, a 128-bit id whose high half is zeros cut to
 * its 16-hex low half. Example: "0000000000000000ABC0000000000001" gives "abc0000000000001". */
export function normalTraceId(hex) {
  const id = String(hex).toLowerCase();
  return id.length === 32 && id.startsWith("0000000000000000") ? id.slice(16) : id;
}

/** Whether two trace ids name the same trace: equal once normalized, or one is the 16-hex low half
 * of the other (the collector finds a 128-bit trace by its low half, as Zipkin does). */
export function sameTraceId(a, b) {
  const x = normalTraceId(a), y = normalTraceId(b);
  if (x === y) return true;
  return x.length !== y.length && Math.min(x.length, y.length) === 16 && x.slice(-16) === y.slice(-16);
}

/** Whether the span is marked failed (an "error" tag, whatever its value). */
export const isError = (span) => Boolean(span.tags && Object.prototype.hasOwnProperty.call(span.tags, "error"));

const joined = new WeakMap(); // list given -> its joined list, so repeated calls give the same spans

/**
 * The spans with each span reported in parts joined into one, as Zipkin's span cleaner does: parts
 * share the id, the `shared` flag and the local service (a client span and the shared server span
 * of the same id stay apart). The first timestamp, duration, name, kind, parent and endpoints set
 * win; tags merge, annotations merge without duplicates. Returns the list itself when no span is
 * in parts, otherwise a new list (the same one for the same list given) with a joined copy in place
 * of the first part. Example: a {ts 10} and a {duration 80} give one a {ts 10, duration 80}.
 */
export function joinSpanParts(spans) {
  if (joined.has(spans)) return joined.get(spans);
  const first = new Map(); // "id/shared/service" -> index in the result
  const result = [];
  for (const span of spans) {
    const key = `${span.id}/${span.shared ? 1 : 0}/${serviceOf(span)}`;
    if (!first.has(key)) {
      first.set(key, result.length);
      result.push(span);
      continue;
    }
    const index = first.get(key);
    result[index] = joinTwo(result[index], span);
  }
  const answer = result.length === spans.length ? spans : result;
  joined.set(spans, answer);
  if (answer !== spans) joined.set(answer, answer);
  return answer;
}

function joinTwo(a, b) {
  const span = { ...a };
  for (const field of ["parentId", "timestamp", "duration", "name", "kind", "localEndpoint", "remoteEndpoint"]) {
    if (span[field] === undefined || span[field] === null || span[field] === "") {
      if (b[field] !== undefined && b[field] !== null) span[field] = b[field];
    }
  }
  if (b.tags) span.tags = { ...b.tags, ...(a.tags || {}) };
  if (Array.isArray(b.annotations) && b.annotations.length) {
    const notes = [...(a.annotations || [])];
    const seen = new Set(notes.map((note) => JSON.stringify([note && note.timestamp, note && note.value])));
    for (const note of b.annotations) {
      const key = JSON.stringify([note && note.timestamp, note && note.value]);
      if (!seen.has(key)) {
        seen.add(key);
        notes.push(note);
      }
    }
    notes.sort((x, y) => ((x && x.timestamp) || 0) - ((y && y.timestamp) || 0));
    span.annotations = notes;
  }
  if (b.debug) span.debug = true;
  return span;
}

/**
 * Arranges spans as a tree the way Zipkin does: a shared (server) span hangs under the client span
 * with the same id; spans whose parent was not reported become roots, and so does one span of a
 * loop of parent ids (no span is ever left out). A span reported in parts is one node (see
 * joinSpanParts).
 * Returns { roots, order }: nodes { span, parent, children, depth }, `order` depth-first with
 * children by start time. Iterative, so a chain of 100,000 spans does not overflow the stack.
 */
export function buildTree(spans) {
  spans = joinSpanParts(spans);
  const nodes = spans.map((span) => ({ span, parent: null, children: [], depth: 0 }));
  const plain = new Map();
  const shared = new Map(); // "id/service" -> node
  const sharedById = new Map(); // id -> the first shared node of that id
  for (const node of nodes) {
    const s = node.span;
    if (s.shared) {
      shared.set(`${s.id}/${serviceOf(s)}`, node);
      if (!sharedById.has(s.id)) sharedById.set(s.id, node);
    } else if (!plain.has(s.id)) plain.set(s.id, node);
  }
  const roots = [];
  for (const node of nodes) {
    const s = node.span;
    let parent = null;
    if (s.shared) parent = plain.get(s.id) || null;
    else if (s.parentId) {
      parent = shared.get(`${s.parentId}/${serviceOf(s)}`) || plain.get(s.parentId) || sharedById.get(s.parentId) || null;
    }
    if (parent && parent !== node) {
      node.parent = parent;
      parent.children.push(node);
    } else roots.push(node);
  }
  const byStart = (a, b) => (a.span.timestamp || 0) - (b.span.timestamp || 0);
  const order = [];
  const visited = new Set();
  const visit = (root) => {
    const stack = [[root, 0]];
    while (stack.length) {
      const [node, depth] = stack.pop();
      visited.add(node);
      node.depth = depth;
      order.push(node);
      node.children.sort(byStart);
      for (let i = node.children.length - 1; i >= 0; i--) stack.push([node.children[i], depth + 1]);
    }
  };
  roots.sort((a, b) => (a.span.parentId ? 1 : 0) - (b.span.parentId ? 1 : 0) || byStart(a, b));
  for (const root of roots) visit(root);
  for (const node of nodes) {
    if (visited.has(node)) continue;
    // a loop of parent ids: cut it above this span, which becomes a root
    const siblings = node.parent.children;
    siblings.splice(siblings.indexOf(node), 1);
    node.parent = null;
    roots.push(node);
    visit(node);
  }
  return { roots, order };
}

/**
 * A trace's tree and headline numbers:
 * { root (span), roots, order (nodes, see buildTree), start, end, duration, services, errors, depth }.
 */
export function summarize(spans) {
  spans = joinSpanParts(spans);
  const { roots, order } = buildTree(spans);
  const timed = spans.filter((s) => s.timestamp);
  let start = Infinity, end = -Infinity; // a loop, not Math.min(...): 200,000 arguments overflow
  for (const s of timed) {
    start = Math.min(start, s.timestamp);
    end = Math.max(end, s.timestamp + (s.duration || 0));
  }
  const root = roots[0] ? roots[0].span : spans[0];
  return {
    root, roots, order, start, end,
    duration: timed.length ? Math.max(end - start, root.duration || 0) : root.duration || 0,
    services: [...new Set(spans.map(serviceOf))],
    errors: spans.filter(isError).length,
    depth: order.reduce((d, n) => Math.max(d, n.depth + 1), 0),
  };
}
