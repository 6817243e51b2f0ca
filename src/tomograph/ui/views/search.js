// The search page: the form, and the list of traces found.

import { api, token } from "../lib/api.js";
import { serviceColor } from "../lib/colors.js";
import { el, fillSelect, setStatus, template } from "../lib/dom.js";
import { largest } from "../lib/extremes.js";
import { formatDuration, formatTime, isoTime, parseDuration, plural } from "../lib/format.js";
import { newestOnly } from "../lib/page-life.js";
import { routeParams } from "../lib/route.js";
import { serviceOf, summarize } from "../lib/spans.js";
import { fillLookbacks, toLocalInput } from "../lib/time-window.js";

/** How the trace list can be ordered: a key of the route's "sort" parameter -> a comparison. */
export const SORTS = {
  newest: (a, b) => b.start - a.start,
  oldest: (a, b) => a.start - b.start,
  longest: (a, b) => b.duration - a.duration || b.start - a.start,
  shortest: (a, b) => a.duration - b.duration || b.start - a.start,
  spans: (a, b) => b.order.length - a.order.length || b.start - a.start,
  errors: (a, b) => b.errors - a.errors || b.start - a.start,
};

let shown = []; // the summaries of the traces found, for sorting again without a new query
const newestSearch = newestOnly(); // a search submitted again replaces the one under way

/** Shows the search form in `root`, filled from the route's parameters, and runs the search. */
export async function show(root) {
  root.replaceChildren(template("tpl-search"));
  const form = document.getElementById("search");
  const status = document.getElementById("search-status");
  const fields = {
    serviceName: document.getElementById("f-service"), spanName: document.getElementById("f-span"),
    remoteServiceName: document.getElementById("f-remote"), annotationQuery: document.getElementById("f-query"),
    minDuration: document.getElementById("f-min"), maxDuration: document.getElementById("f-max"),
    lookback: document.getElementById("f-lookback"), limit: document.getElementById("f-limit"),
  };
  fillLookbacks(fields.lookback, 3600000, el("option", { value: "custom" }, "custom…"));
  const from = document.getElementById("f-from");
  const to = document.getElementById("f-to");
  const toggleCustom = () => {
    for (const label of form.querySelectorAll(".custom-range")) label.hidden = fields.lookback.value !== "custom";
  };
  fields.lookback.addEventListener("change", toggleCustom);

  const previous = routeParams();
  const sort = document.getElementById("f-sort");
  if (SORTS[previous.sort]) sort.value = previous.sort;
  sort.addEventListener("change", () => {
    // kept in the address for a reload or a shared link, without searching again
    const query = { ...routeParams(), sort: sort.value };
    if (sort.value === "newest") delete query.sort;
    history.replaceState(history.state, "", `#/?${new URLSearchParams(query)}`);
    drawList();
  });
  try {
    fillSelect(fields.serviceName, await api("/services"), "(any)");
  } catch (error) { setStatus(status, error.message, true); return; }
  const newestNames = newestOnly();
  const loadNames = async () => {
    const service = fields.serviceName.value;
    const asked = service ? Promise.all([api("/spans", { serviceName: service }), api("/remoteServices", { serviceName: service })]) : [[], []];
    const [names, remotes] = await newestNames(Promise.resolve(asked));
    fillSelect(fields.spanName, names, "(any)");
    fillSelect(fields.remoteServiceName, remotes, "(any)");
  };
  fields.serviceName.addEventListener("change", loadNames);
  loadSuggestions();

  // restore the previous search from the URL
  if (previous.serviceName) { fields.serviceName.value = previous.serviceName; await loadNames(); }
  for (const key of ["spanName", "remoteServiceName", "annotationQuery", "limit"]) if (previous[key]) fields[key].value = previous[key];
  if (previous.minDuration) fields.minDuration.value = formatDuration(Number(previous.minDuration));
  if (previous.maxDuration) fields.maxDuration.value = formatDuration(Number(previous.maxDuration));
  if (previous.lookback && [...fields.lookback.options].some((o) => o.value === previous.lookback)) fields.lookback.value = previous.lookback;
  if (previous.endTs && previous.custom) {
    fields.lookback.value = "custom";
    to.value = toLocalInput(Number(previous.endTs));
    from.value = toLocalInput(Number(previous.endTs) - Number(previous.lookback));
  }
  toggleCustom();

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = {};
    for (const key of ["serviceName", "spanName", "remoteServiceName", "annotationQuery", "limit"]) {
      if (fields[key].value.trim()) query[key] = fields[key].value.trim();
    }
    if (sort.value !== "newest") query.sort = sort.value;
    for (const key of ["minDuration", "maxDuration"]) {
      if (!fields[key].value.trim()) continue;
      const us = parseDuration(fields[key].value);
      if (us === null) { setStatus(status, `${key}: write a duration such as 150ms or 2s`, true); return; }
      query[key] = String(us);
    }
    if (fields.lookback.value === "custom") {
      const start = Date.parse(from.value), end = Date.parse(to.value);
      if (!(start < end)) { setStatus(status, "Choose a start before the end of the time range", true); return; }
      query.endTs = String(end); query.lookback = String(end - start); query.custom = "1";
    } else {
      query.lookback = fields.lookback.value;
    }
    const hash = "#/?" + new URLSearchParams(query).toString();
    if (location.hash === hash) runSearch(query); else location.hash = hash;
  });
  if (Object.keys(previous).length) runSearch(previous);
  else runSearch({ lookback: fields.lookback.value, limit: fields.limit.value });
}

async function loadSuggestions() {
  const list = document.getElementById("f-query-list");
  try {
    const keys = await api("/autocompleteKeys");
    const options = ["error"];
    const values = await Promise.all(keys.map((key) => api("/autocompleteValues", { key }).catch(() => [])));
    keys.forEach((key, i) => { for (const value of values[i].slice(0, 20)) options.push(`${key}=${value}`); });
    list.replaceChildren(...options.map((value) => el("option", { value })));
  } catch (_) { /* suggestions are optional */ }
}

function demoCommand() {
  const command = `tomograph demo --send ${location.origin}`;
  return token() ? `${command} --token TOKEN (TOKEN: the access token this page uses)` : command;
}

async function runSearch(query) {
  const status = document.getElementById("search-status");
  const results = document.getElementById("results");
  const params = { ...query };
  delete params.custom;
  delete params.sort;
  if (!params.endTs) params.endTs = String(Date.now());
  setStatus(status, "Searching…");
  let traces;
  try {
    traces = await newestSearch(api("/traces", params));
  } catch (error) { setStatus(status, error.message, true); results.replaceChildren(); shown = []; return; }
  shown = traces.filter((t) => t.length).map(summarize);
  setStatus(status, shown.length ? plural(shown.length, "trace") : `No traces match. Widen the time range or remove a filter. New here? Run: ${demoCommand()}`);
  drawList();
}

function drawList() {
  const results = document.getElementById("results");
  const sort = SORTS[document.getElementById("f-sort").value] || SORTS.newest;
  const summaries = [...shown].sort(sort);
  const longest = largest(summaries.map((s) => s.duration), 1);
  results.replaceChildren(...summaries.map((s) => {
    const counts = new Map();
    for (const node of s.order) counts.set(serviceOf(node.span), (counts.get(serviceOf(node.span)) || 0) + 1);
    return el("li", {},
      el("a", { class: `trace-row${s.errors ? " has-error" : ""}`, href: `#/trace/${encodeURIComponent(s.root.traceId)}`, "data-trace-id": s.root.traceId },
        el("div", {},
          el("div", { class: "name" }, `${serviceOf(s.root)}: ${s.root.name || "(unnamed)"}`),
          el("div", { class: "sub" },
            s.errors ? el("span", { class: "badge error" }, plural(s.errors, "error")) : null,
            el("span", { class: "badge" }, plural(s.order.length, "span")),
            [...counts].slice(0, 6).map(([name, n]) => el("span", { class: "badge", style: `border-left: 3px solid ${serviceColor(name)}` }, `${name} ×${n}`)))),
        el("div", { class: "dur-track", title: formatDuration(s.duration) },
          el("div", { class: "dur-bar", style: `width: ${(100 * s.duration / longest).toFixed(2)}%` })),
        el("div", { class: "duration" }, formatDuration(s.duration)),
        el("time", { class: "when", datetime: isoTime(s.start) },
          Number.isFinite(s.start) ? formatTime(s.start) : "")));
  }));
}
