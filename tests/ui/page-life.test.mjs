// node --test: the life of the page on show (src/tomograph/ui/lib/page-life.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { newestOnly, nextPage, pageSignal, whileShown } from "../../src/tomograph/ui/lib/page-life.js";

const NOT_SETTLED = Symbol("not settled");
// What `promise` has come to once `settled` (which settles no sooner) has: NOT_SETTLED if nothing.
async function outcome(promise, settled) {
  const seen = promise.then((value) => ({ value }), (error) => ({ error }));
  await settled.catch(() => {});
  await new Promise((done) => setImmediate(done)); // the reactions of `promise` have run by now
  return Promise.race([seen, NOT_SETTLED]);
}

test("while the page is on show, a promise passes through as it settles", async () => {
  nextPage();
  const value = Promise.resolve(42);
  assert.deepEqual(await outcome(whileShown(value), value), { value: 42 });
  const failure = Promise.reject(new Error("refused"));
  const seen = await outcome(whileShown(failure), failure);
  assert.equal(seen.error.message, "refused");
});

test("once the page is left, its promises settle no more, neither way", async () => {
  nextPage();
  let answer, refuse;
  const answered = new Promise((done) => { answer = done; });
  const refused = new Promise((_, fail) => { refuse = fail; });
  const [kept, dropped] = [whileShown(answered), whileShown(refused)];
  nextPage();
  answer("late");
  refuse(new Error("late"));
  assert.equal(await outcome(kept, answered), NOT_SETTLED);
  assert.equal(await outcome(dropped, refused), NOT_SETTLED);
});

test("leaving the page aborts its signal, and the next page has a fresh one", () => {
  nextPage();
  const left = pageSignal();
  assert.equal(left.aborted, false);
  nextPage();
  assert.equal(left.aborted, true);
  assert.equal(pageSignal().aborted, false);
  assert.notEqual(pageSignal(), left);
});

test("a promise of the new page is not cut off by the page before", async () => {
  nextPage();
  nextPage();
  const value = Promise.resolve("fresh");
  assert.deepEqual(await outcome(whileShown(value), value), { value: "fresh" });
});

test("of a series of loads, only the newest resumes, whichever answers first", async () => {
  const newest = newestOnly();
  let answerOld;
  const old = new Promise((done) => { answerOld = done; });
  const fresh = Promise.resolve("fresh");
  const [first, second] = [newest(old), newest(fresh)];
  assert.deepEqual(await outcome(second, fresh), { value: "fresh" });
  answerOld("old");
  assert.equal(await outcome(first, old), NOT_SETTLED);
  const failed = Promise.reject(new Error("old failure"));
  const third = newest(failed);
  newest(Promise.resolve("later"));
  assert.equal(await outcome(third, failed), NOT_SETTLED);
});

test("two series do not replace each other's loads", async () => {
  const [names, table] = [newestOnly(), newestOnly()];
  const [a, b] = [Promise.resolve("names"), Promise.resolve("table")];
  const [gotA, gotB] = [names(a), table(b)];
  assert.deepEqual(await outcome(gotA, a), { value: "names" });
  assert.deepEqual(await outcome(gotB, b), { value: "table" });
});
