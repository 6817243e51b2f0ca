// Latency statistics of a set of spans (Zipkin v2 shape): log-scale duration buckets,
// percentiles, error rate, and the same figures per time slice. Pure: no DOM, no fetch.
//
//   latencyStats(spans)                      -> { count, timed, errors, errorRate, min, max, p50, p90, p99 }
//   latencyBuckets(spans)                    -> [{ low, high, count, errors, spans }]  (µs, low <= d < high)
//   bucketIndex(buckets, duration)           -> index of the bucket holding duration, or -1
//   seriesOverTime(spans, { start, end, slices }) -> [{ start, end, count, errors, errorRate, p50, p90, p99 }]
//   percentile(sortedDurations, fraction)    -> nearest-rank percentile of ascending numbers
//
// Durations and timestamps are microseconds, as Zipkin carries them. A span without a duration
// (still in flight, or reported without one) counts as a call but takes no part in latency.

import { isError } from "../lib/spans.js";

/** Nearest-rank percentile: the smallest value with at least `fraction` of the values at or
 * below it (p50 of [1, 2, 3, 4] is 2). `sorted` must be ascending; empty gives undefined. */
export function percentile(sorted, fraction) {
  if (!sorted.length) return undefined;
  const rank = Math.ceil(fraction * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

const hasDuration = (span) => Number.isFinite(span.duration) && span.duration >= 0;

function ascendingDurations(spans) {
  const durations = [];
  for (const span of spans) if (hasDuration(span)) durations.push(span.duration);
  return durations.sort((a, b) => a - b);
}

/** Count, error count and rate, min/max and p50/p90/p99 of the spans' durations.
 * Example: latencyStats([{ duration: 5 }, { duration: 7, tags: { error: "" } }]).errorRate === 0.5 */
export function latencyStats(spans) {
  const durations = ascendingDurations(spans);
  let errors = 0;
  for (const span of spans) if (isError(span)) errors += 1;
  return {
    count: spans.length,
    timed: durations.length,
    errors,
    errorRate: spans.length ? errors / spans.length : 0,
    min: durations[0],
    max: durations[durations.length - 1],
    p50: percentile(durations, 0.5),
    p90: percentile(durations, 0.9),
    p99: percentile(durations, 0.99),
  };
}

// Bucket edges on the 1-2-5 series (1µs, 2µs, 5µs, 10µs, ... 1s, 2s, 5s): log-scale, and every
// edge reads as a round number on the axis.
const STEPS = [1, 2, 5];

function edgeAtOrBelow(value) {
  if (value < 1) return 0;
  let decade = 10 ** Math.floor(Math.log10(value));
  // floating point: log10(1000) may come out a hair under 3
  if (decade * 10 <= value) decade *= 10;
  let edge = decade;
  for (const step of STEPS) if (step * decade <= value) edge = step * decade;
  return edge;
}

function nextEdge(edge) {
  if (edge === 0) return 1;
  const decade = 10 ** Math.floor(Math.log10(edge) + 1e-9);
  const step = Math.round(edge / decade);
  const index = STEPS.indexOf(step);
  return index + 1 < STEPS.length ? STEPS[index + 1] * decade : 10 * decade;
}

/** Log-scale latency histogram: contiguous buckets on the 1-2-5 series from the fastest span's
 * bucket to the slowest's (empty ones included, so the axis has no gaps). Each bucket keeps its
 * spans, so a click on a bar can list their traces.
 * Example: latencyBuckets([{ duration: 3 }, { duration: 12 }]) has buckets [2,5) [5,10) [10,20). */
export function latencyBuckets(spans) {
  const timed = spans.filter(hasDuration);
  if (!timed.length) return [];
  let low = Infinity;
  let high = -Infinity;
  for (const span of timed) { low = Math.min(low, span.duration); high = Math.max(high, span.duration); }
  const buckets = [];
  for (let edge = edgeAtOrBelow(low); edge <= high; edge = nextEdge(edge)) {
    buckets.push({ low: edge, high: nextEdge(edge), count: 0, errors: 0, spans: [] });
  }
  for (const span of timed) {
    const bucket = buckets[bucketIndex(buckets, span.duration)];
    bucket.count += 1;
    if (isError(span)) bucket.errors += 1;
    bucket.spans.push(span);
  }
  return buckets;
}

/** Index of the bucket with low <= duration < high, or -1 when no bucket holds it. */
export function bucketIndex(buckets, duration) {
  let lo = 0;
  let hi = buckets.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (duration < buckets[mid].low) hi = mid - 1;
    else if (duration >= buckets[mid].high) lo = mid + 1;
    else return mid;
  }
  return -1;
}

/** The spans' calls, errors and p50/p90/p99 per time slice: `slices` equal slices of
 * [start, end) by span start (µs; default: the spans' own first and last start). Spans
 * outside the range are left out. */
export function seriesOverTime(spans, { start, end, slices = 30 } = {}) {
  const started = spans.filter((span) => Number.isFinite(span.timestamp));
  let first = Infinity;
  let last = -Infinity;
  for (const span of started) { first = Math.min(first, span.timestamp); last = Math.max(last, span.timestamp); }
  if (start === undefined) start = first;
  if (end === undefined) end = last + 1;
  if (!started.length || !(end > start) || !(slices >= 1)) return [];
  const count = Math.floor(slices);
  const width = (end - start) / count;
  const groups = Array.from({ length: count }, () => []);
  for (const span of started) {
    if (span.timestamp < start || span.timestamp >= end) continue;
    groups[Math.min(count - 1, Math.floor((span.timestamp - start) / width))].push(span);
  }
  return groups.map((group, index) => {
    const stats = latencyStats(group);
    return {
      start: start + index * width,
      end: index === count - 1 ? end : start + (index + 1) * width,
      count: stats.count,
      errors: stats.errors,
      errorRate: stats.errorRate,
      p50: stats.p50,
      p90: stats.p90,
      p99: stats.p99,
    };
  });
}
