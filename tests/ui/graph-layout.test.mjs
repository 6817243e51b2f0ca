// The dependency graph's layout: columns by call depth, and labels that never overlap.
import test from "node:test";
import assert from "node:assert/strict";
import { bezier, edgeLabel, fitText, layoutGraph, overlap } from "../../src/tomograph/ui/lib/graph-layout.js";

const measure = (text) => 7 * text.length;
const link = (parent, child, callCount = 1, errorCount = 0) => ({ parent, child, callCount, errorCount });

function assertNothingOverlaps(layout) {
  const labels = layout.edges.map((e) => e.label);
  for (let i = 0; i < labels.length; i++) {
    for (let j = i + 1; j < labels.length; j++) {
      assert.equal(overlap(labels[i], labels[j]), 0, `labels ${labels[i].text} and ${labels[j].text} overlap`);
    }
    for (const node of layout.nodes) {
      assert.equal(overlap(labels[i], node), 0, `label ${labels[i].text} covers ${node.name}`);
    }
  }
  for (let i = 0; i < layout.nodes.length; i++) {
    for (let j = i + 1; j < layout.nodes.length; j++) assert.equal(overlap(layout.nodes[i], layout.nodes[j]), 0);
  }
  const { box } = layout;
  for (const item of [...labels, ...layout.nodes]) {
    assert.ok(item.x >= box.x && item.y >= box.y && item.x + item.w <= box.x + box.w && item.y + item.h <= box.y + box.h,
      `${item.text || item.name} lies outside the drawing`);
  }
}

test("an edge label reads calls, then errors when there are some", () => {
  assert.equal(edgeLabel(link("a", "b", 80, 9)), "80 (9 err)");
  assert.equal(edgeLabel(link("a", "b", 1)), "1");
});

test("callers stand left of the services they call", () => {
  const layout = layoutGraph([link("web", "api"), link("api", "db"), link("web", "db")], measure);
  const x = Object.fromEntries(layout.nodes.map((n) => [n.name, n.x]));
  assert.ok(x.web < x.api && x.api < x.db);
});

test("services calling each other stand in neighbouring columns, with no empty column", () => {
  const layout = layoutGraph([link("frontend", "shop"), link("shop", "frontend"), link("shop", "db"),
    link("demo-client", "demo-server"), link("other", "db")], measure);
  const columns = [...new Set(layout.nodes.map((n) => n.x + n.w / 2))].sort((a, b) => a - b);
  const column = (name) => columns.indexOf(layout.nodes.find((n) => n.name === name).x + layout.nodes.find((n) => n.name === name).w / 2);
  assert.equal(column("frontend"), 0);
  assert.equal(column("shop"), 1);
  assert.equal(column("db"), 2);
  assert.equal(columns.length, 3);
});

test("an edge past a column runs between that column's services, not across them", () => {
  const layout = layoutGraph([link("web", "api"), link("api", "cache"), link("cache", "db"), link("web", "db"),
    link("web", "queue"), link("queue", "worker"), link("worker", "db"), link("api", "db")], measure);
  const inside = (p, n) => p.x > n.x && p.x < n.x + n.w && p.y > n.y && p.y < n.y + n.h;
  for (const edge of layout.edges) {
    const others = layout.nodes.filter((n) => n.name !== edge.link.parent && n.name !== edge.link.child);
    for (const segment of edge.segments) {
      for (let t = 0; t <= 1; t += 0.02) {
        const p = bezier(segment, t);
        for (const node of others) assert.ok(!inside(p, node), `${edge.link.parent} → ${edge.link.child} crosses ${node.name}`);
      }
    }
  }
  assertNothingOverlaps(layout);
});

test("labels of two edges between the same services in both directions do not overlap", () => {
  // the reported case: "80 (9 err)" and "1" printed over each other as "80 (91err)"
  const layout = layoutGraph([link("shop", "payments", 80, 9), link("payments", "shop", 1)], measure);
  assertNothingOverlaps(layout);
  assert.deepEqual(layout.edges.map((e) => e.label.text), ["80 (9 err)", "1"]);
});

test("labels of many edges converging on one service do not overlap", () => {
  const callers = Array.from({ length: 12 }, (_, i) => `caller-${i}`);
  const layout = layoutGraph(callers.map((name, i) => link(name, "db", 100 - i, i % 3)), measure);
  assertNothingOverlaps(layout);
  // each edge reaches the database at a point of its own
  const ends = layout.edges.map((e) => e.d.split(" ").slice(-2).join(" "));
  assert.equal(new Set(ends).size, callers.length);
});

test("a random graph with cycles and self-calls keeps every label clear", () => {
  let seed = 7;
  const random = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };
  const names = Array.from({ length: 9 }, (_, i) => `service-${i}`);
  const links = [];
  for (let i = 0; i < 20; i++) {
    const parent = names[Math.floor(random() * names.length)];
    const child = names[Math.floor(random() * names.length)];
    if (!links.some((l) => l.parent === parent && l.child === child)) links.push(link(parent, child, Math.floor(random() * 1000), Math.floor(random() * 20)));
  }
  assertNothingOverlaps(layoutGraph(links, measure));
});

test("a long service name is cut to fit its node", () => {
  const long = "x".repeat(200);
  const layout = layoutGraph([link(long, "b")], measure);
  const node = layout.nodes.find((n) => n.name === long);
  assert.ok(node.label.endsWith("…") && measure(node.label) <= node.w);
  assert.equal(fitText("short", 100, measure), "short");
});

test("no links, no drawing", () => {
  assert.deepEqual(layoutGraph([], measure), { nodes: [], edges: [], box: { x: 0, y: 0, w: 0, h: 0 } });
});
