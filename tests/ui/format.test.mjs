// node --test: counts in words (src/tomograph/ui/lib/format.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { plural } from "../../src/tomograph/ui/lib/format.js";

test("a count of one takes the singular, every other count the plural", () => {
  assert.equal(plural(1, "span"), "1 span");
  for (const count of [0, 2, 10000]) assert.equal(plural(count, "span"), `${count} spans`);
});
