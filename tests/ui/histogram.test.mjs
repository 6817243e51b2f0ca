// Latency buckets, percentiles, error rate and series over time for the operations view.
import test from "node:test";
import assert from "node:assert/strict";
import {
  bucketIndex, latencyBuckets, latencyStats, percentile, seriesOverTime,
} from "../../src/tomograph/ui/analysis/histogram.js";

const span = (duration, extra = {}) => ({ traceId: "a", id: "b", duration, ...extra });

test("percentile is the nearest rank", () => {
  assert.equal(percentile([1, 2, 3, 4], 0.5), 2);
  assert.equal(percentile([1, 2, 3, 4], 0.9), 4);
  assert.equal(percentile([7], 0.99), 7);
  assert.equal(percentile([], 0.5), undefined);
  const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(percentile(hundred, 0.5), 50);
  assert.equal(percentile(hundred, 0.9), 90);
  assert.equal(percentile(hundred, 0.99), 99);
});

test("stats count errors by the error tag whatever its value and skip spans without duration", () => {
  const stats = latencyStats([
    span(10), span(30, { tags: { error: "" } }), span(20, { tags: { error: "false" } }), span(undefined),
  ]);
  assert.deepEqual(
    { count: stats.count, timed: stats.timed, errors: stats.errors, min: stats.min, max: stats.max, p50: stats.p50 },
    { count: 4, timed: 3, errors: 2, min: 10, max: 30, p50: 20 },
  );
  assert.equal(stats.errorRate, 0.5);
  assert.equal(latencyStats([]).errorRate, 0);
});

test("buckets follow the 1-2-5 series with no gaps and hold their spans", () => {
  const slow = span(1_200_000, { tags: { error: "timeout" } });
  const buckets = latencyBuckets([span(3), span(4), span(950), slow]);
  assert.deepEqual(buckets.map((b) => b.low).slice(0, 4), [2, 5, 10, 20]);
  assert.deepEqual(buckets.map((b) => [b.low, b.high]).at(-1), [1_000_000, 2_000_000]);
  for (let i = 1; i < buckets.length; i++) assert.equal(buckets[i].low, buckets[i - 1].high);
  assert.equal(buckets[0].count, 2);
  assert.equal(buckets.at(-1).errors, 1);
  assert.deepEqual(buckets.at(-1).spans, [slow]);
  assert.equal(buckets.reduce((n, b) => n + b.count, 0), 4);
});

test("bucket edges are exact at decade boundaries and zero has its own bucket", () => {
  const buckets = latencyBuckets([span(0), span(1000), span(999)]);
  assert.deepEqual(buckets[0], { low: 0, high: 1, count: 1, errors: 0, spans: [buckets[0].spans[0]] });
  const thousand = buckets[bucketIndex(buckets, 1000)];
  assert.deepEqual([thousand.low, thousand.high], [1000, 2000]);
  const below = buckets[bucketIndex(buckets, 999)];
  assert.deepEqual([below.low, below.high], [500, 1000]);
  assert.equal(bucketIndex(buckets, 5000), -1);
});

test("huge durations stay in a handful of buckets", () => {
  const buckets = latencyBuckets([span(1), span(2 ** 53)]);
  assert.ok(buckets.length < 60);
  assert.equal(buckets.reduce((n, b) => n + b.count, 0), 2);
});

test("no timed spans give no buckets", () => {
  assert.deepEqual(latencyBuckets([span(undefined), span(Number.NaN), span(-1)]), []);
});

test("series split the range into equal slices by span start", () => {
  const spans = [
    span(10, { timestamp: 1000 }), span(20, { timestamp: 1500, tags: { error: "" } }),
    span(30, { timestamp: 2500 }), span(99, { timestamp: 9999 }),
  ];
  const series = seriesOverTime(spans, { start: 1000, end: 3000, slices: 2 });
  assert.deepEqual(series.map((s) => [s.start, s.end, s.count, s.errors, s.p50]), [
    [1000, 2000, 2, 1, 10],
    [2000, 3000, 1, 0, 30],
  ]);
  assert.equal(series[0].errorRate, 0.5);
  assert.equal(series[1].p99, 30);
});

test("series default to the spans' own time range and keep empty slices", () => {
  const spans = [span(5, { timestamp: 0 }), span(6, { timestamp: 99 })];
  const series = seriesOverTime(spans, { slices: 4 });
  assert.equal(series.length, 4);
  assert.deepEqual(series.map((s) => s.count), [1, 0, 0, 1]);
  assert.equal(series[1].p50, undefined);
  assert.deepEqual(seriesOverTime([], { slices: 4 }), []);
});
