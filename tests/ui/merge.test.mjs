// Two traces of one endpoint merged into one tree: matched by service + name path, spans in one
// trace only marked, duration differences classified.
import test from "node:test";
import assert from "node:assert/strict";
import { durationChange, mergeTraces } from "../../src/tomograph/ui/analysis/merge.js";

const T = 1_700_000_000_000_000;
function node(service, name, start, duration, ...children) {
  const kind = typeof children[0] === "string" ? children.shift() : undefined;
  return {
    span: { traceId: "t", id: `${service}-${name}-${start}`, name, kind, localEndpoint: { serviceName: service },
      timestamp: T + start, duration },
    children,
  };
}
const rows = (merged) => merged.order.map((n) =>
  `${"  ".repeat(n.depth)}${n.service}:${n.name}${n.only ? ` only-${n.only}` : ""}${n.change.verdict ? ` ${n.change.verdict}` : ""}`);

test("durations compare with a relative and an absolute threshold", () => {
  assert.deepEqual(durationChange(1000, 1500), { delta: 500, ratio: 1.5, verdict: "slower" });
  assert.equal(durationChange(1000, 500).verdict, "faster");
  assert.equal(durationChange(1000, 1090).verdict, "same", "under 10%");
  assert.equal(durationChange(10, 60).verdict, "same", "under 100µs");
  assert.equal(durationChange(0, 500).ratio, undefined);
  assert.equal(durationChange(undefined, 5).verdict, undefined);
  assert.equal(durationChange(5, 50, { relative: 0, absolute: 0 }).verdict, "slower");
});

test("identical shapes match span for span", () => {
  const a = [node("web", "get /", 0, 1000, node("web", "load", 100, 300), node("db", "query", 500, 400, "CLIENT"))];
  const b = [node("web", "get /", 0, 2000, node("web", "load", 90, 310), node("db", "query", 450, 1400, "CLIENT"))];
  const merged = mergeTraces(a, b);
  assert.deepEqual(rows(merged), ["web:get / slower", "  web:load same", "  db:query slower"]);
  assert.deepEqual(merged.counts, { both: 3, onlyA: 0, onlyB: 0, slower: 2, faster: 0 });
  assert.equal(merged.order[2].a, a[0].children[1].span);
  assert.equal(merged.order[2].b, b[0].children[1].span);
  assert.equal(merged.order[2].offsetB, 450);
});

test("a span in one trace only is marked, with its whole subtree", () => {
  const a = [node("web", "get /", 0, 1000, node("web", "load", 100, 300))];
  const b = [node("web", "get /", 0, 1000,
    node("cache", "miss", 50, 40),
    node("web", "load", 100, 300, node("db", "query", 120, 200)))];
  const merged = mergeTraces(a, b);
  assert.deepEqual(rows(merged), ["web:get / same", "  cache:miss only-b", "  web:load same", "    db:query only-b"]);
  assert.deepEqual(merged.counts, { both: 2, onlyA: 0, onlyB: 2, slower: 0, faster: 0 });
  const onlyB = merged.order[1];
  assert.equal(onlyB.a, null);
  assert.equal(onlyB.change.verdict, undefined);
});

test("repeated siblings match in start order and the extra ones are left over", () => {
  const a = [node("web", "batch", 0, 100, node("db", "q", 10, 10), node("db", "q", 30, 10), node("db", "q", 50, 10))];
  const b = [node("web", "batch", 0, 100, node("db", "q", 12, 30), node("db", "q", 60, 10))];
  const merged = mergeTraces(a, b);
  const children = merged.roots[0].children;
  assert.deepEqual(children.map((c) => [c.offsetA, c.offsetB, c.only]), [
    [10, 12, null], [30, 60, null], [50, undefined, "a"],
  ]);
});

test("client and server spans of one name and service are told apart by kind", () => {
  const a = [node("svc", "call", 0, 100, "CLIENT", node("svc", "call", 10, 80, "SERVER"))];
  const b = [node("svc", "call", 0, 100, "SERVER")];
  const merged = mergeTraces(a, b);
  assert.deepEqual(rows(merged), ["svc:call only-a", "  svc:call only-a", "svc:call only-b"]);
});

test("different roots do not match", () => {
  const merged = mergeTraces([node("web", "get /a", 0, 10)], [node("web", "get /b", 0, 10)]);
  assert.deepEqual(merged.counts, { both: 0, onlyA: 1, onlyB: 1, slower: 0, faster: 0 });
});

test("merging a trace with itself marks nothing, and the input trees are not changed", () => {
  const a = [node("web", "get /", 0, 1000, node("web", "load", 100, 300, node("db", "q", 150, 100)))];
  const snapshot = structuredClone(a);
  const merged = mergeTraces(a, a);
  assert.deepEqual(merged.counts, { both: 3, onlyA: 0, onlyB: 0, slower: 0, faster: 0 });
  assert.deepEqual(a, snapshot);
});

test("a 10,000-deep chain merges without overflowing the stack", () => {
  let leaf = node("s", "leaf", 0, 1);
  for (let i = 0; i < 10000; i++) leaf = node("s", `n${i}`, 0, 2 + i, leaf);
  const merged = mergeTraces([leaf], [leaf]);
  assert.equal(merged.order.length, 10001);
  assert.equal(merged.order.at(-1).depth, 10000);
});
