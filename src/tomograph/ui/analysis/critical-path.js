// The critical path of a trace: the chain of span sections that determined its duration.
// Pure: works on the trace tree (nodes { span, children }, as the trace view builds it).
//
// The walk is Jaeger UI's: start at the end of the root span, step into the child that finished
// last before that point, and so on down; where a span has no such child, its own time back to
// its start is on the path, and the walk returns to the parent at that span's start, looking for
// the child that finished last before it. Before walking, like Jaeger:
// - a child outliving its parent is cut to the parent's window (the parent cannot have waited
//   for the part outside it); a child wholly outside its parent's window is dropped with its
//   subtree;
// - children that do not block their parent are dropped with their subtree: Zipkin's CONSUMER
//   spans (a message handled after the producer moved on; Jaeger's FOLLOWS_FROM);
// - spans without a timestamp or duration cannot be placed and are dropped with their subtree.
// One difference: a child that ended exactly when the next one started counts as finished before
// it (Jaeger asks for strictly earlier, which skips back-to-back sequential calls).

const NON_BLOCKING_KINDS = new Set(["CONSUMER"]);

function placed(span) {
  return Number.isFinite(span.timestamp) && Number.isFinite(span.duration) && span.duration >= 0;
}

// The root's window; a root reported without a duration (or timestamp), common in incomplete
// Zipkin traces, spans its placed blocking children instead: up to the latest child end.
function rootWindow(root) {
  const span = root.span;
  if (placed(span)) return { start: span.timestamp, end: span.timestamp + span.duration };
  let start = Infinity, end = -Infinity;
  for (const child of root.children || []) {
    if (!placed(child.span) || NON_BLOCKING_KINDS.has(child.span.kind)) continue;
    start = Math.min(start, child.span.timestamp);
    end = Math.max(end, child.span.timestamp + child.span.duration);
  }
  if (end === -Infinity) return null;
  if (Number.isFinite(span.timestamp) && span.timestamp <= end) start = Math.min(start, span.timestamp);
  return { start, end };
}

// Each kept node's window, cut to its parent's, and its kept children; iterative, since a
// 10,000-span trace can be one deep chain.
function windows(root) {
  const info = new Map();
  const bounds = rootWindow(root);
  if (!bounds) return info;
  info.set(root, { node: root, ...bounds, parent: null, children: [] });
  const stack = [root];
  while (stack.length) {
    const node = stack.pop();
    const own = info.get(node);
    for (const child of node.children || []) {
      const span = child.span;
      if (!placed(span) || NON_BLOCKING_KINDS.has(span.kind)) continue;
      const start = Math.max(span.timestamp, own.start);
      const end = Math.min(span.timestamp + span.duration, own.end);
      if (start > end || (start === end && span.duration > 0)) continue; // outside the parent
      info.set(child, { node: child, start, end, parent: node, children: [] });
      own.children.push(child);
      stack.push(child);
    }
  }
  return info;
}

// The child of `node` that finished last at or before `until`, leaving out one that starts at
// `until` (the child the walk came back from, or one with no time before it). The walk asks
// each node with an ever earlier `until`, so its children are sorted by end once and passed
// over for good: linear, where scanning them all on each return made a span with 10,000
// sequential children take seconds.
function lastFinishingChild(info, node, until) {
  const own = info.get(node);
  if (!own.byEnd) {
    own.byEnd = own.children.map((child) => info.get(child)).sort((a, b) => b.end - a.end);
    own.next = 0;
  }
  while (own.next < own.byEnd.length) {
    const child = own.byEnd[own.next];
    if (child.end <= until && child.start < until) return child.node;
    own.next += 1; // ends after `until`, or has no time before it: never a candidate again
  }
  return null;
}

function walk(root, sections) {
  const info = windows(root);
  if (!info.size) return;
  const found = [];
  let node = root;
  let until = info.get(root).end;
  // Each step goes down (to an earlier end) or back up (to an earlier start): bounded, but a
  // cap keeps a malformed tree from spinning.
  for (let steps = 0; steps < 4 * info.size + 4; steps++) {
    const own = info.get(node);
    const child = lastFinishingChild(info, node, until);
    if (child) {
      const childEnd = info.get(child).end;
      if (childEnd < until) found.push({ node, span: node.span, start: childEnd, end: until });
      node = child;
      until = childEnd;
      continue;
    }
    if (own.start < until) found.push({ node, span: node.span, start: own.start, end: until });
    if (!own.parent) break;
    until = own.start;
    node = own.parent;
  }
  // A zero-length child splits its parent's stretch in two: join the pieces again.
  for (const section of found.reverse()) {
    const last = sections[sections.length - 1];
    if (last && last.node === section.node && last.end === section.start) last.end = section.end;
    else sections.push(section);
  }
}

/** The critical path of the trace whose root nodes are `roots`: its sections in time order,
 * each { node, span, start, end } (µs; the part of `span` that was on the path), and `spans`,
 * the set of spans with a section. Each root (a trace with orphans has several) gets its own path.
 * Example: root 0-100 with children a 10-40 and b 50-90 gives root 0-10, a 10-40, root 40-50,
 * b 50-90, root 90-100. */
export function criticalPath(roots) {
  const sections = [];
  for (const root of roots) walk(root, sections);
  return { sections, spans: new Set(sections.map((section) => section.span)) };
}
