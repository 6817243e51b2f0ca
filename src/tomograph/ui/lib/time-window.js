// The time window of the dependency and operations pages: an end time (empty: now) and a lookback,
// kept in the address so that a reload or a shared link shows the same window. The time ranges
// offered are the same on every page, the search page's too.

import { el } from "./dom.js";

const HOUR = 3600000;
const LOOKBACKS = [[HOUR / 4, "15 minutes"], [HOUR, "1 hour"], [6 * HOUR, "6 hours"], [24 * HOUR, "1 day"], [168 * HOUR, "7 days"]];

/** Fills a time range select with the ranges offered, `chosen` (milliseconds) selected, and then
 * `more` options (the search page's custom range). */
export function fillLookbacks(select, chosen, ...more) {
  select.replaceChildren(...LOOKBACKS.map(([ms, name]) => el("option", { value: String(ms) }, name)), ...more);
  select.value = String(chosen);
}

/** Milliseconds since the epoch as a datetime-local input's value, in the browser's time zone;
 * "" (an empty field) for a time Date cannot hold (NaN, or beyond ±8.64e15 ms). */
export function toLocalInput(ms) {
  if (typeof ms !== "number" || !(Math.abs(ms) <= 8.64e15)) return "";
  const local = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return Number.isNaN(local.getTime()) ? "" : local.toISOString().slice(0, 16);
}

/** Fills the form's end and lookback fields from route parameters { endTs, lookback }. */
export function showWindow(endInput, lookbackSelect, params) {
  const end = Number(params.endTs);
  endInput.value = Number.isSafeInteger(end) && end > 0 ? toLocalInput(end) : "";
  if ([...lookbackSelect.options].some((o) => o.value === params.lookback)) lookbackSelect.value = params.lookback;
}

/** The window the form names: { endTs, lookback, fixed } (fixed: an end time was chosen), or
 * { error } when the end time cannot be read. */
export function readWindow(endInput, lookbackSelect) {
  const lookback = Number(lookbackSelect.value);
  if (!endInput.value) return { endTs: Date.now(), lookback, fixed: false };
  const endTs = Date.parse(endInput.value);
  if (!Number.isFinite(endTs) || endTs <= 0) return { error: "Choose an end time, or leave it empty for now" };
  return { endTs, lookback, fixed: true };
}

/** The route parameters that bring the window back: the end only when one was chosen. */
export function windowParams(window) {
  return window.fixed ? { endTs: window.endTs, lookback: window.lookback } : { lookback: window.lookback };
}
