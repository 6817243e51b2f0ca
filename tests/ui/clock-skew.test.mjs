// A server span that starts before its client (another host's clock) is shifted into the
// client's window for display; the spans as given stay as they are.
import test from "node:test";
import assert from "node:assert/strict";
import { correctClockSkew, correctSpansForClockSkew, skewShift } from "../../src/tomograph/ui/analysis/clock-skew.js";

const host = (serviceName, ipv4) => (ipv4 ? { serviceName, ipv4 } : { serviceName });
// times are given relative to T, an ordinary epoch time in µs (Zipkin reads 0 as "not set")
const T = 1_700_000_000_000_000;
function span(name, kind, endpoint, at, duration, extra = {}) {
  const timestamp = at === undefined ? undefined : T + at;
  const annotations = extra.annotations && extra.annotations.map((a) => ({ ...a, timestamp: T + a.timestamp }));
  return { traceId: "t", id: name, name, kind, localEndpoint: endpoint, timestamp, duration, ...extra, ...(annotations && { annotations }) };
}
const node = (s, ...children) => ({ span: s, children, depth: 0 });
const times = (result) => result.order.map((n) => `${n.span.name} ${n.span.timestamp - T}`);

const A = host("frontend", "10.0.0.1");
const B = host("backend", "10.0.0.2");
const C = host("db-proxy", "10.0.0.3");

test("a server starting before its client is centred in the client's window", () => {
  const client = span("call", "CLIENT", A, 100, 100);
  const server = span("serve", "SERVER", B, 50, 80);
  const query = span("query", undefined, B, 60, 60, { annotations: [{ timestamp: 70, value: "sent" }] });
  const roots = [node(client, node(server, node(query)))];
  const snapshot = structuredClone(roots);
  const result = correctClockSkew(roots);
  // latency (100 - 80) / 2 = 10 on each side: the server moves from 50 to 110
  assert.deepEqual(times(result), ["call 100", "serve 110", "query 120"]);
  assert.deepEqual(result.order[2].span.annotations, [{ timestamp: T + 130, value: "sent" }]);
  assert.deepEqual(roots, snapshot, "the spans given are left as they were");
  const marks = [...result.adjusted.entries()].map(([s, { shift, original }]) => [s.name, shift, original.timestamp - T]);
  assert.deepEqual(marks, [["serve", 60, 50], ["query", 60, 60]]);
  assert.ok(!result.adjusted.has(result.order[0].span));
});

test("a server that starts after its client is left alone", () => {
  const roots = [node(span("call", "CLIENT", A, 100, 100), node(span("serve", "SERVER", B, 101, 10)))];
  const result = correctClockSkew(roots);
  assert.equal(result.adjusted.size, 0);
  assert.equal(result.order[1].span, roots[0].children[0].span, "unadjusted spans are the same objects");
});

test("no skew is seen between spans of one host, nor between kinds other than client to server", () => {
  assert.equal(skewShift(span("c", "CLIENT", A, 100, 100), span("s", "SERVER", { ...A, serviceName: "x" }, 50, 80)), 0);
  assert.equal(skewShift(span("c", "PRODUCER", A, 100, 100), span("s", "CONSUMER", B, 50, 80)), 0);
  assert.equal(skewShift(span("c", undefined, A, 100, 100), span("s", "SERVER", B, 50, 80)), 0);
  assert.equal(skewShift(span("c", "CLIENT", undefined, 100, 100), span("s", "SERVER", B, 50, 80)), 0);
  assert.equal(skewShift(span("c", "CLIENT", A, undefined, 100), span("s", "SERVER", B, 50, 80)), 0);
});

test("without addresses, two service names are two hosts and one name is one host", () => {
  const client = span("c", "CLIENT", host("frontend"), 100, 100);
  assert.equal(skewShift(client, span("s", "SERVER", host("backend"), 50, 80)), 60);
  assert.equal(skewShift(client, span("s", "SERVER", host("frontend"), 50, 80)), 0);
});

test("a server outlasting its client (asynchronous) or without a duration goes 1µs after the client", () => {
  assert.equal(skewShift(span("c", "CLIENT", A, 100, 20), span("s", "SERVER", B, 40, 50)), 61);
  assert.equal(skewShift(span("c", "CLIENT", A, 100, undefined), span("s", "SERVER", B, 40, 50)), 61);
  assert.equal(skewShift(span("c", "CLIENT", A, 100, 20), span("s", "SERVER", B, 40, undefined)), 61);
});

test("a third host gets its own correction against its shifted client", () => {
  const roots = [node(span("call", "CLIENT", A, 1000, 1000),
    node(span("serve", "SERVER", B, 0, 800),               // B is 1100 behind: moved to 1100
      node(span("lookup", "CLIENT", B, 100, 600),           // moved with B to 1200
        node(span("proxy", "SERVER", C, 1150, 400)))))];    // before 1200 on C's clock: 1300
  const result = correctClockSkew(roots);
  assert.deepEqual(times(result), ["call 1000", "serve 1100", "lookup 1200", "proxy 1300"]);
  const shifts = Object.fromEntries([...result.adjusted].map(([s, a]) => [s.name, a.shift]));
  assert.deepEqual(shifts, { serve: 1100, lookup: 1100, proxy: 150 });
});

test("spans of another host under the skewed server keep their times", () => {
  const roots = [node(span("call", "CLIENT", A, 100, 100),
    node(span("serve", "SERVER", B, 50, 80), node(span("elsewhere", undefined, C, 150, 5))))];
  assert.deepEqual(times(correctClockSkew(roots)), ["call 100", "serve 110", "elsewhere 150"]);
});

test("siblings are ordered again by their corrected starts, depths kept", () => {
  const roots = [node(span("root", undefined, A, 0, 1000),
    node(span("local", undefined, A, 500, 10)),
    node(span("call", "CLIENT", A, 100, 100), node(span("serve", "SERVER", B, -1000, 80))))];
  const result = correctClockSkew(roots);
  assert.deepEqual(times(result), ["root 0", "call 100", "serve 110", "local 500"]);
  assert.deepEqual(result.order.map((n) => n.depth), [0, 1, 2, 1]);
});

test("a 10,000-span chain of skewed calls does not overflow the stack", () => {
  let leaf = node(span("leaf", "SERVER", host("s0", "10.1.0.0"), 0, 1));
  for (let i = 1; i <= 10000; i++) {
    const client = node(span(`c${i}`, "CLIENT", host(`s${i}`, `10.1.${i >> 8}.${i & 255}`), 100, 10), leaf);
    leaf = i % 2 ? client : node(span(`s${i}`, "SERVER", host(`s${i}`, `10.2.${i >> 8}.${i & 255}`), 0, 20), client);
  }
  const result = correctClockSkew([leaf]);
  assert.equal(result.order.length, 1 + 10000 + 5000);
  assert.ok(result.adjusted.size > 1000);
});

test("a server sticking out past its client's end is moved into the client's window", () => {
  const client = { id: "a", kind: "CLIENT", timestamp: 100, duration: 100, localEndpoint: { serviceName: "fe", ipv4: "1.1.1.1" } };
  const server = { id: "a", kind: "SERVER", shared: true, timestamp: 180, duration: 80, localEndpoint: { serviceName: "be", ipv4: "2.2.2.2" } };
  assert.equal(skewShift(client, server), -70); // centred: 110-190
  const { spans, adjusted } = correctSpansForClockSkew([client, server]);
  assert.equal(adjusted.size, 1);
  assert.equal(spans[1].timestamp, 110);
});

test("a server wholly inside its client's window is left alone", () => {
  const client = { id: "a", kind: "CLIENT", timestamp: 100, duration: 100, localEndpoint: { serviceName: "fe", ipv4: "1.1.1.1" } };
  const server = { id: "a", kind: "SERVER", shared: true, timestamp: 120, duration: 80, localEndpoint: { serviceName: "be", ipv4: "2.2.2.2" } };
  assert.equal(skewShift(client, server), 0);
  assert.equal(correctSpansForClockSkew([client, server]).adjusted.size, 0);
});
