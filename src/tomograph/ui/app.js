// tomograph's web UI: plain JavaScript over the collector's Zipkin v2 API. No build step.
// Every value from a span is put into the page with textContent, never as HTML.
"use strict";

const API = "/api/v2";
const view = document.getElementById("view");

// ---- helpers ------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "style") node.setAttribute("style", value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function template(id) { return document.getElementById(id).content.cloneNode(true); }

function formatDuration(us) {
  if (us === undefined || us === null) return "?";
  if (us < 1000) return `${us}µs`;
  if (us < 1000000) return `${(us / 1000).toFixed(us < 10000 ? 2 : 1)}ms`;
  return `${(us / 1000000).toFixed(us < 10000000 ? 3 : 1)}s`;
}

function parseDuration(text) {
  // "150ms", "2s", "500us", "1.5m" or a plain number of milliseconds -> microseconds
  const match = /^\s*([\d.]+)\s*(us|µs|ms|s|m)?\s*$/i.exec(text || "");
  if (!match) return null;
  const scale = { us: 1, "µs": 1, ms: 1000, s: 1e6, m: 6e7 }[(match[2] || "ms").toLowerCase()];
  const value = Math.round(parseFloat(match[1]) * scale);
  return value > 0 ? value : null;
}

function formatTime(us) {
  const date = new Date(us / 1000);
  return date.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit",
    minute: "2-digit", second: "2-digit" });
}

const PALETTE = ["#4e79a7", "#59a14f", "#9c755f", "#f28e2b", "#76b7b2", "#b07aa1", "#edc948",
  "#ff9da7", "#8cd17d", "#499894", "#86bcb6", "#d4a6c8", "#a0cbe8", "#f1ce63"];
function serviceColor(name) {
  let hash = 0;
  for (const ch of name || "?") hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

// ---- access token ---------------------------------------------------------------------------
// A collector started with --token wants "Authorization: Bearer <token>" on every API call.
// The token comes from a link (`tomograph serve` prints one: ...#/?token=...; the fragment is
// never sent to the server) or from a prompt on the first 401, and is kept in sessionStorage:
// for this tab's session only, never in the address bar, the history or a bookmark.

const TOKEN_KEY = "tomograph.token";
function token() { return sessionStorage.getItem(TOKEN_KEY); }

function takeTokenFromLink() {
  // "#token=T", "#/?token=T" or "#/trace/ID?token=T": keep T, leave "#/" or "#/trace/ID"
  const hash = location.hash.replace(/^#/, "");
  const question = hash.indexOf("?");
  let route, query;
  if (hash.startsWith("token=")) [route, query] = ["/", hash];
  else if (question >= 0) [route, query] = [hash.slice(0, question), hash.slice(question + 1)];
  else return;
  const parts = query.split("&");
  const given = parts.find((part) => part.startsWith("token="));
  if (given === undefined) return;
  let value = "";
  try { value = decodeURIComponent(given.slice("token=".length)).trim(); } catch (_) { /* bad %-escape */ }
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  const kept = parts.filter((part) => part && !part.startsWith("token="));
  const cleaned = `#${route || "/"}${kept.length ? `?${kept.join("&")}` : ""}`;
  history.replaceState(history.state, "", `${location.pathname}${location.search}${cleaned}`);
}

let asking = null;    // one prompt for the requests that fail together
let declined = false; // the user cancelled the prompt: do not ask again on this page
function askForToken(refused) {
  if (!asking) {
    asking = Promise.resolve().then(() => {
      const entered = (prompt(refused ? "The collector refused the access token. Access token:" : "This collector needs an access token:") || "").trim();
      if (entered) sessionStorage.setItem(TOKEN_KEY, entered); else declined = true;
      return Boolean(entered);
    }).finally(() => { asking = null; });
  }
  return asking;
}

async function api(path, params) {
  const url = new URL(API + path, location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const sent = token();
  const response = await fetch(url, { headers: sent ? { Authorization: `Bearer ${sent}` } : {} });
  if (response.status === 401) {
    if (token() !== sent) return api(path, params);  // a token arrived while this one was out
    if (!declined && await askForToken(Boolean(sent))) return api(path, params);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

function setStatus(node, text, isError) {
  node.textContent = text;
  node.classList.toggle("error", Boolean(isError));
}

function fillSelect(select, values, blank) {
  const current = select.value;
  select.replaceChildren();
  if (blank !== undefined) select.append(el("option", { value: "" }, blank));
  for (const value of values) select.append(el("option", { value }, value));
  if ([...select.options].some((o) => o.value === current)) select.value = current;
}

const serviceOf = (span) => (span.localEndpoint && span.localEndpoint.serviceName) || "unknown";
const remoteOf = (span) => (span.remoteEndpoint && span.remoteEndpoint.serviceName) || "";
const isError = (span) => Boolean(span.tags && Object.prototype.hasOwnProperty.call(span.tags, "error"));

// ---- trace model --------------------------------------------------------------------------

// Arrange spans as a tree the way Zipkin does: a shared (server) span hangs under the client span
// with the same id; spans whose parent was not reported become roots.
function buildTree(spans) {
  const nodes = spans.map((span) => ({ span, children: [], depth: 0 }));
  const plain = new Map();
  const shared = new Map();
  for (const node of nodes) {
    const s = node.span;
    if (s.shared) shared.set(`${s.id}/${serviceOf(s)}`, node);
    else if (!plain.has(s.id)) plain.set(s.id, node);
  }
  const roots = [];
  for (const node of nodes) {
    const s = node.span;
    let parent = null;
    if (s.shared) parent = plain.get(s.id) || null;
    else if (s.parentId) {
      parent = shared.get(`${s.parentId}/${serviceOf(s)}`) || plain.get(s.parentId) || null;
      if (!parent) for (const [key, candidate] of shared) if (key.startsWith(`${s.parentId}/`)) { parent = candidate; break; }
    }
    if (parent && parent !== node) parent.children.push(node);
    else roots.push(node);
  }
  const byStart = (a, b) => (a.span.timestamp || 0) - (b.span.timestamp || 0);
  const order = [];
  const visit = (node, depth) => {
    node.depth = depth;
    order.push(node);
    node.children.sort(byStart);
    for (const child of node.children) visit(child, depth + 1);
  };
  roots.sort((a, b) => (a.span.parentId ? 1 : 0) - (b.span.parentId ? 1 : 0) || byStart(a, b));
  for (const root of roots) visit(root, 0);
  return { roots, order };
}

function summarize(spans) {
  const { roots, order } = buildTree(spans);
  const timed = spans.filter((s) => s.timestamp);
  const start = Math.min(...timed.map((s) => s.timestamp));
  const end = Math.max(...timed.map((s) => s.timestamp + (s.duration || 0)));
  const root = roots[0] ? roots[0].span : spans[0];
  return {
    root, order, start, end,
    duration: timed.length ? Math.max(end - start, root.duration || 0) : root.duration || 0,
    services: [...new Set(spans.map(serviceOf))],
    errors: spans.filter(isError).length,
    depth: order.reduce((d, n) => Math.max(d, n.depth + 1), 0),
  };
}

// ---- search -------------------------------------------------------------------------------

function readSearchParams() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  return Object.fromEntries(params.entries());
}

async function showSearch() {
  view.replaceChildren(template("tpl-search"));
  const form = document.getElementById("search");
  const status = document.getElementById("search-status");
  const fields = {
    serviceName: document.getElementById("f-service"), spanName: document.getElementById("f-span"),
    remoteServiceName: document.getElementById("f-remote"), annotationQuery: document.getElementById("f-query"),
    minDuration: document.getElementById("f-min"), maxDuration: document.getElementById("f-max"),
    lookback: document.getElementById("f-lookback"), limit: document.getElementById("f-limit"),
  };
  const from = document.getElementById("f-from");
  const to = document.getElementById("f-to");
  const toggleCustom = () => {
    for (const label of form.querySelectorAll(".custom-range")) label.hidden = fields.lookback.value !== "custom";
  };
  fields.lookback.addEventListener("change", toggleCustom);

  const previous = readSearchParams();
  try {
    fillSelect(fields.serviceName, await api("/services"), "(any)");
  } catch (error) { setStatus(status, error.message, true); return; }
  const loadNames = async () => {
    const service = fields.serviceName.value;
    if (!service) { fillSelect(fields.spanName, [], "(any)"); fillSelect(fields.remoteServiceName, [], "(any)"); return; }
    const [names, remotes] = await Promise.all([
      api("/spans", { serviceName: service }), api("/remoteServices", { serviceName: service })]);
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
    const toLocal = (ms) => new Date(ms - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 16);
    to.value = toLocal(Number(previous.endTs));
    from.value = toLocal(Number(previous.endTs) - Number(previous.lookback));
  }
  toggleCustom();

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = {};
    for (const key of ["serviceName", "spanName", "remoteServiceName", "annotationQuery", "limit"]) {
      if (fields[key].value.trim()) query[key] = fields[key].value.trim();
    }
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
  if (!params.endTs) params.endTs = String(Date.now());
  setStatus(status, "Searching…");
  let traces;
  try {
    traces = await api("/traces", params);
  } catch (error) { setStatus(status, error.message, true); results.replaceChildren(); return; }
  const summaries = traces.filter((t) => t.length).map(summarize).sort((a, b) => b.start - a.start);
  const longest = Math.max(1, ...summaries.map((s) => s.duration));
  setStatus(status, summaries.length ? `${summaries.length} trace${summaries.length === 1 ? "" : "s"}` : `No traces match. Widen the time range or remove a filter. New here? Run: ${demoCommand()}`);
  results.replaceChildren(...summaries.map((s) => {
    const counts = new Map();
    for (const node of s.order) counts.set(serviceOf(node.span), (counts.get(serviceOf(node.span)) || 0) + 1);
    return el("li", {},
      el("a", { class: `trace-row${s.errors ? " has-error" : ""}`, href: `#/trace/${s.root.traceId}`, "data-trace-id": s.root.traceId },
        el("div", {},
          el("div", { class: "name" }, `${serviceOf(s.root)}: ${s.root.name || "(unnamed)"}`),
          el("div", { class: "sub" },
            s.errors ? el("span", { class: "badge error" }, `${s.errors} error${s.errors === 1 ? "" : "s"}`) : null,
            el("span", { class: "badge" }, `${s.order.length} spans`),
            [...counts].slice(0, 6).map(([name, n]) => el("span", { class: "badge", style: `border-left: 3px solid ${serviceColor(name)}` }, `${name} ×${n}`)))),
        el("div", { class: "dur-track", title: formatDuration(s.duration) },
          el("div", { class: "dur-bar", style: `width: ${(100 * s.duration / longest).toFixed(2)}%` })),
        el("div", { class: "duration" }, formatDuration(s.duration)),
        el("div", { class: "when" }, Number.isFinite(s.start) ? formatTime(s.start) : "")));
  }));
}

// ---- trace view ---------------------------------------------------------------------------

let jsonBlobUrl = null; // the JSON of the trace on show, when the API needs a token

async function showTrace(traceId) {
  view.replaceChildren(template("tpl-trace"));
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
  renderWaterfall(summary);
}

function renderWaterfall(summary) {
  const container = document.getElementById("waterfall");
  const details = document.getElementById("details");
  const total = Math.max(1, summary.duration);
  const start = Number.isFinite(summary.start) ? summary.start : 0;
  const collapsed = new Set();
  const pct = (us) => `${Math.max(0, Math.min(100, (100 * us) / total)).toFixed(3)}%`;

  const axis = el("div", { class: "wf-axis" }, el("div", { class: "label" }, ""), el("div", { class: "ticks" },
    [0, 0.2, 0.4, 0.6, 0.8].map((f) => el("div", { class: "tick", style: `left: ${f * 100}%` }, formatDuration(Math.round(f * total))))));
  const rows = summary.order.map((node) => {
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
        el("span", { class: "span-name", title: s.name || "" }, s.name || "(unnamed)")),
      el("div", { class: "lane" },
        el("div", { class: "bar", style: `left: ${pct(offset)}; width: ${pct(s.duration || 0)}; background: ${serviceColor(service)}` }),
        (s.annotations || []).map((a) => el("div", { class: "note", title: a.value, style: `left: ${pct(a.timestamp - start)}` })),
        el("span", { class: "bar-label", style: `left: calc(${pct(offset + (s.duration || 0))} + 4px)` },
          formatDuration(s.duration))));
    node.row = row;
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
  });

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
  document.getElementById("t-expand").addEventListener("click", () => { collapsed.clear(); applyCollapse(); });
  document.getElementById("t-collapse").addEventListener("click", () => {
    for (const node of summary.order) if (node.children.length && node.depth > 0) collapsed.add(node);
    applyCollapse();
  });
  container.replaceChildren(axis, ...rows);
  applyCollapse();
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

// ---- dependencies -------------------------------------------------------------------------

async function showDependencies() {
  view.replaceChildren(template("tpl-deps"));
  const form = document.getElementById("deps-form");
  const load = async () => {
    const status = document.getElementById("deps-status");
    setStatus(status, "Loading…");
    try {
      const links = await api("/dependencies", { endTs: Date.now(), lookback: document.getElementById("d-lookback").value });
      setStatus(status, links.length ? `${links.length} links` : "No calls between services in this time range.");
      drawGraph(document.getElementById("graph"), links);
    } catch (error) { setStatus(status, error.message, true); }
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  load();
}

function drawGraph(container, links) {
  container.replaceChildren();
  if (!links.length) return;
  const names = [...new Set(links.flatMap((l) => [l.parent, l.child]))];
  // layer each service by its longest call path from a caller-less service
  const layer = new Map(names.map((n) => [n, 0]));
  for (let pass = 0; pass < names.length; pass++) {
    for (const link of links) {
      if (link.parent !== link.child && layer.get(link.child) < layer.get(link.parent) + 1 && layer.get(link.parent) + 1 < names.length) {
        layer.set(link.child, layer.get(link.parent) + 1);
      }
    }
  }
  const columns = [];
  for (const name of names.sort()) (columns[layer.get(name)] = columns[layer.get(name)] || []).push(name);
  const nodeW = 170, nodeH = 34, gapX = 110, gapY = 26;
  const pos = new Map();
  columns.forEach((column, x) => column.forEach((name, y) => pos.set(name, { x: 20 + x * (nodeW + gapX), y: 20 + y * (nodeH + gapY) })));
  const width = 40 + columns.length * (nodeW + gapX) - gapX;
  const height = 40 + Math.max(...columns.map((c) => c.length)) * (nodeH + gapY) - gapY;
  const maxCalls = Math.max(...links.map((l) => l.callCount));
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "service dependency graph" });
  const marker = (id, color) => svg("marker", { id, viewBox: "0 0 10 10", refX: "10", refY: "5", markerUnits: "userSpaceOnUse",
    markerWidth: "10", markerHeight: "10", orient: "auto-start-reverse" }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: color }));
  root.append(svg("defs", {}, marker("arrow", "#8a93a6"), marker("arrow-error", "#d64541")));
  for (const link of links) {
    const a = pos.get(link.parent), b = pos.get(link.child);
    const x1 = a.x + nodeW, y1 = a.y + nodeH / 2, x2 = b.x, y2 = b.y + nodeH / 2;
    const self = link.parent === link.child;
    const d = self ? `M ${a.x + nodeW - 20} ${a.y} C ${a.x + nodeW + 30} ${a.y - 40}, ${a.x + nodeW + 40} ${a.y + nodeH}, ${a.x + nodeW} ${a.y + nodeH - 6}`
      : x2 > x1 ? `M ${x1} ${y1} C ${x1 + gapX / 2} ${y1}, ${x2 - gapX / 2} ${y2}, ${x2} ${y2}`
        : `M ${a.x} ${y1} C ${a.x - 60} ${y1 - 60}, ${b.x + nodeW + 60} ${y2 - 60}, ${b.x + nodeW} ${y2}`;
    const color = link.errorCount ? "#d64541" : "#8a93a6";
    const path = svg("path", { d, fill: "none", stroke: color, "stroke-width": String(1 + 3 * link.callCount / maxCalls), "marker-end": link.errorCount ? "url(#arrow-error)" : "url(#arrow)", class: "edge" });
    path.append(svg("title", {}, `${link.parent} → ${link.child}: ${link.callCount} calls, ${link.errorCount || 0} errors`));
    root.append(path);
    const label = `${link.callCount}${link.errorCount ? ` (${link.errorCount} err)` : ""}`;
    root.append(svg("text", { x: self ? a.x + nodeW + 24 : (x1 + x2) / 2, y: self ? a.y - 12 : (y1 + y2) / 2 - 6, "text-anchor": "middle", fill: color }, label));
  }
  for (const [name, p] of pos) {
    const group = svg("g", { class: "node", "data-service": name });
    group.append(svg("rect", { x: p.x, y: p.y, width: nodeW, height: nodeH, rx: 6, fill: "#fff", stroke: serviceColor(name), "stroke-width": 2 }));
    group.append(svg("text", { x: p.x + nodeW / 2, y: p.y + nodeH / 2 + 4, "text-anchor": "middle", fill: "#1d2330" }, name.length > 22 ? name.slice(0, 21) + "…" : name));
    group.append(svg("title", {}, name));
    root.append(group);
  }
  container.append(root);
}

// ---- operations ---------------------------------------------------------------------------

async function showOperations() {
  view.replaceChildren(template("tpl-ops"));
  const select = document.getElementById("o-service");
  const status = document.getElementById("ops-status");
  const table = document.getElementById("ops-table");
  const wanted = readSearchParams().serviceName;
  try {
    fillSelect(select, await api("/services"));
  } catch (error) { setStatus(status, error.message, true); return; }
  if (wanted) select.value = wanted;
  const load = async () => {
    if (!select.value) { setStatus(status, "No services yet: send some spans first."); return; }
    setStatus(status, "Loading…");
    try {
      const ops = await api("/tomograph/operations", { serviceName: select.value, endTs: Date.now(), lookback: document.getElementById("o-lookback").value });
      setStatus(status, ops.length ? `${ops.length} operations of ${select.value}` : "No spans of this service in the time range.");
      const longest = Math.max(1, ...ops.map((o) => o.p99));
      table.hidden = !ops.length;
      table.tBodies[0].replaceChildren(...ops.map((o) => el("tr", { "data-span-name": o.spanName },
        el("td", {}, el("a", { href: `#/?${new URLSearchParams({ serviceName: select.value, spanName: o.spanName, lookback: document.getElementById("o-lookback").value })}` }, o.spanName)),
        el("td", { class: "num" }, o.count),
        el("td", { class: `num${o.errorCount ? " bad" : ""}` }, `${(100 * o.errorRate).toFixed(1)}%`),
        el("td", { class: "num" }, formatDuration(o.p50)), el("td", { class: "num" }, formatDuration(o.p90)),
        el("td", { class: "num" }, formatDuration(o.p99)), el("td", { class: "num" }, formatDuration(o.max)),
        el("td", {}, el("div", { class: "pbar", title: `p50 ${formatDuration(o.p50)}, p90 ${formatDuration(o.p90)}, p99 ${formatDuration(o.p99)}` },
          el("span", { style: `width: ${(100 * o.p99 / longest).toFixed(2)}%; background: #f4c7a1` }),
          el("span", { style: `width: ${(100 * o.p90 / longest).toFixed(2)}%; background: #f28e2b` }),
          el("span", { style: `width: ${(100 * o.p50 / longest).toFixed(2)}%; background: #4e79a7` }))))));
    } catch (error) { setStatus(status, error.message, true); }
  };
  document.getElementById("ops-form").addEventListener("submit", (event) => { event.preventDefault(); load(); });
  load();
}

// ---- routing ------------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const path = hash.split("?")[0];
  const section = path.startsWith("/trace/") ? "trace" : path === "/dependencies" ? "dependencies" : path === "/operations" ? "operations" : "search";
  for (const link of document.querySelectorAll("[data-nav]")) link.classList.toggle("active", link.dataset.nav === section);
  if (section === "trace") return showTrace(decodeURIComponent(path.slice("/trace/".length)));
  if (section === "dependencies") return showDependencies();
  if (section === "operations") return showOperations();
  return showSearch();
}

document.getElementById("goto").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = document.getElementById("goto-id").value.trim().toLowerCase();
  if (id) location.hash = `#/trace/${id}`;
});
window.addEventListener("hashchange", () => { takeTokenFromLink(); route(); });
takeTokenFromLink();
route();
