// Trace files opened in the browser: Zipkin v2 JSON and OTLP/JSON become the spans the collector
// would store; anything wrong is a TraceFileError naming the place, and nothing else is thrown.
import test from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { MAX_SPANS, TraceFileError, parseTraceFile } from "../../src/tomograph/ui/analysis/upload.js";

const fixture = (name) => readFileSync(new URL(`fixtures/${name}`, import.meta.url), "utf8");
const json = (value) => JSON.stringify(value);
const rejects = (text, pattern) => assert.throws(() => parseTraceFile(text), (error) =>
  error instanceof TraceFileError && pattern.test(error.message), `expected ${pattern} for ${text.slice(0, 80)}`);

const TRACE = "4e441824ec2b6a44ffdc9bb9a6453df3";
const good = (extra = {}) => ({ traceId: TRACE, id: "0000000000000001", ...extra });

test("tomograph's own Zipkin v2 JSON reads as the collector's decoder reads it", () => {
  const parsed = parseTraceFile(fixture("demo-trace.json"));
  assert.equal(parsed.format, "zipkin");
  assert.equal(parsed.traces.length, 1);
  assert.deepEqual(parsed.traces[0].spans, JSON.parse(fixture("demo-trace-decoded.json")));
});

test("OTLP/JSON with hex ids and with base64 ids reads as the collector's OTLP decoder reads it", () => {
  const reference = JSON.parse(fixture("demo-otlp-decoded.json"));
  for (const name of ["demo-otlp-hex.json", "demo-otlp-base64.json"]) {
    const parsed = parseTraceFile(fixture(name));
    assert.equal(parsed.format, "otlp");
    assert.deepEqual(parsed.traces[0].spans, reference, name);
  }
});

test("a zipkin-js trace as the collector answers it reads back unchanged", () => {
  const spans = JSON.parse(fixture("zipkin-js-trace.json"));
  assert.deepEqual(parseTraceFile(json(spans)).traces[0].spans, spans);
});

test("a list of traces (Zipkin's /api/v2/traces answer) gives each trace", () => {
  const other = "00000000000000000000000000000abc";
  const parsed = parseTraceFile(json([[good()], [good({ traceId: other }), good({ traceId: other, id: "0000000000000002" })]]));
  assert.deepEqual(parsed.traces.map((t) => [t.traceId, t.spans.length]), [[TRACE, 1], ["0000000000000abc", 2]]);
});

test("spans are normalized as the collector stores them", () => {
  const [span] = parseTraceFile(json([{
    traceId: TRACE.toUpperCase(), id: "00000000000000AB", parentId: "0000000000000000", name: "GET /Items",
    kind: "SERVER", timestamp: 0, duration: 5, shared: true, debug: false, unknown: 1,
    localEndpoint: { serviceName: "Web", ipv4: "10.0.0.1", port: 0 },
    annotations: [{ timestamp: 2, value: "b" }, { timestamp: 1, value: "a" }, { timestamp: 2, value: "b" }],
    tags: { n: 12.5, ok: true, s: "x" },
  }])).traces[0].spans;
  assert.deepEqual(span, {
    traceId: TRACE, id: "00000000000000ab", kind: "SERVER", name: "get /items", duration: 5, shared: true,
    localEndpoint: { serviceName: "web", ipv4: "10.0.0.1" },
    annotations: [{ timestamp: 1, value: "a" }, { timestamp: 2, value: "b" }],
    tags: { n: "12.5", ok: "true", s: "x" },
  });
});

test("a __proto__ tag stays a tag and pollutes nothing", () => {
  const [span] = parseTraceFile('[{"traceId":"0000000000000001","id":"0000000000000001","tags":{"__proto__":"x","constructor":"y"}}]').traces[0].spans;
  assert.equal(Object.getPrototypeOf(span.tags), Object.prototype);
  assert.equal(Object.getOwnPropertyDescriptor(span.tags, "__proto__").value, "x");
  assert.equal({}.x, undefined);
});

test("bad Zipkin spans are refused with the span and field named", () => {
  rejects(json([good(), { id: "0000000000000001" }]), /^span 1: traceId is missing$/);
  rejects(json([good({ traceId: "xyz" })]), /^span 0: traceId must be 16 or 32 hex characters, not "xyz"$/);
  rejects(json([good({ id: "0000000000000000" })]), /id must not be all zeros/);
  rejects(json([good({ parentId: 5 })]), /parentId must be 16 hex characters, not 5/);
  rejects(json([good({ kind: "client" })]), /kind must be one of CLIENT, SERVER, PRODUCER, CONSUMER/);
  rejects(json([good({ timestamp: -1 })]), /timestamp must be a non-negative integer/);
  rejects(json([good({ duration: 1.5 })]), /duration must be a non-negative integer/);
  rejects(json([good({ duration: 2 ** 63 })]), /duration must be a non-negative integer/);
  rejects(json([good({ localEndpoint: "web" })]), /localEndpoint must be an object/);
  rejects(json([good({ remoteEndpoint: { ipv4: "300.1.1.1" } })]), /remoteEndpoint.ipv4 is not an IPv4 address/);
  rejects(json([good({ localEndpoint: { port: 70000 } })]), /port must be 0 to 65535/);
  rejects(json([good({ annotations: [{ timestamp: 1 }] })]), /annotations\[0\].value must be a string/);
  rejects(json([good({ tags: { a: { b: 1 } } })]), /tags\["a"\] must be a string/);
  rejects(json([good({ shared: "yes" })]), /shared must be true or false/);
  rejects(json([[good()], good()]), /^trace 1: a list of traces holds lists of spans/);
});

test("files that are not trace files say so", () => {
  rejects("", /the file is empty/);
  rejects("not json", /the file is not JSON/);
  rejects("[]", /the file holds no spans/);
  rejects('{"resourceSpans": []}', /the file holds no spans/);
  rejects("{}", /neither Zipkin v2 JSON .* nor OTLP\/JSON/);
  rejects("42", /neither Zipkin v2 JSON/);
  rejects(json({ data: [{ traceID: "abc", spans: [] }] }), /Jaeger's JSON/);
  rejects(json([good({ binaryAnnotations: [{ key: "http.path", value: "/" }] })]), /Zipkin v1 JSON/);
  rejects(json([[good({ annotations: [{ timestamp: 1, value: "cs", endpoint: { serviceName: "web" } }] })]]), /Zipkin v1 JSON/);
  assert.throws(() => parseTraceFile(undefined), TraceFileError);
  assert.equal(parseTraceFile(`\ufeff${json([good()])}`).traces.length, 1, "a byte order mark is fine");
});

test("more spans than a page can show are refused, not half read", () => {
  const spans = Array.from({ length: 11 }, (_, i) => good({ id: (i + 1).toString(16).padStart(16, "0") }));
  assert.throws(() => parseTraceFile(json(spans), { maxSpans: 10 }), /more than 10 spans/);
  assert.equal(parseTraceFile(json(spans), { maxSpans: 11 }).traces[0].spans.length, 11);
  assert.ok(MAX_SPANS >= 100000);
});

const otlp = (span, resource = [{ key: "service.name", value: { stringValue: "Checkout" } }]) => json({
  resourceSpans: [{ resource: { attributes: resource }, scopeSpans: [{ scope: { name: "lib", version: "1" }, spans: [span] }] }],
});
const otlpSpan = (extra = {}) => ({
  traceId: TRACE, spanId: "00000000000000aa", name: "GET", kind: 2,
  startTimeUnixNano: "1700000000000000000", endTimeUnixNano: "1700000000001500400", ...extra,
});

test("OTLP spans map to Zipkin's model as OpenTelemetry's Zipkin mapping says", () => {
  const [span] = parseTraceFile(otlp(otlpSpan({
    kind: "SPAN_KIND_CLIENT", parentSpanId: "",
    attributes: [
      { key: "peer.service", value: { stringValue: "Payments" } },
      { key: "network.peer.port", value: { intValue: "8443" } },
      { key: "retry", value: { boolValue: false } },
      { key: "list", value: { arrayValue: { values: [{ stringValue: "a" }, { intValue: 2 }] } } },
    ],
    events: [
      { timeUnixNano: 1700000000000500000, name: "sent" },
      { timeUnixNano: "1700000000000700000", name: "exception", attributes: [
        { key: "exception.type", value: { stringValue: "ValueError" } },
        { key: "exception.message", value: { stringValue: "bad" } }] },
    ],
    status: { code: "STATUS_CODE_ERROR", message: "boom" },
  }), [{ key: "service.name", value: { stringValue: "Checkout" } }, { key: "host.name", value: { stringValue: "h1" } }])).traces[0].spans;
  assert.deepEqual(span, {
    traceId: TRACE, id: "00000000000000aa", kind: "CLIENT", name: "get",
    timestamp: 1700000000000000, duration: 1500,
    localEndpoint: { serviceName: "checkout" },
    remoteEndpoint: { serviceName: "payments", port: 8443 },
    annotations: [{ timestamp: 1700000000000500, value: "sent" }, { timestamp: 1700000000000700, value: "ValueError: bad" }],
    tags: {
      "host.name": "h1", "peer.service": "Payments", "network.peer.port": "8443", retry: "false", list: '["a",2]',
      "exception.type": "ValueError", "otel.scope.name": "lib", "otel.scope.version": "1",
      "otel.status_code": "ERROR", error: "boom",
    },
  });
});

test("OTLP times as numbers and strings, durations rounded up to 1µs, missing service named", () => {
  const [span] = parseTraceFile(otlp(otlpSpan({ startTimeUnixNano: 1700000000000000000, endTimeUnixNano: "1700000000000000100", kind: 1 }), [])).traces[0].spans;
  assert.equal(span.timestamp, 1700000000000000);
  assert.equal(span.duration, 1);
  assert.equal(span.kind, undefined);
  assert.deepEqual(span.localEndpoint, { serviceName: "unknown_service" });
});

test("an all-zero OTLP parentSpanId is a root span, as the collector and OpenTelemetry read it", () => {
  for (const parentSpanId of ["0000000000000000", "AAAAAAAAAAA="]) {
    const [span] = parseTraceFile(otlp(otlpSpan({ parentSpanId }))).traces[0].spans;
    assert.equal(span.id, "00000000000000aa");
    assert.equal("parentId" in span, false);
  }
});

test("bad OTLP spans are refused with the place named", () => {
  const where = "resourceSpans[0].scopeSpans[0].spans[0]";
  rejects(otlp(otlpSpan({ traceId: "abc" })), new RegExp(`^${where.replace(/[[\]]/g, "\\$&")}: traceId must be 32 hex characters or base64 of 16 bytes`));
  rejects(otlp(otlpSpan({ spanId: "AAAAAAAAAAA=" })), /spanId must not be all zeros/);
  rejects(otlp(otlpSpan({ spanId: undefined })), /traceId and spanId are required/);
  rejects(otlp(otlpSpan({ endTimeUnixNano: "1" })), /endTimeUnixNano is before startTimeUnixNano/);
  rejects(otlp(otlpSpan({ startTimeUnixNano: "-5" })), /startTimeUnixNano must be a non-negative integer of nanoseconds/);
  rejects(otlp(otlpSpan({ endTimeUnixNano: "18446744073709551616" })), /endTimeUnixNano must be a non-negative integer/);
  rejects(otlp(otlpSpan({ kind: 9 })), /kind must be 0 to 5/);
  rejects(otlp(otlpSpan({ attributes: [{ value: {} }] })), /attributes\[0\] must be/);
  rejects(json({ resourceSpans: {} }), /^resourceSpans: must be a list/);
  rejects(json({ resourceSpans: [{ scopeSpans: [{ spans: {} }] }] }), /spans must be a list/);
});

test("an OTLP status OK, a false error attribute, links and older instrumentationLibrarySpans", () => {
  const document = json({ resourceSpans: [{ instrumentationLibrarySpans: [{ instrumentationLibrary: { name: "old" }, spans: [otlpSpan({
    status: { code: 1 }, attributes: [{ key: "error", value: { boolValue: false } }],
    links: [{ traceId: TRACE, spanId: "00000000000000bb" }, { traceId: "0", spanId: "x" }],
  })] }] }] });
  const [span] = parseTraceFile(document).traces[0].spans;
  assert.deepEqual(span.tags, { "otel.scope.name": "old", "otel.status_code": "OK" });
  assert.deepEqual(span.annotations.map((a) => a.value), [`{"link": {"spanId": "00000000000000bb", "traceId": "${TRACE}"}}`]);
});

// ---- fuzz: whatever the input, a result or a TraceFileError -------------------------------------

function generator(seed) {
  let state = seed >>> 0;
  const next = () => { state = (state * 1664525 + 1013904223) >>> 0; return state / 2 ** 32; };
  const pick = (list) => list[Math.floor(next() * list.length)];
  const strings = ["", "a", "0000000000000001", TRACE, "AAAAAAAAAAE=", "AAAAAAAAAAAAAAAAAAAAAQ==", "\ud800",
    "__proto__", "constructor", "SERVER", "SPAN_KIND_SERVER", "1700000000000000000", "-1", "1e400", "10.0.0.1", "::1",
    "x".repeat(1000), "STATUS_CODE_ERROR"];
  const numbers = [0, 1, -1, 0.5, 2 ** 53, 2 ** 63, 1e308, -0, 65535, 65536, 1700000000000000];
  const keys = ["traceId", "id", "parentId", "spanId", "parentSpanId", "name", "kind", "timestamp", "duration",
    "localEndpoint", "remoteEndpoint", "serviceName", "ipv4", "ipv6", "port", "annotations", "value", "tags",
    "shared", "debug", "resourceSpans", "scopeSpans", "instrumentationLibrarySpans", "spans", "resource", "attributes",
    "key", "stringValue", "intValue", "boolValue", "arrayValue", "kvlistValue", "values", "events", "links", "status",
    "code", "message", "startTimeUnixNano", "endTimeUnixNano", "timeUnixNano", "scope", "data", "traceID", "__proto__"];
  const value = (depth) => {
    const roll = next();
    if (depth > 4 || roll < 0.25) return pick(strings);
    if (roll < 0.4) return pick(numbers);
    if (roll < 0.45) return pick([true, false, null]);
    if (roll < 0.7) return Array.from({ length: Math.floor(next() * 4) }, () => value(depth + 1));
    return Object.fromEntries(Array.from({ length: Math.floor(next() * 6) }, () => [pick(keys), value(depth + 1)]));
  };
  return { next, pick, value };
}

// a valid document with one field replaced by something random
function mutated(random, base) {
  const copy = structuredClone(base);
  const paths = [];
  const walk = (node, path) => {
    if (node && typeof node === "object") for (const key of Object.keys(node)) { paths.push([...path, key]); walk(node[key], [...path, key]); }
  };
  walk(copy, []);
  const path = random.pick(paths);
  let target = copy;
  for (const key of path.slice(0, -1)) target = target[key];
  if (random.next() < 0.2) delete target[path.at(-1)];
  else target[path.at(-1)] = random.value(2);
  return copy;
}

test("random documents give a result or a TraceFileError, never anything else", () => {
  const bases = [JSON.parse(fixture("demo-trace.json")), JSON.parse(fixture("demo-otlp-hex.json")), JSON.parse(fixture("demo-otlp-base64.json"))];
  let parsed = 0;
  for (let seed = 1; seed <= 3000; seed++) {
    const random = generator(seed);
    const document = seed % 3 === 0 ? random.value(0) : mutated(random, bases[seed % bases.length]);
    let text = JSON.stringify(document) ?? "";
    if (seed % 7 === 0) text = text.slice(0, Math.floor(random.next() * text.length)); // cut short
    try {
      const result = parseTraceFile(text);
      parsed += 1;
      for (const trace of result.traces) {
        for (const span of trace.spans) {
          assert.match(span.traceId, /^([0-9a-f]{16}|[0-9a-f]{32})$/);
          assert.match(span.id, /^[0-9a-f]{16}$/);
          if (span.timestamp !== undefined) assert.ok(Number.isSafeInteger(span.timestamp));
          if (span.duration !== undefined) assert.ok(Number.isSafeInteger(span.duration));
          for (const value of Object.values(span.tags || {})) assert.equal(typeof value, "string");
          for (const note of span.annotations || []) assert.equal(typeof note.value, "string");
        }
      }
    } catch (error) {
      assert.ok(error instanceof TraceFileError, `seed ${seed}: ${error && error.stack}`);
      assert.ok(error.message.length > 0 && error.message.length < 400, error.message);
    }
  }
  assert.ok(parsed > 100, `only ${parsed} documents were valid: the fuzzing does not reach deep`);
});

test("a deeply nested file is a TraceFileError, not a stack overflow", () => {
  const deep = `${"[".repeat(100000)}${"]".repeat(100000)}`;
  assert.throws(() => parseTraceFile(deep), TraceFileError);
  const deepValue = { resourceSpans: [{ scopeSpans: [{ spans: [otlpSpan({ attributes: [{ key: "k", value: JSON.parse(`${'{"arrayValue":{"values":['.repeat(1000)}{}${"]}}".repeat(1000)}`) }] })] }] }] };
  const [span] = parseTraceFile(json(deepValue)).traces[0].spans;
  assert.equal(typeof span.tags.k, "string");
});
