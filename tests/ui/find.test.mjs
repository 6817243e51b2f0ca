// node --test: the find-in-trace query (src/tomograph/ui/analysis/find.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { findSpans, parseFindQuery, spanMatches } from "../../src/tomograph/ui/analysis/find.js";

const checkout = {
  traceId: "a".repeat(32), id: "1a2b3c4d5e6f7081", name: "GET /checkout", kind: "SERVER",
  localEndpoint: { serviceName: "frontend" }, remoteEndpoint: { serviceName: "browser" },
  tags: { "http.method": "GET", "http.status_code": "200" },
  annotations: [{ timestamp: 1, value: "cache miss" }],
};
const charge = {
  traceId: "a".repeat(32), id: "99aa", parentId: "1a2b3c4d5e6f7081", name: "charge card",
  localEndpoint: { serviceName: "payments" }, tags: { error: "card declined", amount: "42.5" },
};
const bare = { traceId: "a".repeat(32), id: "77" }; // no name, endpoints, tags or notes
const spans = [checkout, charge, bare];
const matching = (query) => findSpans(spans, query).map((span) => span.id);

test("a word is looked for in name, services, tags, notes and the span id, ignoring case", () => {
  assert.deepEqual(matching("CHECKOUT"), [checkout.id]);
  assert.deepEqual(matching("payments"), [charge.id]);
  assert.deepEqual(matching("browser"), [checkout.id]); // the remote service
  assert.deepEqual(matching("declined"), [charge.id]); // a tag value
  assert.deepEqual(matching("http.status"), [checkout.id]); // a tag key
  assert.deepEqual(matching("miss"), [checkout.id]); // a note
  assert.deepEqual(matching("1A2B"), [checkout.id]); // the start of the span id
  assert.deepEqual(matching("2b3c"), []); // ids match from their start only
});

test("every word must match", () => {
  assert.deepEqual(matching("get frontend"), [checkout.id]);
  assert.deepEqual(matching("get payments"), []);
});

test("key=value looks at one tag: the key exactly, the value as a part", () => {
  assert.deepEqual(matching("http.method=get"), [checkout.id]);
  assert.deepEqual(matching("http.method=post"), []);
  assert.deepEqual(matching("error="), [charge.id]); // any value of the tag
  assert.deepEqual(matching("method=GET"), []); // not a prefix of the key
});

test("a field prefix limits a word to that field", () => {
  assert.deepEqual(matching("service:front"), [checkout.id]);
  assert.deepEqual(matching("name:payments"), []);
  assert.deepEqual(matching("name:charge"), [charge.id]);
  assert.deepEqual(matching("note:cache"), [checkout.id]);
  assert.deepEqual(matching("tag:card"), [charge.id]);
  assert.deepEqual(matching("id:99"), [charge.id]);
  // an unknown prefix is an ordinary word
  assert.deepEqual(parseFindQuery("http:x"), [{ field: "any", value: "http:x" }]);
});

test("double quotes keep spaces in one word", () => {
  assert.deepEqual(matching('"charge card"'), [charge.id]);
  assert.deepEqual(matching('"card charge"'), []);
  assert.deepEqual(matching('"cache miss'), [checkout.id]); // an unclosed quote runs to the end
});

test("a blank query matches nothing and says so with no words", () => {
  for (const blank of ["", "   ", '""', undefined, null]) {
    assert.deepEqual(parseFindQuery(blank), []);
    assert.deepEqual(findSpans(spans, blank), []);
  }
  assert.equal(spanMatches(checkout, []), false);
});

test("tree nodes ({ span }) are found as their spans are", () => {
  const nodes = spans.map((span) => ({ span, children: [] }));
  assert.deepEqual(findSpans(nodes, "payments"), [nodes[1]]);
});

test("hostile values: not-a-string tags, missing fields, huge and odd text", () => {
  const odd = {
    id: "5", name: "x".repeat(1_000_000) + "needle", tags: { n: 42, nothing: null, lone: "\ud800" },
    annotations: [null, { timestamp: 1 }], localEndpoint: null,
  };
  assert.equal(spanMatches(odd, parseFindQuery("needle")), true);
  assert.equal(spanMatches(odd, parseFindQuery("n=42")), true);
  assert.equal(spanMatches(odd, parseFindQuery("\ud800")), true);
  assert.equal(spanMatches(odd, parseFindQuery("service:anything")), false);
  assert.equal(spanMatches(bare, parseFindQuery("anything")), false);
  // a regular-expression character is an ordinary character
  assert.equal(spanMatches({ id: "1", name: "a.*b" }, parseFindQuery(".*")), true);
  assert.equal(spanMatches({ id: "1", name: "ab" }, parseFindQuery(".*")), false);
});
