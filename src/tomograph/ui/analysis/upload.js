// Trace files opened in the browser (never stored): Zipkin v2 JSON (a list of spans, or a list
// of traces as Zipkin's /api/v2/traces returns) or OTLP/JSON (resourceSpans / scopeSpans /
// spans; ids hex as the OTLP spec writes them or base64 as protobuf's JSON mapping does; times
// as numbers or strings of nanoseconds). Both become Zipkin v2 spans, checked and normalized by
// the collector's own ingest rules, so a file looks the same opened here as it would stored.
// Pure: no DOM. Anything wrong with the file raises a TraceFileError saying where and what;
// nothing else is ever thrown.

import { normalTraceId } from "../lib/spans.js";

/** The one error parseTraceFile raises: its message says what is wrong and where. */
export class TraceFileError extends Error {
  constructor(message) {
    super(message);
    this.name = "TraceFileError";
  }
}

/** Most spans one file may hold: a browser tab holds them all, and draws them. */
export const MAX_SPANS = 200000;

const KINDS = new Set(["CLIENT", "SERVER", "PRODUCER", "CONSUMER"]);
const HEX = /^[0-9a-fA-F]+$/;

const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
const has = (object, key) => Object.prototype.hasOwnProperty.call(object, key);
const fail = (where, message) => { throw new TraceFileError(`${where}: ${message}`); };

/** A short rendering of a bad value for an error message. */
function show(value) {
  let text;
  try { text = JSON.stringify(value); } catch (_) { text = undefined; }
  if (text === undefined) text = String(value);
  return text.length <= 60 ? text : `${text.slice(0, 57)}...`;
}

// ---- the shape every span ends in (the collector's normalization) ----------------------------

const isZeros = (hex) => /^0+$/.test(hex);

// Fields in Zipkin's order, unset ones left out, annotations sorted with exact duplicates dropped.
function spanOf(fields) {
  const span = { traceId: normalTraceId(fields.traceId) };
  if (fields.parentId && !isZeros(fields.parentId)) span.parentId = fields.parentId.toLowerCase();
  span.id = fields.id.toLowerCase();
  if (fields.kind) span.kind = fields.kind;
  if (fields.name) span.name = fields.name.toLowerCase();
  if (fields.timestamp) span.timestamp = fields.timestamp;
  if (fields.duration) span.duration = fields.duration;
  if (fields.debug) span.debug = true;
  if (fields.shared) span.shared = true;
  if (fields.localEndpoint) span.localEndpoint = fields.localEndpoint;
  if (fields.remoteEndpoint) span.remoteEndpoint = fields.remoteEndpoint;
  const seen = new Set();
  const notes = [];
  for (const note of [...(fields.annotations || [])].sort((a, b) =>
    a.timestamp - b.timestamp || (a.value < b.value ? -1 : a.value > b.value ? 1 : 0))) {
    const key = `${note.timestamp}\u0000${note.value}`;
    if (!seen.has(key)) { seen.add(key); notes.push(note); }
  }
  if (notes.length) span.annotations = notes;
  // fromEntries defines own properties: a "__proto__" tag stays a tag
  if (fields.tags && fields.tags.length) span.tags = Object.fromEntries(fields.tags);
  return span;
}

// ---- Zipkin v2 JSON ---------------------------------------------------------------------------

function hexId(where, field, value, widths) {
  if (typeof value !== "string" || !widths.includes(value.length) || !HEX.test(value)) {
    fail(where, `${field} must be ${widths.join(" or ")} hex characters, not ${show(value)}`);
  }
  return value;
}

function micros(where, field, value) {
  if (!Number.isSafeInteger(value) || value < 0) {
    fail(where, `${field} must be a non-negative integer (epoch µs), not ${show(value)}`);
  }
  return value;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6 = /^[0-9a-fA-F:.]{2,45}$/;

function endpoint(where, field, value) {
  if (!isObject(value)) fail(where, `${field} must be an object, not ${show(value)}`);
  const out = {};
  const service = value.serviceName;
  if (service !== undefined && service !== null) {
    if (typeof service !== "string") fail(where, `${field}.serviceName must be a string, not ${show(service)}`);
    if (service) out.serviceName = service.toLowerCase();
  }
  for (const [key, pattern] of [["ipv4", IPV4], ["ipv6", IPV6]]) {
    const address = value[key];
    if (address === undefined || address === null || address === "") continue;
    if (typeof address !== "string" || !pattern.test(address) || (key === "ipv6" && !address.includes(":"))) {
      fail(where, `${field}.${key} is not an ${key === "ipv4" ? "IPv4" : "IPv6"} address: ${show(address)}`);
    }
    out[key] = address.toLowerCase();
  }
  const port = value.port;
  if (port !== undefined && port !== null) {
    if (!Number.isInteger(port) || port < 0 || port > 65535) fail(where, `${field}.port must be 0 to 65535, not ${show(port)}`);
    if (port) out.port = port;
  }
  return Object.keys(out).length ? out : null;
}

function zipkinSpan(raw, where) {
  if (!isObject(raw)) fail(where, `must be a JSON object, not ${show(raw)}`);
  if (!has(raw, "traceId")) fail(where, "traceId is missing");
  if (!has(raw, "id")) fail(where, "id is missing");
  const traceId = hexId(where, "traceId", raw.traceId, [16, 32]);
  if (isZeros(traceId)) fail(where, "traceId must not be all zeros");
  const id = hexId(where, "id", raw.id, [16]);
  if (isZeros(id)) fail(where, "id must not be all zeros");
  const fields = { traceId, id };
  if (raw.parentId !== undefined && raw.parentId !== null) fields.parentId = hexId(where, "parentId", raw.parentId, [16]);
  if (raw.kind !== undefined && raw.kind !== null) {
    if (!KINDS.has(raw.kind)) fail(where, `kind must be one of ${[...KINDS].join(", ")}, not ${show(raw.kind)}`);
    fields.kind = raw.kind;
  }
  if (raw.name !== undefined && raw.name !== null) {
    if (typeof raw.name !== "string") fail(where, `name must be a string, not ${show(raw.name)}`);
    fields.name = raw.name;
  }
  for (const field of ["timestamp", "duration"]) {
    if (raw[field] !== undefined && raw[field] !== null) fields[field] = micros(where, field, raw[field]);
  }
  for (const field of ["localEndpoint", "remoteEndpoint"]) {
    if (raw[field] !== undefined && raw[field] !== null) fields[field] = endpoint(where, field, raw[field]);
  }
  if (raw.annotations !== undefined && raw.annotations !== null) {
    if (!Array.isArray(raw.annotations)) fail(where, "annotations must be a list");
    fields.annotations = raw.annotations.map((note, index) => {
      const at = `annotations[${index}]`;
      if (!isObject(note)) fail(where, `${at} must be an object, not ${show(note)}`);
      if (typeof note.value !== "string") fail(where, `${at}.value must be a string`);
      return { timestamp: micros(where, `${at}.timestamp`, note.timestamp), value: note.value };
    });
  }
  if (raw.tags !== undefined && raw.tags !== null) {
    if (!isObject(raw.tags)) fail(where, "tags must be an object of strings");
    // numbers and booleans are taken as their text, as Zipkin's own parser does
    fields.tags = Object.entries(raw.tags).map(([key, value]) => {
      if (typeof value === "string") return [key, value];
      if (typeof value === "number" || typeof value === "boolean") return [key, String(value)];
      return fail(where, `tags[${show(key)}] must be a string, not ${show(value)}`);
    });
  }
  for (const flag of ["debug", "shared"]) {
    const value = raw[flag];
    if (value !== undefined && value !== null && typeof value !== "boolean") fail(where, `${flag} must be true or false, not ${show(value)}`);
    fields[flag] = value === true;
  }
  return spanOf(fields);
}

// Zipkin v1 JSON is a list of spans too, but its services live in annotations' endpoints and
// binaryAnnotations: read as v2 it would show every span without a service. Refused instead.
function isZipkinV1(raw) {
  if (!isObject(raw)) return false;
  if (has(raw, "binaryAnnotations")) return true;
  return Array.isArray(raw.annotations) && raw.annotations.some((note) => isObject(note) && has(note, "endpoint"));
}

function zipkinSpans(document, limit) {
  const spans = [];
  const nested = document.some(Array.isArray);
  if (document.some((item) => (Array.isArray(item) ? item.some(isZipkinV1) : isZipkinV1(item)))) {
    throw new TraceFileError("this is Zipkin v1 JSON (annotations with endpoints, binaryAnnotations); open Zipkin v2 JSON or OTLP/JSON, or send the file to the collector's /api/v1/spans");
  }
  document.forEach((item, t) => {
    if (nested) {
      if (!Array.isArray(item)) fail(`trace ${t}`, `a list of traces holds lists of spans, not ${show(item)}`);
      item.forEach((raw, s) => {
        if (spans.length >= limit) tooMany(limit);
        spans.push(zipkinSpan(raw, `trace ${t}, span ${s}`));
      });
    } else {
      if (spans.length >= limit) tooMany(limit);
      spans.push(zipkinSpan(item, `span ${t}`));
    }
  });
  return spans;
}

function tooMany(limit) {
  throw new TraceFileError(`the file holds more than ${limit} spans, more than this page can show`);
}

// ---- OTLP/JSON --------------------------------------------------------------------------------

const OTLP_KINDS = { 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER" };
const OTLP_KIND_NAMES = {
  SPAN_KIND_UNSPECIFIED: 0, SPAN_KIND_INTERNAL: 1, SPAN_KIND_SERVER: 2, SPAN_KIND_CLIENT: 3,
  SPAN_KIND_PRODUCER: 4, SPAN_KIND_CONSUMER: 5,
};
const STATUS_CODES = { STATUS_CODE_UNSET: 0, STATUS_CODE_OK: 1, STATUS_CODE_ERROR: 2 };
const REMOTE_SERVICE_KEYS = ["peer.service", "server.address", "net.peer.name", "network.peer.address",
  "net.sock.peer.addr", "peer.hostname", "peer.address", "db.name"];
const REMOTE_IP_KEYS = ["network.peer.address", "net.sock.peer.addr", "net.peer.ip"];
const REMOTE_PORT_KEYS = ["network.peer.port", "server.port", "net.peer.port", "net.sock.peer.port"];
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

// An OTLP id as lower hex: hex of 2*size characters, or base64 of size bytes; "" is no id.
function otlpId(where, field, value, size, zerosAllowed = false) {
  if (value === undefined || value === null || value === "") return null;
  if (typeof value !== "string") fail(where, `${field} must be a string, not ${show(value)}`);
  let hex;
  if (value.length === 2 * size && HEX.test(value)) hex = value.toLowerCase();
  else if (BASE64.test(value) && value.length % 4 !== 1) {
    let bytes;
    try { bytes = atob(value.replace(/-/g, "+").replace(/_/g, "/")); } catch (_) { bytes = null; }
    if (bytes !== null && bytes.length === size) {
      hex = [...bytes].map((c) => c.charCodeAt(0).toString(16).padStart(2, "0")).join("");
    }
  }
  if (hex === undefined) fail(where, `${field} must be ${2 * size} hex characters or base64 of ${size} bytes, not ${show(value)}`);
  if (!zerosAllowed && isZeros(hex)) fail(where, `${field} must not be all zeros`);
  return hex;
}

// Nanoseconds (a number, or a string of digits as protobuf's JSON mapping writes 64-bit ints)
// as BigInt; undefined when absent.
function nanos(where, field, value) {
  if (value === undefined || value === null || value === "" || value === 0 || value === "0") return undefined;
  let ns;
  if (typeof value === "number" && Number.isFinite(value) && value > 0) ns = BigInt(Math.round(value));
  else if (typeof value === "string" && /^\d{1,20}$/.test(value)) ns = BigInt(value);
  // OTLP's times are fixed64
  if (ns === undefined || ns > MAX_U64) fail(where, `${field} must be a non-negative integer of nanoseconds, not ${show(value)}`);
  return ns;
}

const MAX_U64 = 2n ** 64n - 1n;
const toMicros = (ns) => Number((ns + 500n) / 1000n);

// OTLP's ints and doubles both arrive as JavaScript numbers (or an int as a string), but the
// collector, in Python, writes them differently (5 and 5.0; 1e-05) in tags and in the JSON of
// event notes. They are kept apart here so the text comes out the same.
class IntValue {
  constructor(digits) { this.digits = digits; }
}
class DoubleValue {
  constructor(number) { this.number = number; }
}

// A double as Python writes it (repr): shortest digits, ".0" on whole numbers, an exponent
// below 1e-4 or from 1e16 up, written with a sign and two digits at least (1e-05, 1.5e+16).
function pythonFloat(x) {
  if (Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const [mantissa, exponentText] = x.toExponential().split("e");
  const exponent = Number(exponentText);
  const sign = x < 0 ? "-" : "";
  const digits = mantissa.replace(/^-/, "").replace(".", "");
  if (exponent < -4 || exponent >= 16) {
    const shown = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${shown}e${exponent < 0 ? "-" : "+"}${String(Math.abs(exponent)).padStart(2, "0")}`;
  }
  if (exponent < 0) return `${sign}0.${"0".repeat(-exponent - 1)}${digits}`;
  const whole = digits.slice(0, exponent + 1).padEnd(exponent + 1, "0");
  return `${sign}${whole}.${digits.slice(exponent + 1) || "0"}`;
}

// An AnyValue as a plain value: text, boolean, IntValue, DoubleValue, list, or object (a map).
function plainValue(value, depth = 0) {
  if (!isObject(value) || depth > 32) return null;
  if (has(value, "stringValue")) return typeof value.stringValue === "string" ? value.stringValue : String(value.stringValue);
  if (has(value, "boolValue")) return value.boolValue === true || value.boolValue === "true";
  if (has(value, "intValue")) {
    const int = value.intValue;
    if (typeof int === "string" && /^-?\d+$/.test(int)) return new IntValue(BigInt(int).toString());
    if (Number.isSafeInteger(int)) return new IntValue(String(int));
    return String(int);
  }
  if (has(value, "doubleValue")) return typeof value.doubleValue === "number" ? new DoubleValue(value.doubleValue) : String(value.doubleValue);
  if (has(value, "bytesValue")) return String(value.bytesValue);
  if (has(value, "arrayValue")) {
    const values = isObject(value.arrayValue) && Array.isArray(value.arrayValue.values) ? value.arrayValue.values : [];
    return values.map((item) => plainValue(item, depth + 1));
  }
  if (has(value, "kvlistValue")) {
    const values = isObject(value.kvlistValue) && Array.isArray(value.kvlistValue.values) ? value.kvlistValue.values : [];
    return new Map(values.filter(isObject).map((kv) => [String(kv.key), plainValue(kv.value, depth + 1)]));
  }
  return null;
}

// JSON as the collector writes it: compact and in the order given for a tag's list or map,
// ", "/": " and keys sorted for the {"name": {attributes}} of an event or link note.
function pythonJson(value, notes) {
  if (value === null || value === undefined) return "null";
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "boolean") return String(value);
  if (value instanceof IntValue) return value.digits;
  if (value instanceof DoubleValue) {
    const text = pythonFloat(value.number);
    return { nan: "NaN", inf: "Infinity", "-inf": "-Infinity" }[text] || text;
  }
  const comma = notes ? ", " : ",";
  if (Array.isArray(value)) return `[${value.map((item) => pythonJson(item, notes)).join(comma)}]`;
  let entries = [...value.entries()];
  if (notes) entries = entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([key, item]) => `${JSON.stringify(key)}${notes ? ": " : ":"}${pythonJson(item, notes)}`).join(comma)}}`;
}

function attributes(where, list) {
  if (list === undefined || list === null) return new Map();
  if (!Array.isArray(list)) fail(where, `attributes must be a list, not ${show(list)}`);
  const out = new Map();
  list.forEach((kv, index) => {
    if (!isObject(kv) || typeof kv.key !== "string") fail(where, `attributes[${index}] must be {"key": text, "value": ...}, not ${show(kv)}`);
    out.set(kv.key, plainValue(kv.value));
  });
  return out;
}

// An attribute as tag text: booleans true/false, numbers' text, lists and maps as JSON.
function text(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") return value;
  if (typeof value === "boolean") return String(value);
  if (value instanceof IntValue) return value.digits;
  if (value instanceof DoubleValue) return pythonFloat(value.number);
  return pythonJson(value, false);
}

function remoteEndpoint(attrs) {
  const out = {};
  for (const key of REMOTE_SERVICE_KEYS) {
    const value = attrs.get(key);
    if (typeof value === "string" && value) { out.serviceName = value.toLowerCase(); break; }
  }
  for (const key of REMOTE_IP_KEYS) {
    const value = attrs.get(key);
    if (typeof value !== "string") continue;
    if (IPV4.test(value)) { out.ipv4 = value; break; }
    if (value.includes(":") && IPV6.test(value)) { out.ipv6 = value.toLowerCase(); break; }
  }
  for (const key of REMOTE_PORT_KEYS) {
    const port = attrs.get(key);
    // an int attribute only, as the collector reads it
    const value = port instanceof IntValue ? Number(port.digits) : NaN;
    if (Number.isInteger(value) && value > 0 && value < 65536) { out.port = value; break; }
  }
  return Object.keys(out).length ? out : null;
}

// {"name": {attributes}} as JSON: how an event or link with attributes reads in Zipkin.
function attributesJson(name, attrs) {
  return pythonJson(new Map([[name, attrs]]), true);
}

function otlpSpan(raw, where, service, resourceTags, scope) {
  if (!isObject(raw)) fail(where, `must be a JSON object, not ${show(raw)}`);
  const traceId = otlpId(where, "traceId", raw.traceId, 16);
  const id = otlpId(where, "spanId", raw.spanId, 8);
  if (!traceId || !id) fail(where, "traceId and spanId are required");
  // all zeros is the invalid span id, which some SDKs sent as a root span's parent: no parent
  const parentId = otlpId(where, "parentSpanId", raw.parentSpanId, 8, true);
  let kind = raw.kind;
  if (typeof kind === "string" && has(OTLP_KIND_NAMES, kind)) kind = OTLP_KIND_NAMES[kind];
  if (kind !== undefined && kind !== null && !(Number.isInteger(kind) && kind >= 0 && kind <= 5)) {
    fail(where, `kind must be 0 to 5 or a SPAN_KIND_ name, not ${show(raw.kind)}`);
  }
  if (raw.name !== undefined && raw.name !== null && typeof raw.name !== "string") fail(where, `name must be a string, not ${show(raw.name)}`);
  const start = nanos(where, "startTimeUnixNano", raw.startTimeUnixNano);
  const end = nanos(where, "endTimeUnixNano", raw.endTimeUnixNano);
  let timestamp = 0;
  let duration = 0;
  if (start !== undefined) {
    timestamp = toMicros(start);
    if (end !== undefined) {
      if (end < start) fail(where, "endTimeUnixNano is before startTimeUnixNano");
      duration = Math.max(1, toMicros(end - start));
    }
  }
  const attrs = attributes(where, raw.attributes);
  const tags = new Map(resourceTags);
  for (const [key, value] of attrs) tags.set(key, text(value));
  const annotations = [];
  const events = raw.events === undefined || raw.events === null ? [] : raw.events;
  if (!Array.isArray(events)) fail(where, `events must be a list, not ${show(events)}`);
  events.forEach((event, index) => {
    const at = `${where}, events[${index}]`;
    if (!isObject(event)) fail(at, `must be an object, not ${show(event)}`);
    const name = typeof event.name === "string" ? event.name : "";
    const eventAttrs = attributes(at, event.attributes);
    let value;
    if (name === "exception") {
      const type = text(eventAttrs.get("exception.type"));
      const message = text(eventAttrs.get("exception.message"));
      for (const key of ["exception.type", "exception.stacktrace"]) {
        if (eventAttrs.has(key) && !tags.has(key)) tags.set(key, text(eventAttrs.get(key)));
      }
      value = (message ? `${type}: ${message}` : type) || "exception";
    } else {
      value = eventAttrs.size ? attributesJson(name, eventAttrs) : name;
    }
    const time = nanos(at, "timeUnixNano", event.timeUnixNano);
    annotations.push({ timestamp: time === undefined ? 0 : toMicros(time), value });
  });
  const links = raw.links === undefined || raw.links === null ? [] : raw.links;
  if (!Array.isArray(links)) fail(where, `links must be a list, not ${show(links)}`);
  for (const link of links) {
    // a link is kept as a note, never the reason a file is refused (its ids may be all zeros)
    if (!isObject(link)) continue;
    let linkTrace;
    let linkSpan;
    try {
      linkTrace = otlpId(where, "link traceId", link.traceId, 16, true);
      linkSpan = otlpId(where, "link spanId", link.spanId, 8, true);
    } catch (_) { continue; }
    if (!linkTrace || !linkSpan) continue;
    let linkAttrs;
    try { linkAttrs = attributes(where, link.attributes); } catch (_) { linkAttrs = new Map(); }
    linkAttrs.set("traceId", linkTrace);
    linkAttrs.set("spanId", linkSpan);
    annotations.push({ timestamp, value: attributesJson("link", linkAttrs) });
  }
  if (scope && typeof scope.name === "string" && scope.name) {
    tags.set("otel.scope.name", scope.name);
    if (typeof scope.version === "string" && scope.version) tags.set("otel.scope.version", scope.version);
  }
  const status = isObject(raw.status) ? raw.status : {};
  const code = typeof status.code === "string" ? STATUS_CODES[status.code] : status.code;
  if (code === 2) {
    tags.set("otel.status_code", "ERROR");
    tags.set("error", (typeof status.message === "string" && status.message) || tags.get("error") || "");
  } else {
    if (code === 1) tags.set("otel.status_code", "OK");
    if (attrs.get("error") === false || attrs.get("error") === "false") tags.delete("error");
  }
  if (typeof raw.traceState === "string" && raw.traceState) tags.set("w3c.tracestate", raw.traceState);
  for (const field of ["droppedAttributesCount", "droppedEventsCount", "droppedLinksCount"]) {
    const count = Number(raw[field]);
    if (Number.isInteger(count) && count > 0) {
      tags.set(`otel.${field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`, String(count));
    }
  }
  return spanOf({
    traceId, id, parentId, kind: OTLP_KINDS[kind], name: raw.name || "", timestamp, duration,
    localEndpoint: { serviceName: service }, remoteEndpoint: remoteEndpoint(attrs), annotations,
    tags: [...tags.entries()],
  });
}

function otlpSpans(document, limit) {
  if (!Array.isArray(document.resourceSpans)) fail("resourceSpans", `must be a list, not ${show(document.resourceSpans)}`);
  const spans = [];
  document.resourceSpans.forEach((resourceSpans, r) => {
    const at = `resourceSpans[${r}]`;
    if (!isObject(resourceSpans)) fail(at, `must be an object, not ${show(resourceSpans)}`);
    const resource = isObject(resourceSpans.resource) ? resourceSpans.resource : {};
    const resourceAttrs = attributes(`${at}.resource`, resource.attributes);
    const service = text(resourceAttrs.get("service.name")).toLowerCase() || "unknown_service";
    resourceAttrs.delete("service.name");
    const resourceTags = [...resourceAttrs.entries()].map(([key, value]) => [key, text(value)]);
    // "instrumentationLibrarySpans": what OTLP called scopeSpans before 0.15
    const scopes = resourceSpans.scopeSpans ?? resourceSpans.instrumentationLibrarySpans ?? [];
    if (!Array.isArray(scopes)) fail(at, `scopeSpans must be a list, not ${show(scopes)}`);
    scopes.forEach((scopeSpans, s) => {
      const where = `${at}.scopeSpans[${s}]`;
      if (!isObject(scopeSpans)) fail(where, `must be an object, not ${show(scopeSpans)}`);
      const scope = isObject(scopeSpans.scope) ? scopeSpans.scope
        : isObject(scopeSpans.instrumentationLibrary) ? scopeSpans.instrumentationLibrary : null;
      const list = scopeSpans.spans ?? [];
      if (!Array.isArray(list)) fail(where, `spans must be a list, not ${show(list)}`);
      list.forEach((raw, i) => {
        if (spans.length >= limit) tooMany(limit);
        spans.push(otlpSpan(raw, `${where}.spans[${i}]`, service, resourceTags, scope));
      });
    });
  });
  return spans;
}

// ---- the file ---------------------------------------------------------------------------------

/** Parse the text of a trace file: Zipkin v2 JSON or OTLP/JSON. Returns { format, traces }:
 * format "zipkin" or "otlp", traces [{ traceId, spans }] in the order the file first names them,
 * each span a normalized Zipkin v2 span. Raises TraceFileError, and only that, for anything
 * wrong. Example: parseTraceFile('[{"traceId":"a…","id":"b…"}]').traces[0].spans.length === 1 */
export function parseTraceFile(text, { maxSpans = MAX_SPANS } = {}) {
  try {
    return parse(text, maxSpans);
  } catch (error) {
    if (error instanceof TraceFileError) throw error;
    // a bug or a resource limit (a too deeply nested file): still this module's one error type
    throw new TraceFileError(`the file could not be read: ${error && error.message ? error.message : String(error)}`);
  }
}

function parse(text, maxSpans) {
  if (typeof text !== "string") throw new TraceFileError("the file is not text");
  if (!text.trim()) throw new TraceFileError("the file is empty");
  let document;
  try {
    document = JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch (error) {
    throw new TraceFileError(`the file is not JSON: ${error.message}`);
  }
  let format;
  let spans;
  if (Array.isArray(document)) {
    format = "zipkin";
    spans = zipkinSpans(document, maxSpans);
  } else if (isObject(document) && has(document, "resourceSpans")) {
    format = "otlp";
    spans = otlpSpans(document, maxSpans);
  } else if (isObject(document) && Array.isArray(document.data) && document.data.some((t) => isObject(t) && has(t, "traceID"))) {
    throw new TraceFileError("this is Jaeger's JSON; export the trace as Zipkin v2 JSON or OTLP/JSON");
  } else {
    throw new TraceFileError("the file is neither Zipkin v2 JSON (a list of spans or of traces) nor OTLP/JSON (an object with resourceSpans)");
  }
  if (!spans.length) throw new TraceFileError("the file holds no spans");
  const byTrace = new Map();
  for (const span of spans) {
    if (!byTrace.has(span.traceId)) byTrace.set(span.traceId, []);
    byTrace.get(span.traceId).push(span);
  }
  return { format, traces: [...byTrace].map(([traceId, list]) => ({ traceId, spans: list })) };
}
