// The critical path walks back from the end of each span through its last-finishing children.
import test from "node:test";
import assert from "node:assert/strict";
import { criticalPath } from "../../src/tomograph/ui/analysis/critical-path.js";

// A hand-made trace tree: node("name", start, end, ...children).
let ids = 0;
function node(name, start, end, ...children) {
  const extra = typeof children[0] === "object" && !("span" in children[0]) ? children.shift() : {};
  ids += 1;
  return { span: { traceId: "t", id: `s${ids}`, name, timestamp: start, duration: end - start, ...extra }, children };
}
const path = (roots) => criticalPath(roots).sections.map((s) => `${s.span.name} ${s.start}-${s.end}`);

test("a span without children is its own critical path", () => {
  assert.deepEqual(path([node("root", 0, 100)]), ["root 0-100"]);
});

test("sequential children are each on the path, with the parent's gaps between them", () => {
  const root = node("root", 0, 100, node("a", 10, 40), node("b", 50, 90));
  assert.deepEqual(path([root]), ["root 0-10", "a 10-40", "root 40-50", "b 50-90", "root 90-100"]);
});

test("of overlapping children the last to finish wins, and the walk resumes before its start", () => {
  // a and b run in parallel; b ends last. Before b started, a had not finished, so nothing of a
  // ended before b's start: the parent's own time up to b's start is on the path.
  const root = node("root", 0, 100, node("a", 10, 70), node("b", 20, 80), node("c", 5, 15));
  assert.deepEqual(path([root]), ["root 0-5", "c 5-15", "root 15-20", "b 20-80", "root 80-100"]);
});

test("back-to-back children both count: one ending exactly when the next starts", () => {
  const root = node("root", 0, 30, node("a", 0, 10), node("b", 10, 20), node("c", 20, 30));
  assert.deepEqual(path([root]), ["a 0-10", "b 10-20", "c 20-30"]);
});

test("the path descends through grandchildren", () => {
  const root = node("root", 0, 100, node("rpc", 10, 90, node("server", 15, 85, node("db", 20, 80))));
  assert.deepEqual(path([root]), [
    "root 0-10", "rpc 10-15", "server 15-20", "db 20-80", "server 80-85", "rpc 85-90", "root 90-100",
  ]);
});

test("a child outliving its parent is cut to the parent's window", () => {
  const root = node("root", 0, 100, node("late", 60, 150, node("inner", 70, 140)));
  assert.deepEqual(path([root]), ["root 0-60", "late 60-70", "inner 70-100"]);
});

test("a child starting before its parent is cut to the parent's start", () => {
  const root = node("root", 100, 200, node("early", 50, 150));
  assert.deepEqual(path([root]), ["early 100-150", "root 150-200"]);
});

test("children wholly outside the parent's window are dropped with their subtree", () => {
  const after = node("after", 120, 180, node("deep", 130, 170));
  const root = node("root", 0, 100, node("before", -50, -10), after);
  const result = criticalPath([root]);
  assert.deepEqual(path([root]), ["root 0-100"]);
  assert.ok(!result.spans.has(after.span));
});

test("a consumer child does not block its producer parent (Jaeger's FOLLOWS_FROM)", () => {
  const consumer = node("handle", 40, 95, { kind: "CONSUMER" }, node("work", 50, 90));
  const root = node("root", 0, 100, node("send", 20, 30, { kind: "PRODUCER" }, consumer));
  assert.deepEqual(path([root]), ["root 0-20", "send 20-30", "root 30-100"]);
});

test("spans without a timestamp or duration are left out", () => {
  const root = node("root", 0, 100, node("a", 10, 60));
  root.children.push({ span: { traceId: "t", id: "x", name: "unfinished", timestamp: 70 }, children: [] });
  assert.deepEqual(path([root]), ["root 0-10", "a 10-60", "root 60-100"]);
  assert.deepEqual(path([{ span: { id: "y", name: "no time" }, children: [] }]), []);
});

test("zero-duration children do not stall the walk", () => {
  const root = node("root", 0, 10, node("mark", 5, 5), node("mark2", 5, 5), node("end", 10, 10));
  assert.deepEqual(path([root]), ["root 0-10"]);
});

test("every root of a trace with orphans gets its own path", () => {
  const roots = [node("root", 0, 10), node("orphan", 20, 30, node("x", 22, 28))];
  assert.deepEqual(path(roots), ["root 0-10", "orphan 20-22", "x 22-28", "orphan 28-30"]);
});

test("the sections of one root cover its window without overlap", () => {
  // a random tree: whatever its shape, the path tiles [root.start, root.end]
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let round = 0; round < 200; round++) {
    const root = node("root", 0, 1000);
    const all = [root];
    for (let i = 0; i < 30; i++) {
      const parent = all[Math.floor(random() * all.length)];
      const start = Math.floor(random() * 1200) - 100;
      const child = node(`n${i}`, start, start + Math.floor(random() * 400));
      parent.children.push(child);
      all.push(child);
    }
    const { sections } = criticalPath([root]);
    assert.equal(sections[0].start, 0);
    assert.equal(sections.at(-1).end, 1000);
    for (let i = 1; i < sections.length; i++) assert.equal(sections[i].start, sections[i - 1].end);
    for (const s of sections) assert.ok(s.start < s.end);
  }
});

test("a 10,000-deep chain does not overflow the stack", () => {
  let leaf = node("leaf", 5000, 5001);
  for (let depth = 0; depth < 10000; depth++) leaf = node(`d${depth}`, 4999 - depth, 5002 + depth, leaf);
  const { sections } = criticalPath([leaf]);
  assert.equal(sections.length, 2 * 10000 + 1);
});

test("10,000 sequential children are all on the path, with the gaps between them", () => {
  const root = node("root", 0, 100000);
  for (let i = 0; i < 10000; i++) root.children.push(node(`c${i}`, i * 10 + 1, i * 10 + 10));
  const { sections } = criticalPath([root]);
  // the last child ends with the root: a gap before each child, and no root time after the last
  assert.equal(sections.length, 2 * 10000);
  assert.deepEqual(sections.slice(0, 3).map((s) => `${s.span.name} ${s.start}-${s.end}`), ["root 0-1", "c0 1-10", "root 10-11"]);
});

test("a root without a duration reaches to its latest child's end", () => {
  const root = node("root", 0, 0, node("a", 10, 40), node("b", 50, 90));
  delete root.span.duration;
  assert.deepEqual(path([root]), ["root 0-10", "a 10-40", "root 40-50", "b 50-90"]);
});
