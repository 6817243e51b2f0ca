// The operations page: per operation of a service (a span name and kind: a client and a server span
// of one name are two operations) its calls, error rate and latency percentiles, in sortable
// columns; a click on an operation shows its latency histogram and its p50/p90/p99 and errors over
// time, and a click on a histogram bucket lists the traces in it.

import { api } from "../lib/api.js";
import { el, fillSelect, setStatus, svg, template } from "../lib/dom.js";
import { largest } from "../lib/extremes.js";
import { formatDuration, plural } from "../lib/format.js";
import { newestOnly } from "../lib/page-life.js";
import { routeParams, searchHref } from "../lib/route.js";
import { fillLookbacks, readWindow, showWindow, windowParams } from "../lib/time-window.js";
import { latencyBuckets, seriesOverTime } from "../analysis/histogram.js";

const byId = (id) => document.getElementById(id);
const LAST_SERVICE = "tomograph.operations.service";
const SAMPLES = 10000;
const KINDS = { SERVER: "server", CLIENT: "client", PRODUCER: "producer", CONSUMER: "consumer" };
const kindName = (kind) => KINDS[kind] || "local";
const COLUMNS = [
  { key: "spanName", title: "Span name", text: true },
  { key: "kind", title: "Kind", text: true },
  { key: "count", title: "Count" },
  { key: "errorRate", title: "Error rate" },
  { key: "p50", title: "p50" },
  { key: "p90", title: "p90" },
  { key: "p99", title: "p99" },
  { key: "max", title: "Max" },
];

/** Shows the operations of a service in `root`: the route's, else the one last looked at in this
 * tab, else the busiest (most calls received and made). */
export async function show(root) {
  root.replaceChildren(template("tpl-ops"));
  const select = byId("o-service");
  const status = byId("ops-status");
  const endInput = byId("o-end");
  const lookback = byId("o-lookback");
  const params = routeParams();
  fillLookbacks(lookback, 3600000);
  showWindow(endInput, lookback, params);
  let services;
  try {
    services = await api("/services");
  } catch (error) { setStatus(status, error.message, true); return; }
  if (!services.length) { setStatus(status, "No services yet: send some spans first."); return; }
  fillSelect(select, services);
  const wanted = (params.serviceName || "").toLowerCase();
  const last = sessionStorage.getItem(LAST_SERVICE);
  if (services.includes(wanted)) select.value = wanted;
  else if (services.includes(last)) select.value = last;
  else {
    const window = readWindow(endInput, lookback);
    if (!window.error) select.value = await busiest(services, window).catch(() => services[0]);
  }
  const state = { sort: { key: "count", descending: true } };
  const newest = newestOnly();
  const load = async () => {
    const window = readWindow(endInput, lookback);
    if (window.error) { setStatus(status, window.error, true); return; }
    sessionStorage.setItem(LAST_SERVICE, select.value);
    // the address names what is shown, for a reload or a link; no hashchange, so no re-render
    history.replaceState(history.state, "", `#/operations?${new URLSearchParams({ serviceName: select.value, ...windowParams(window) })}`);
    setStatus(status, "Loading…");
    try {
      const ops = await newest(api("/tomograph/operations", { serviceName: select.value, endTs: window.endTs, lookback: window.lookback }));
      setStatus(status, ops.length ? `${plural(ops.length, "operation")} of ${select.value}. Click one for its latency histogram and its latency and errors over time.` : "No spans of this service in the time range.");
      Object.assign(state, { ops, service: select.value, window });
      renderTable(state);
    } catch (error) { setStatus(status, error.message, true); }
  };
  select.addEventListener("change", load);
  byId("ops-form").addEventListener("submit", (event) => { event.preventDefault(); load(); });
  await load();
}

/** The service with the most calls, received and made, in the window's dependency links. */
async function busiest(services, window) {
  const links = await api("/dependencies", { endTs: window.endTs, lookback: window.lookback });
  const calls = new Map();
  for (const link of links) {
    for (const name of new Set([link.parent, link.child])) calls.set(name, (calls.get(name) || 0) + link.callCount);
  }
  let best = services[0];
  for (const name of services) if ((calls.get(name) || 0) > (calls.get(best) || 0)) best = name;
  return best;
}

function renderTable(state) {
  const table = byId("ops-table");
  const { ops, sort } = state;
  table.hidden = !ops.length;
  const headRow = table.tHead.rows[0];
  headRow.replaceChildren(...COLUMNS.map((column) => {
    const active = sort.key === column.key;
    return el("th", { class: `sortable${column.text ? "" : " num"}`, scope: "col",
      "aria-sort": active ? (sort.descending ? "descending" : "ascending") : "none", "data-key": column.key },
    el("button", { type: "button", onclick: () => {
      state.sort = { key: column.key, descending: active ? !sort.descending : !column.text };
      renderTable(state);
    } }, column.title));
  }), el("th", { class: "bar-col" }, "p50 / p90 / p99"));

  const value = (op, key) => (key === "kind" ? kindName(op.kind) : op[key]);
  const sorted = [...ops].sort((a, b) => {
    const x = value(a, sort.key);
    const y = value(b, sort.key);
    const order = typeof x === "string" ? x.localeCompare(y) : x - y;
    return (sort.descending ? -order : order) || a.spanName.localeCompare(b.spanName) || kindName(a.kind).localeCompare(kindName(b.kind));
  });
  const longest = largest(ops.map((o) => o.p99), 1);
  const rows = [];
  for (const op of sorted) {
    let detail = null; // made on the first opening: its samples are fetched then
    const toggle = () => {
      const open = !detail || detail.hidden;
      if (!detail) {
        detail = el("tr", { class: "op-detail" }, el("td", { colspan: COLUMNS.length + 1 }));
        row.after(detail);
        showOperation(detail.cells[0], op, state);
      }
      detail.hidden = !open;
      row.classList.toggle("open", open);
      name.setAttribute("aria-expanded", String(open));
    };
    const name = el("button", { type: "button", class: "peer", "aria-expanded": "false",
      onclick: (event) => { event.stopPropagation(); toggle(); } }, op.spanName || "(unnamed)");
    const row = el("tr", { class: "op", "data-span-name": op.spanName, "data-kind": kindName(op.kind), onclick: toggle },
      el("td", {}, name),
      el("td", {}, el("span", { class: "kind" }, kindName(op.kind))),
      el("td", { class: "num" }, op.count),
      el("td", { class: `num${op.errorCount ? " bad" : ""}` }, `${(100 * op.errorRate).toFixed(1)}%`),
      el("td", { class: "num" }, formatDuration(op.p50)), el("td", { class: "num" }, formatDuration(op.p90)),
      el("td", { class: "num" }, formatDuration(op.p99)), el("td", { class: "num" }, formatDuration(op.max)),
      el("td", {}, el("div", { class: "pbar", title: `p50 ${formatDuration(op.p50)}, p90 ${formatDuration(op.p90)}, p99 ${formatDuration(op.p99)}` },
        el("span", { style: `width: ${(100 * op.p99 / longest).toFixed(2)}%; background: #f4c7a1` }),
        el("span", { style: `width: ${(100 * op.p90 / longest).toFixed(2)}%; background: #f28e2b` }),
        el("span", { style: `width: ${(100 * op.p50 / longest).toFixed(2)}%; background: #4e79a7` }))));
    rows.push(row);
  }
  table.tBodies[0].replaceChildren(...rows);
}

async function showOperation(cell, op, state) {
  const { service, window } = state;
  cell.replaceChildren(el("p", { class: "status" }, "Loading…"));
  let answer;
  try {
    // spanName in the path: api() leaves out empty parameters, and "" is a span name
    answer = await api(`/tomograph/operationSamples?${new URLSearchParams({ spanName: op.spanName })}`, { serviceName: service,
      kind: op.kind || "LOCAL", endTs: window.endTs, lookback: window.lookback, limit: SAMPLES });
  } catch (error) { cell.replaceChildren(el("p", { class: "status error" }, error.message)); return; }
  // the shape the analysis functions read: Zipkin v2 spans
  const spans = answer.samples.map(([timestamp, duration, error, traceId]) =>
    ({ traceId, timestamp, duration, tags: error ? { error: "" } : undefined }));
  const buckets = latencyBuckets(spans);
  const traces = el("div", { class: "bucket-traces", "aria-live": "polite" });
  const note = answer.truncated
    ? `the newest ${spans.length} of ${op.count} spans`
    : plural(spans.length, "span");
  const start = (window.endTs - window.lookback) * 1000;
  const end = window.endTs * 1000;
  cell.replaceChildren(el("div", { class: "op-charts" },
    el("figure", { class: "latency" },
      el("figcaption", {}, `Latency histogram (${note}). Click a bar for its traces.`),
      histogram(buckets, (bucket, bar) => {
        for (const chosen of cell.querySelectorAll(".bucket.chosen")) chosen.classList.remove("chosen");
        bar.classList.add("chosen");
        listTraces(traces, bucket, op, state);
      }),
      el("div", { class: "percentile-marks" },
        `p50 ${formatDuration(op.p50)} · p90 ${formatDuration(op.p90)} · p99 ${formatDuration(op.p99)} · max ${formatDuration(op.max)}`)),
    el("figure", { class: "series" },
      el("figcaption", {}, "p50, p90, p99 and error rate over time"),
      seriesChart(seriesOverTime(spans, { start, end, slices: 40 }), start, end))),
  el("p", { class: "op-links" },
    el("a", { href: searchHref({ serviceName: service, spanName: op.spanName, endTs: window.endTs, lookback: window.lookback }) }, "Traces of this operation"),
    op.errorCount ? [" · ", el("a", { href: searchHref({ serviceName: service, spanName: op.spanName, annotationQuery: "error", endTs: window.endTs, lookback: window.lookback }) }, "…with errors")] : null),
  traces);
}

function histogram(buckets, onChoose) {
  const most = largest(buckets.map((b) => b.count), 1);
  const bars = el("div", { class: "histogram", role: "list" });
  const axis = el("div", { class: "histogram-axis", "aria-hidden": "true" });
  const every = Math.max(1, Math.ceil(buckets.length / 8));
  buckets.forEach((bucket, i) => {
    const range = `${formatDuration(bucket.low)} – ${formatDuration(bucket.high)}`;
    const label = `${range}: ${plural(bucket.count, "span")}${bucket.errors ? `, ${bucket.errors} failed` : ""}`;
    const bar = el("a", { class: "bucket", href: "#", role: "listitem", title: label, "aria-label": label,
      "data-low": bucket.low, "data-high": bucket.high, "data-count": bucket.count },
    el("div", { class: "fill", style: `height: ${((100 * bucket.count) / most).toFixed(2)}%` },
      bucket.errors ? el("div", { class: "errors", style: `height: ${((100 * bucket.errors) / bucket.count).toFixed(2)}%` }) : null));
    bar.addEventListener("click", (event) => { event.preventDefault(); if (bucket.count) onChoose(bucket, bar); });
    bars.append(bar);
    axis.append(el("span", {}, i % every ? "" : formatDuration(bucket.low)));
  });
  return el("div", {}, bars, axis);
}

function seriesChart(series, start, end) {
  const width = 600;
  const height = 160;
  const pad = { left: 52, right: 8, top: 8, bottom: 20 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const top = largest(series.map((s) => s.p99 || 0), 1);
  const x = (t) => pad.left + ((t - start) / (end - start)) * plotW;
  const y = (us) => pad.top + plotH - (us / top) * plotH;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", preserveAspectRatio: "none",
    "aria-label": "latency percentiles and error rate over time" });
  for (const fraction of [0, 0.5, 1]) {
    chart.append(svg("line", { class: "grid", x1: pad.left, x2: width - pad.right, y1: y(top * fraction), y2: y(top * fraction) }),
      svg("text", { x: pad.left - 4, y: y(top * fraction) + 3, "text-anchor": "end" }, formatDuration(Math.round(top * fraction))));
  }
  const clock = (us) => new Date(us / 1000).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  chart.append(svg("text", { x: pad.left, y: height - 4 }, clock(start)), svg("text", { x: width - pad.right, y: height - 4, "text-anchor": "end" }, clock(end)));
  // error rate: bars from the bottom, full height = 100% of the slice's calls failed
  for (const slice of series) {
    if (!slice.errors) continue;
    const h = slice.errorRate * plotH;
    chart.append(svg("rect", { class: "err", x: x(slice.start), y: pad.top + plotH - h, width: Math.max(1, x(slice.end) - x(slice.start) - 1), height: h },
      svg("title", {}, `${slice.errors} of ${slice.count} calls failed`)));
  }
  for (const key of ["p50", "p90", "p99"]) {
    // a gap where a slice has no spans, rather than a line across it
    let d = "";
    let drawing = false;
    for (const slice of series) {
      if (slice[key] === undefined) { drawing = false; continue; }
      d += `${drawing ? "L" : "M"} ${x((slice.start + slice.end) / 2).toFixed(1)} ${y(slice[key]).toFixed(1)} `;
      drawing = true;
    }
    if (d) chart.append(svg("path", { class: `line ${key}`, d }));
  }
  const legend = el("div", { class: "legend" },
    ["p50", "p90", "p99"].map((key) => el("span", {}, el("i", { class: key }), key)),
    el("span", {}, el("i", { class: "err" }), "error rate"));
  return el("div", {}, chart, legend);
}

function listTraces(container, bucket, op, state) {
  const { service, window } = state;
  const ids = [...new Set(bucket.spans.map((s) => s.traceId))];
  const shown = ids.slice(0, 50);
  const range = `${formatDuration(bucket.low)} – ${formatDuration(bucket.high)}`;
  // Zipkin's search bounds are inclusive, the bucket's upper edge is not
  const search = searchHref({ serviceName: service, spanName: op.spanName, minDuration: Math.max(1, bucket.low),
    maxDuration: Math.max(1, bucket.high - 1), endTs: window.endTs, lookback: window.lookback, limit: Math.min(1000, Math.max(10, ids.length)) });
  container.replaceChildren(el("div", {},
    el("strong", {}, `${plural(bucket.count, "span")} of ${range} in ${plural(ids.length, "trace")}`),
    bucket.errors ? el("span", { class: "bad" }, ` (${bucket.errors} failed)`) : null,
    el("ul", {}, shown.map((id) => el("li", {}, el("a", { href: `#/trace/${encodeURIComponent(id)}`, "data-trace-id": id }, id)))),
    ids.length > shown.length ? el("p", {}, `and ${ids.length - shown.length} more.`) : null,
    el("a", { href: search, class: "bucket-search" }, "Search these traces")));
}
