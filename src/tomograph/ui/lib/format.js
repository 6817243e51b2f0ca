// Durations (microseconds, as Zipkin stores them) and times for people to read.

/** 850µs, 12.50ms, 1.5s: a duration in microseconds. */
export function formatDuration(us) {
  if (us === undefined || us === null) return "?";
  if (us < 1000) return `${us}µs`;
  if (us < 1000000) return `${(us / 1000).toFixed(us < 10000 ? 2 : 1)}ms`;
  return `${(us / 1000000).toFixed(us < 10000000 ? 3 : 1)}s`;
}

/** "150ms", "2s", "500us", "1.5m" or a plain number of milliseconds -> microseconds (null if not one). */
export function parseDuration(text) {
  const match = /^\s*([\d.]+)\s*(us|µs|ms|s|m)?\s*$/i.exec(text || "");
  if (!match) return null;
  const scale = { us: 1, "µs": 1, ms: 1000, s: 1e6, m: 6e7 }[(match[2] || "ms").toLowerCase()];
  const value = Math.round(parseFloat(match[1]) * scale);
  return value > 0 ? value : null;
}

/** A timestamp in microseconds since the epoch, in the browser's time zone. */
export function formatTime(us) {
  const date = new Date(us / 1000);
  return date.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit",
    minute: "2-digit", second: "2-digit" });
}
