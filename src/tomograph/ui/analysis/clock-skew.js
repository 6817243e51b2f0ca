// Clock-skew correction for display, as Zipkin does it: a server span that starts before the
// client span that called it, or ends after it (the two hosts' clocks disagree), is moved into
// the client's window, and the spans after it on the same host move with it. Pure: it returns
// adjusted copies and leaves the spans it was given (the data as stored) untouched.
//
// Zipkin's rules (zipkin-lens's clock-skew): skew is only detectable from a CLIENT span to its
// SERVER child on another host, and only when the server is not wholly inside the client's
// window (it starts at or before the client, or ends after it). With both durations known and
// the server's the shorter, the server is centred in the client (half the difference on each
// side, the network latency); when the server outlasted the client (an asynchronous call) or a
// duration is missing (one-way), the server is placed 1µs after the client starts; a one-way
// server starting after its client shows no skew. Descendants on the skewed host take the same
// shift; a descendant on a third host gets its own correction against its (already shifted)
// client.
//
// Hosts are told apart by IP address as Zipkin does; when neither endpoint carries an address
// (common with in-process tracers), by service name.

import { buildTree, joinSpanParts } from "../lib/spans.js";

function sameHost(a, b) {
  if (!a || !b) return false;
  const addressed = a.ipv4 || a.ipv6 || b.ipv4 || b.ipv6;
  if (!addressed) return Boolean(a.serviceName) && a.serviceName === b.serviceName;
  if (a.ipv6 && b.ipv6 && a.ipv6 === b.ipv6) return true;
  if (!a.ipv4 && !b.ipv4) return false;
  return a.ipv4 === b.ipv4;
}

const positive = (value) => Number.isFinite(value) && value > 0;

/** How many µs to add to `server`'s times to put it inside `client`'s window, or 0 when there is
 * no skew to see (the server lies inside the client's window). Example: client 100-200 and
 * server 50-130 (80µs) give 60, server 180-260 gives -70: server 110-190 either way. */
export function skewShift(client, server) {
  if (!client || !server || client.kind !== "CLIENT" || server.kind !== "SERVER") return 0;
  if (!positive(client.timestamp) || !positive(server.timestamp)) return 0;
  if (!server.localEndpoint || !client.localEndpoint) return 0;
  if (sameHost(server.localEndpoint, client.localEndpoint)) return 0; // a call to itself
  const oneWay = !positive(client.duration) || !positive(server.duration);
  if (server.timestamp > client.timestamp) {
    // started after the client: skew shows only when the server ends after the client did
    if (oneWay || server.timestamp + server.duration <= client.timestamp + client.duration) return 0;
  }
  if (oneWay || client.duration < server.duration) return client.timestamp - server.timestamp + 1;
  const latency = Math.floor((client.duration - server.duration) / 2);
  return client.timestamp + latency - server.timestamp;
}

function shifted(span, shift) {
  const copy = { ...span };
  if (Number.isFinite(span.timestamp)) copy.timestamp = span.timestamp + shift;
  if (Array.isArray(span.annotations)) {
    copy.annotations = span.annotations.map((note) =>
      note && Number.isFinite(note.timestamp) ? { ...note, timestamp: note.timestamp + shift } : note);
  }
  return copy;
}

const byStart = (a, b) => (a.span.timestamp || 0) - (b.span.timestamp || 0);

/** The trace tree (nodes { span, children, depth }) with clock skew corrected for display.
 * Returns { roots, order, adjusted }: a new tree of the same shape whose spans are the given
 * ones or shifted copies (the tree given, when nothing moved), `order` its nodes depth first
 * by (corrected) start, and `adjusted` a Map from each shifted copy to { shift, original }
 * (shift in µs, original the span as sent). */
export function correctClockSkew(roots) {
  const adjusted = new Map();
  if (!hasSkew(roots)) return { roots, order: depthFirst(roots), adjusted };
  const copy = (node, depth) => ({ ...node, depth, children: [] });
  const newRoots = roots.map((root) => copy(root, 0));
  // (node, its copy, the adjusted parent span, skew inherited from the parent): iterative, a
  // 10,000-span trace can be a single chain
  const stack = roots.map((root, index) => [root, newRoots[index], null, null]);
  while (stack.length) {
    const [node, target, parentSpan, inherited] = stack.pop();
    const original = node.span;
    let span = original;
    let total = 0;
    if (inherited && sameHost(inherited.endpoint, span.localEndpoint)) {
      span = shifted(span, inherited.shift);
      total += inherited.shift;
    }
    let skew = inherited;
    const own = skewShift(parentSpan, span);
    if (own !== 0) {
      span = shifted(span, own);
      total += own;
      skew = { endpoint: span.localEndpoint, shift: own };
    }
    if (total !== 0) adjusted.set(span, { shift: total, original });
    target.span = span;
    for (const child of node.children || []) {
      const childCopy = copy(child, target.depth + 1);
      target.children.push(childCopy);
      stack.push([child, childCopy, span, skew]);
    }
  }
  // children are in the order given; the corrected starts may order them differently
  return { roots: newRoots, order: depthFirst(newRoots, byStart), adjusted };
}

// Whether any server span starts before its client on another host. Without one nothing moves
// (a shift only ever starts at such a pair), so the tree need not be copied: most traces.
function hasSkew(roots) {
  const stack = [...roots];
  while (stack.length) {
    const node = stack.pop();
    for (const child of node.children || []) {
      if (skewShift(node.span, child.span) !== 0) return true;
      stack.push(child);
    }
  }
  return false;
}

// The nodes depth first, each node's children sorted by `compare` first when given.
function depthFirst(roots, compare) {
  const order = [];
  const walk = [...roots].reverse();
  while (walk.length) {
    const node = walk.pop();
    if (compare) node.children.sort(compare);
    order.push(node);
    for (let i = node.children.length - 1; i >= 0; i--) walk.push(node.children[i]);
  }
  return order;
}

/** `spans` (a trace as stored) with clock skew corrected for display: { spans, adjusted }, the
 * list in the same order with shifted copies in place of the spans that moved, and `adjusted`
 * as correctClockSkew gives it. Ids are unchanged, so the corrected list makes the same tree.
 * `roots`, the tree of `spans` if the caller has built it already, saves building it again. */
export function correctSpansForClockSkew(spans, roots = buildTree(spans).roots) {
  spans = joinSpanParts(spans); // the spans of the tree: a span reported in parts is one
  const { adjusted } = correctClockSkew(roots);
  if (!adjusted.size) return { spans, adjusted };
  const replaced = new Map([...adjusted].map(([copy, { original }]) => [original, copy]));
  return { spans: spans.map((span) => replaced.get(span) || span), adjusted };
}
