// The trace page: headline facts, the waterfall, and the details of the span picked.
//
// Other analyses decorate the waterfall without redrawing it: renderWaterfall() returns an
// object whose mark(name, spanIds) puts the class "mark-<name>" on those spans' rows (and keeps
// it when rows are drawn again), and whose badges list holds functions node => Node|null whose
// result is shown after the span's name.

import { API, api, token } from "../lib/api.js";
import { serviceColor } from "../lib/colors.js";
import { el, template } from "../lib/dom.js";
import { formatDuration, formatTime } from "../lib/format.js";
import { isError, remoteOf, serviceOf, summarize } from "../lib/spans.js";

let jsonBlobUrl = null; // the JSON of the trace on show, when the API needs a token

/** Loads trace `traceId` and shows it in `root`. */
export async function show(root, traceId) {
  root.replaceChildren(template("tpl-trace"));
  const title = document.getElementById("t-title");
  let spans;
  try {
    spans = await api(`/trace/${encodeURIComponent(traceId)}`);
  } catch (error) {
    title.textContent = error.status === 404 ? `Trace ${traceId} not found` : error.message;
    return;
  }
  const summary = summarize(spans);
  title.textContent = `${serviceOf(summary.root)}: ${summary.root.name || "(unnamed)"}`;
  const facts = [["Duration", formatDuration(summary.duration)], ["Services", summary.services.length],
    ["Depth", summary.depth], ["Spans", spans.length], ["Errors", summary.errors],
    ["Started", Number.isFinite(summary.start) ? formatTime(summary.start) : "?"], ["Trace id", traceId]];
  document.getElementById("t-facts").replaceChildren(...facts.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v))));
  // With a token the API link would answer 401 in a new tab: offer the spans already loaded.
  if (jsonBlobUrl) URL.revokeObjectURL(jsonBlobUrl);
  jsonBlobUrl = token() ? URL.createObjectURL(new Blob([JSON.stringify(spans, null, 2)], { type: "application/json" })) : null;
  document.getElementById("t-json").href = jsonBlobUrl || `${API}/trace/${encodeURIComponent(traceId)}`;
  return renderWaterfall(document.getElementById("waterfall"), document.getElementById("details"), summary);
}

/**
 * Draws `summary` (from summarize()) as a waterfall in `container`; a click on a row shows the
 * span in `details`. Returns { summary, mark(name, spanIds), badges }.
 */
export function renderWaterfall(container, details, summary) {
  const total = Math.max(1, summary.duration);
  const start = Number.isFinite(summary.start) ? summary.start : 0;
  const collapsed = new Set();
  const marks = new Map(); // mark name -> Set of span ids
  const badges = [];
  const pct = (us) => `${Math.max(0, Math.min(100, (100 * us) / total)).toFixed(3)}%`;

  function applyMarks(node) {
    for (const [name, ids] of marks) node.row.classList.toggle(`mark-${name}`, ids.has(node.span.id));
  }

  function drawRow(node) {
    const s = node.span;
    const service = serviceOf(s);
    const offset = s.timestamp ? s.timestamp - start : 0;
    const toggle = el("button", { class: `toggle${node.children.length ? "" : " leaf"}`, type: "button",
      "aria-label": "collapse" }, "▾");
    const row = el("div", { class: `wf-row${isError(s) ? " error" : ""}`, role: "treeitem",
      "data-span-id": s.id, "data-depth": node.depth },
      el("div", { class: "label", style: `padding-left: ${8 + node.depth * 16}px` },
        toggle,
        el("span", { class: "service", style: `background: ${serviceColor(service)}` }, service),
        el("span", { class: "span-name", title: s.name || "" }, s.name || "(unnamed)"),
        badges.map((badge) => badge(node))),
      el("div", { class: "lane" },
        el("div", { class: "bar", style: `left: ${pct(offset)}; width: ${pct(s.duration || 0)}; background: ${serviceColor(service)}` }),
        (s.annotations || []).map((a) => el("div", { class: "note", title: a.value, style: `left: ${pct(a.timestamp - start)}` })),
        el("span", { class: "bar-label", style: `left: calc(${pct(offset + (s.duration || 0))} + 4px)` },
          formatDuration(s.duration))));
    node.row = row;
    applyMarks(node);
    toggle.addEventListener("click", (event) => {
      event.stopPropagation();
      if (collapsed.has(node)) collapsed.delete(node); else collapsed.add(node);
      applyCollapse();
    });
    row.addEventListener("click", () => {
      for (const selected of container.querySelectorAll(".wf-row.selected")) selected.classList.remove("selected");
      row.classList.add("selected");
      showDetails(details, s, start);
    });
    return row;
  }

  function applyCollapse() {
    const hide = (node, hidden) => {
      for (const child of node.children) {
        child.row.hidden = hidden;
        hide(child, hidden || collapsed.has(child));
      }
    };
    for (const node of summary.order) {
      if (node.depth === 0) hide(node, collapsed.has(node));
      const button = node.row.querySelector(".toggle");
      button.textContent = collapsed.has(node) ? "▸" : "▾";
      button.setAttribute("aria-label", collapsed.has(node) ? "expand" : "collapse");
      node.row.setAttribute("aria-expanded", String(!collapsed.has(node)));
    }
  }

  const axis = el("div", { class: "wf-axis" }, el("div", { class: "label" }, ""), el("div", { class: "ticks" },
    [0, 0.2, 0.4, 0.6, 0.8].map((f) => el("div", { class: "tick", style: `left: ${f * 100}%` }, formatDuration(Math.round(f * total))))));
  document.getElementById("t-expand").addEventListener("click", () => { collapsed.clear(); applyCollapse(); });
  document.getElementById("t-collapse").addEventListener("click", () => {
    for (const node of summary.order) if (node.children.length && node.depth > 0) collapsed.add(node);
    applyCollapse();
  });
  container.replaceChildren(axis, ...summary.order.map(drawRow));
  applyCollapse();

  return {
    summary,
    badges,
    /** Puts class "mark-<name>" on the rows of `spanIds` (and takes it off every other row). */
    mark(name, spanIds) {
      marks.set(name, new Set(spanIds));
      for (const node of summary.order) if (node.row) applyMarks(node);
    },
  };
}

function showDetails(details, span, traceStart) {
  details.hidden = false;
  const rows = (pairs, cls) => el("table", {}, el("tbody", {}, pairs.map(([k, v]) =>
    el("tr", { class: cls && cls(k) }, el("td", {}, k), el("td", { class: "value" }, v)))));
  const info = [["Service", serviceOf(span)], ["Kind", span.kind || "LOCAL"], ["Duration", formatDuration(span.duration)],
    ["Start", span.timestamp ? `+${formatDuration(span.timestamp - traceStart)} (${formatTime(span.timestamp)})` : "?"],
    ["Span id", span.id], ["Parent id", span.parentId || "(root)"], ["Trace id", span.traceId]];
  if (remoteOf(span)) info.push(["Remote service", remoteOf(span)]);
  for (const key of ["localEndpoint", "remoteEndpoint"]) {
    const ep = span[key];
    if (ep && (ep.ipv4 || ep.ipv6)) info.push([key === "localEndpoint" ? "Local address" : "Remote address", `${ep.ipv4 || ep.ipv6}${ep.port ? ":" + ep.port : ""}`]);
  }
  if (span.shared) info.push(["Shared", "yes (server side of the client's span)"]);
  if (span.debug) info.push(["Debug", "yes"]);
  const tags = Object.entries(span.tags || {}).sort(([a], [b]) => a.localeCompare(b));
  const notes = (span.annotations || []).map((a) => [`+${formatDuration(a.timestamp - (span.timestamp || traceStart))}`, a.value]);
  details.replaceChildren(
    el("button", { class: "close", type: "button", onclick: () => { details.hidden = true; } }, "×"),
    el("h2", {}, span.name || "(unnamed)"),
    rows(info),
    el("h3", {}, `Tags (${tags.length})`),
    tags.length ? rows(tags, (k) => (k === "error" ? "error-tag" : null)) : el("p", { class: "empty" }, "no tags"),
    el("h3", {}, `Notes (${notes.length})`),
    notes.length ? rows(notes) : el("p", { class: "empty" }, "no notes"));
}
