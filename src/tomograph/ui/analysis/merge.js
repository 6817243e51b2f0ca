// Two traces of the same endpoint merged into one tree for comparison. Pure: works on the trace
// trees (nodes { span, children }) of the two traces.
//
// Spans are matched by their path from the root: service, name and kind at every level. Among
// siblings with the same service, name and kind the first in A is matched with the first in B,
// the second with the second, and so on (by start time); a span left over exists in one trace
// only, and so does its whole subtree.

import { serviceOf } from "../lib/spans.js";

const keyOf = (span) => `${serviceOf(span)}\u0000${span.name || ""}\u0000${span.kind || ""}`;

function traceStart(roots) {
  let start = Infinity;
  const stack = [...roots];
  while (stack.length) {
    const node = stack.pop();
    if (Number.isFinite(node.span.timestamp)) start = Math.min(start, node.span.timestamp);
    stack.push(...(node.children || []));
  }
  return Number.isFinite(start) ? start : 0;
}

/** How B's duration compares with A's: { delta, ratio, verdict } with verdict "slower",
 * "faster" or "same" (a change under `relative` of A's duration or under `absolute` µs is
 * "same"), or verdict undefined when either duration is unknown.
 * Example: durationChange(1000, 1500).verdict === "slower" (delta 500, ratio 1.5). */
export function durationChange(before, after, { relative = 0.1, absolute = 100 } = {}) {
  const known = (value) => Number.isFinite(value) && value >= 0;
  if (!known(before) || !known(after)) return { delta: undefined, ratio: undefined, verdict: undefined };
  const delta = after - before;
  const ratio = before > 0 ? after / before : undefined;
  const threshold = Math.max(absolute, relative * before);
  const verdict = delta > threshold ? "slower" : delta < -threshold ? "faster" : "same";
  return { delta, ratio, verdict };
}

function mergedNode(a, b, depth, starts, options) {
  const span = (a || b).span;
  return {
    service: serviceOf(span),
    name: span.name || "",
    kind: span.kind,
    a: a ? a.span : null,
    b: b ? b.span : null,
    only: a && b ? null : a ? "a" : "b",
    // each span's start from its own trace's start (µs), for side-by-side bars
    offsetA: a && Number.isFinite(a.span.timestamp) ? a.span.timestamp - starts.a : undefined,
    offsetB: b && Number.isFinite(b.span.timestamp) ? b.span.timestamp - starts.b : undefined,
    change: a && b ? durationChange(a.span.duration, b.span.duration, options) : durationChange(),
    depth,
    children: [],
    sources: [a, b],
  };
}

const startOf = (node) => (Number.isFinite(node.span.timestamp) ? node.span.timestamp : Infinity);

// Pairs of nodes from two sibling lists, matched by key in start order.
function pair(listA, listB) {
  const waiting = new Map();
  for (const b of [...listB].sort((x, y) => startOf(x) - startOf(y))) {
    const key = keyOf(b.span);
    if (!waiting.has(key)) waiting.set(key, []);
    waiting.get(key).push(b);
  }
  const pairs = [];
  for (const a of [...listA].sort((x, y) => startOf(x) - startOf(y))) {
    const queue = waiting.get(keyOf(a.span));
    pairs.push([a, queue && queue.length ? queue.shift() : null]);
  }
  for (const queue of waiting.values()) for (const b of queue) pairs.push([null, b]);
  return pairs;
}

const position = (node) => Math.min(node.offsetA ?? Infinity, node.offsetB ?? Infinity);

/** Merge trace A and trace B (their root nodes) into one tree. Returns { roots, order, counts }:
 * merged nodes { service, name, kind, a, b, only, offsetA, offsetB, change, depth, children }
 * (a and b the matched spans, only "a"/"b" for a span in one trace only, change B's duration
 * against A's, see durationChange), `order` depth first by start, and counts
 * { both, onlyA, onlyB, slower, faster }. `options` are durationChange's thresholds. */
export function mergeTraces(rootsA, rootsB, options) {
  const starts = { a: traceStart(rootsA), b: traceStart(rootsB) };
  const counts = { both: 0, onlyA: 0, onlyB: 0, slower: 0, faster: 0 };
  const build = (a, b, depth) => {
    const merged = mergedNode(a, b, depth, starts, options);
    if (merged.only === "a") counts.onlyA += 1;
    else if (merged.only === "b") counts.onlyB += 1;
    else counts.both += 1;
    if (merged.change.verdict === "slower") counts.slower += 1;
    if (merged.change.verdict === "faster") counts.faster += 1;
    return merged;
  };
  const roots = pair(rootsA, rootsB).map(([a, b]) => build(a, b, 0));
  // iterative: a 10,000-span trace can be a single chain
  const stack = [...roots];
  while (stack.length) {
    const merged = stack.pop();
    const [a, b] = merged.sources;
    delete merged.sources;
    for (const [childA, childB] of pair(a ? a.children || [] : [], b ? b.children || [] : [])) {
      const child = build(childA, childB, merged.depth + 1);
      merged.children.push(child);
      stack.push(child);
    }
  }
  const order = [];
  const walk = [...roots].sort((x, y) => position(x) - position(y)).reverse();
  while (walk.length) {
    const node = walk.pop();
    node.children.sort((x, y) => position(x) - position(y));
    order.push(node);
    for (let i = node.children.length - 1; i >= 0; i--) walk.push(node.children[i]);
  }
  roots.sort((x, y) => position(x) - position(y));
  return { roots, order, counts };
}
