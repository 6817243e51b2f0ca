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

const pad = (number, width = 2) => String(number).padStart(width, "0");

/** The browser's name for its time zone at `date`: "UTC", "GMT+1", "CET", "PST"... */
function zoneName(date) {
  const part = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" })
    .formatToParts(date).find((p) => p.type === "timeZoneName");
  return part ? part.value : "";
}

/**
 * A timestamp in microseconds since the epoch as "2026-03-01 14:05:09.042 UTC": the browser's time
 * zone, with the year, milliseconds and the zone's name, so times copied elsewhere stay exact.
 */
export function formatTime(us) {
  const date = new Date(Math.floor(us / 1000));
  if (Number.isNaN(date.getTime())) return "?";
  const day = `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  const time = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
  return `${day} ${time} ${zoneName(date)}`.trim();
}

/** The ISO 8601 form of a timestamp in microseconds (for <time datetime>), null if out of range. */
export function isoTime(us) {
  const date = new Date(Math.floor(us / 1000));
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

/** A count and its noun, plural unless the count is one: plural(3, "span") is "3 spans". */
export function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}
