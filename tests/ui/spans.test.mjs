// node --test: the trace tree of the web UI (src/tomograph/ui/lib/spans.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { buildTree, summarize } from "../../src/tomograph/ui/lib/spans.js";

const span = (id, parentId, timestamp, extra = {}) => ({
  traceId: "t", id, parentId, timestamp, duration: 10, localEndpoint: { serviceName: "s" }, ...extra,
});
const ids = (nodes) => nodes.map((node) => node.span.id);

test("children follow their parent, ordered by start time", () => {
  const { roots, order } = buildTree([span("c", "a", 30), span("a", undefined, 10), span("b", "a", 20)]);
  assert.deepEqual(ids(roots), ["a"]);
  assert.deepEqual(ids(order), ["a", "b", "c"]);
  assert.deepEqual(order.map((node) => node.depth), [0, 1, 1]);
  assert.equal(order[1].parent, order[0]);
});

test("a server span shared with its client hangs under the client span", () => {
  const client = span("x", "a", 5, { kind: "CLIENT" });
  const server = span("x", "a", 6, { kind: "SERVER", shared: true, localEndpoint: { serviceName: "other" } });
  const child = span("y", "x", 7, { localEndpoint: { serviceName: "other" } });
  const { order } = buildTree([span("a", undefined, 1), client, server, child]);
  assert.deepEqual(order.map((node) => [node.span.id, node.depth]), [["a", 0], ["x", 1], ["x", 2], ["y", 3]]);
  assert.equal(order[3].parent.span, server);
});

test("a span whose parent is missing is a root of its own", () => {
  const { roots } = buildTree([span("a", undefined, 1), span("b", "gone", 2)]);
  assert.deepEqual(ids(roots), ["a", "b"]);
});

test("a loop of parent ids loses no span and never recurses for ever", () => {
  const { roots, order } = buildTree([span("a", undefined, 1), span("b", "c", 2), span("c", "b", 3)]);
  assert.equal(order.length, 3);
  assert.deepEqual(new Set(ids(order)), new Set(["a", "b", "c"]));
  assert.equal(roots.length, 2);
  for (const node of order) for (const child of node.children) assert.equal(child.parent, node);
});

test("a span that names itself as parent is a root", () => {
  const { roots, order } = buildTree([span("a", "a", 1)]);
  assert.deepEqual(ids(roots), ["a"]);
  assert.equal(order.length, 1);
});

test("a chain of 100,000 spans neither overflows the stack nor loses a span", () => {
  const spans = [span("0", undefined, 1)];
  for (let i = 1; i < 100_000; i++) spans.push(span(String(i), String(i - 1), i + 1));
  const summary = summarize(spans);
  assert.equal(summary.order.length, 100_000);
  assert.equal(summary.depth, 100_000);
  assert.equal(summary.start, 1);
  assert.equal(summary.end, 100_000 + 10);
});

test("summarize counts errors and services and measures the trace", () => {
  const summary = summarize([
    span("a", undefined, 100, { duration: 50 }),
    span("b", "a", 120, { duration: 60, tags: { error: "" }, localEndpoint: { serviceName: "db" } }),
  ]);
  assert.deepEqual([summary.start, summary.end, summary.duration], [100, 180, 80]);
  assert.equal(summary.errors, 1);
  assert.deepEqual(summary.services, ["s", "db"]);
  assert.equal(summary.root.id, "a");
  assert.deepEqual(ids(summary.roots), ["a"]);
});

test("a span reported in two parts is one row, and the critical path goes through its children", async () => {
  const { criticalPath } = await import("../../src/tomograph/ui/analysis/critical-path.js");
  const root = { traceId: "t", id: "r", name: "root", timestamp: 1000, duration: 100, localEndpoint: { serviceName: "s" } };
  const a1 = { traceId: "t", id: "a", parentId: "r", name: "a", timestamp: 1010, localEndpoint: { serviceName: "s" },
    tags: { x: "1" }, annotations: [{ timestamp: 1015, value: "note" }] };
  const a2 = { traceId: "t", id: "a", parentId: "r", duration: 80, localEndpoint: { serviceName: "s" },
    tags: { y: "2" }, annotations: [{ timestamp: 1015, value: "note" }, { timestamp: 1020, value: "other" }] };
  const b = { traceId: "t", id: "b", parentId: "a", name: "b", timestamp: 1020, duration: 60, localEndpoint: { serviceName: "s" } };
  const summary = summarize([root, a1, a2, b]);
  assert.deepEqual(summary.order.map((node) => node.span.id), ["r", "a", "b"]);
  const a = summary.order[1].span;
  assert.equal(a.timestamp, 1010);
  assert.equal(a.duration, 80);
  assert.deepEqual(a.tags, { x: "1", y: "2" });
  assert.deepEqual(a.annotations.map((note) => note.value), ["note", "other"]);
  assert.ok(criticalPath(summary.roots).spans.has(summary.order[2].span));
  assert.deepEqual(a1.tags, { x: "1" }); // the spans given are untouched
});

test("a client span and the shared server span of the same id are not joined", () => {
  const client = span("a", "r", 10, { kind: "CLIENT", localEndpoint: { serviceName: "fe" } });
  const server = span("a", "r", 12, { kind: "SERVER", shared: true, localEndpoint: { serviceName: "fe" } });
  const { order } = buildTree([span("r", undefined, 0, { duration: 50 }), client, server]);
  assert.deepEqual(order.map((node) => node.span.kind || "-"), ["-", "CLIENT", "SERVER"]);
});

test("trace ids are the same trace in either case, padded to 128 bits, or as a 128-bit id's low half", async () => {
  const { normalTraceId, sameTraceId } = await import("../../src/tomograph/ui/lib/spans.js");
  assert.equal(normalTraceId("0000000000000000ABC0000000000001"), "abc0000000000001");
  assert.ok(sameTraceId("abc0000000000001", "0000000000000000ABC0000000000001"));
  assert.ok(sameTraceId("1234567890abcdefabc0000000000001", "ABC0000000000001"));
  assert.ok(!sameTraceId("abc0000000000001", "abc0000000000002"));
  assert.ok(!sameTraceId("1234567890abcdefabc0000000000001", "0000000000000001abc0000000000001"));
});
