// The analyses on real traces: tomograph's demo and a zipkin-js client/server call, arranged by the
// trace view's own tree builder.
import test from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { buildTree } from "../../src/tomograph/ui/lib/spans.js";
import { correctSpansForClockSkew } from "../../src/tomograph/ui/analysis/clock-skew.js";
import { criticalPath } from "../../src/tomograph/ui/analysis/critical-path.js";
import { latencyStats } from "../../src/tomograph/ui/analysis/histogram.js";
import { mergeTraces } from "../../src/tomograph/ui/analysis/merge.js";

const load = (name) => JSON.parse(readFileSync(new URL(`fixtures/${name}`, import.meta.url), "utf8"));
const byName = (spans, name, kind) => spans.find((s) => s.name === name && (!kind || s.kind === kind));

test("the demo's critical path runs through the client, the server, the cart query and the card charge", () => {
  const spans = load("demo-trace.json");
  const { sections, spans: onPath } = criticalPath(buildTree(spans).roots);
  const client = byName(spans, "GET /checkout", "CLIENT");
  // the path tiles the client's whole duration
  assert.equal(sections[0].start, client.timestamp);
  assert.equal(sections.at(-1).end, client.timestamp + client.duration);
  for (let i = 1; i < sections.length; i++) assert.equal(sections[i].start, sections[i - 1].end);
  // the server did the work in sequence: load cart (with its query), then charge card
  for (const name of ["SELECT cart_items", "load cart", "charge card"]) assert.ok(onPath.has(byName(spans, name)), name);
  assert.ok(onPath.has(byName(spans, "GET /checkout", "SERVER")));
  const names = [...new Set(sections.map((s) => s.span.name))];
  assert.ok(names.indexOf("SELECT cart_items") < names.indexOf("charge card"));
});

test("a zipkin-js call has no skew as recorded, and a server clock behind the client's is corrected", () => {
  const spans = load("zipkin-js-trace.json");
  assert.equal(correctSpansForClockSkew(spans).adjusted.size, 0);

  const server = byName(spans, "get", "SERVER");
  const client = byName(spans, "get", "CLIENT");
  // the server's clock so far behind that its span starts 40ms before the client's
  const lag = server.timestamp - client.timestamp + 40000;
  const behind = spans.map((s) => (s === server ? { ...s, timestamp: s.timestamp - lag } : s));
  const skewedServer = behind.find((s) => s.kind === "SERVER");
  assert.ok(skewedServer.timestamp < client.timestamp, "the server appears to start before its client");
  const { spans: shown, adjusted } = correctSpansForClockSkew(behind);
  const corrected = shown.find((s) => s.kind === "SERVER");
  assert.ok(corrected.timestamp > client.timestamp);
  assert.ok(corrected.timestamp + corrected.duration < client.timestamp + client.duration);
  assert.deepEqual([...adjusted.values()].map((a) => a.original), [skewedServer]);
  assert.equal(skewedServer.timestamp, server.timestamp - lag, "the spans as stored are unchanged");
  assert.equal(shown.find((s) => s.kind === "CLIENT"), client);
});

test("two runs of the demo merge span for span", () => {
  const first = load("demo-trace.json");
  const second = first.map((s) => ({ ...s, duration: s.name === "charge card" ? s.duration * 3 : s.duration }));
  const merged = mergeTraces(buildTree(first).roots, buildTree(second).roots);
  assert.equal(merged.counts.both, first.length);
  assert.equal(merged.counts.onlyA + merged.counts.onlyB, 0);
  assert.deepEqual(merged.order.filter((n) => n.change.verdict === "slower").map((n) => n.name), ["charge card"]);
});

test("the demo's spans have one error among five", () => {
  const stats = latencyStats(load("demo-trace.json"));
  assert.deepEqual([stats.count, stats.errors], [5, 1]);
});
