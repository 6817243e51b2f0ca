// node --test: the time window fields of the web UI (src/tomograph/ui/lib/time-window.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { showWindow, toLocalInput } from "../../src/tomograph/ui/lib/time-window.js";

test("a time as a datetime-local value, in the local time zone", () => {
  const ms = Date.UTC(2026, 0, 2, 3, 4);
  const local = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  assert.equal(toLocalInput(ms),
    `${local.getFullYear()}-${pad(local.getMonth() + 1)}-${pad(local.getDate())}T${pad(local.getHours())}:${pad(local.getMinutes())}`);
});

test("a time Date cannot hold leaves the field empty instead of throwing", () => {
  for (const ms of [9e15, -9e15, 8.64e15 + 1, NaN, Infinity, Number("abc")]) assert.equal(toLocalInput(ms), "", String(ms));
});

test("an end time beyond Date's range in the address shows an empty end field", () => {
  const end = { value: "x" };
  const lookback = { options: [{ value: "3600000" }], value: "3600000" };
  assert.doesNotThrow(() => showWindow(end, lookback, { endTs: "9000000000000000", lookback: "3600000" }));
  assert.equal(end.value, "");
});
