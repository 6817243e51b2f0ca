// node --test: largest/smallest of the web UI (src/tomograph/ui/lib/extremes.js), and that no UI
// module spreads a list into Math.max/Math.min (V8 throws past ~125,000 arguments).
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { largest, smallest } from "../../src/tomograph/ui/lib/extremes.js";

test("largest and smallest take lists longer than a call's arguments allow", () => {
  const values = Array.from({ length: 300_000 }, (_, i) => i);
  assert.equal(largest(values), 299_999);
  assert.equal(smallest(values), 0);
});

test("largest and smallest of nothing are their bound", () => {
  assert.equal(largest([], 1), 1);
  assert.equal(largest([0.5], 1), 1);
  assert.equal(smallest([]), Infinity);
});

test("no UI module spreads a list into Math.max or Math.min", () => {
  const root = new URL("../../src/tomograph/ui/", import.meta.url).pathname;
  const offenders = [];
  for (const entry of readdirSync(root, { recursive: true })) {
    if (!entry.endsWith(".js")) continue;
    const text = readFileSync(join(root, entry), "utf8");
    text.split("\n").forEach((line, index) => {
      if (/Math\.(max|min)\([^)]*\.\.\./.test(line.split("//")[0])) offenders.push(`${entry}:${index + 1}`);
    });
  }
  assert.deepEqual(offenders, []);
});
