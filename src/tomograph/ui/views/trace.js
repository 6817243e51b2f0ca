// The trace page: headline facts, tools to work through the trace (find, collapse, mini-map) and
// the waterfall, which draws only the rows in view so that a trace of 100,000 spans opens at once.
//
// Hooks for other analyses (critical path, clock skew, ...), which never redraw the waterfall
// themselves: show() and renderWaterfall() return a Waterfall whose
//   mark(name, spanIds)  puts the class "mark-<name>" on the rows (and mini-map) of those spans,
//                        kept as rows are drawn again; mark(name, []) takes it off;
//   badges               is a list of functions node => Node|null, shown after the span's name;
//   summary              is what summarize() returned (nodes: { span, parent, children, depth }).
// A row is drawn from node.span, so a display-only correction of a span's times is made on the
// spans (copies) before summarize(), and marked with mark("adjusted", ids) and a badge.
// Decorations known before drawing come as renderWaterfall's fourth argument, { badges, overlays }:
// overlays are functions (node, place) => Node(s) drawn in the span's lane, place(fromUs, toUs)
// giving the CSS left/width of that stretch of time. mark() takes span objects as well as ids (a
// client span and its shared server span have one id).

import { API, api, token } from "../lib/api.js";
import { serviceColor } from "../lib/colors.js";
import { el, template } from "../lib/dom.js";
import { formatDuration, formatTime, plural } from "../lib/format.js";
import { isError, remoteOf, serviceOf, summarize } from "../lib/spans.js";
import { findSpans } from "../analysis/find.js";
import { correctSpansForClockSkew } from "../analysis/clock-skew.js";
import { traceAnalyses } from "./trace-analyses.js";

const ROW_HEIGHT = 28; // px, as .wf-row in style.css: rows are placed by index, never measured
const AXIS_HEIGHT = 26; // px, as .wf-axis: the axis sticks to the top of the scrolled rows
const OVERSCAN = 12; // rows drawn beyond each edge of the view, so fast scrolling shows no gap
const TICK_SPACING = 80; // px the axis leaves at least between two tick labels
const MATCH_COLOR = "#e8a400"; // the find box's matches on the mini-map, as --match in style.css

let jsonBlobUrl = null; // the JSON of the trace on show, when the API needs a token

/** Loads trace `traceId` and shows it in `root`; resolves to its Waterfall (none if not found). */
export async function show(root, traceId) {
  root.replaceChildren(template("tpl-trace"));
  const title = document.getElementById("t-title");
  if (!/^[0-9a-f]{1,32}$/i.test(traceId)) {
    title.textContent = `"${traceId}" is not a trace id`;
    const status = document.getElementById("t-status");
    status.hidden = false;
    status.replaceChildren(el("span", {}, "A trace id is up to 32 hexadecimal digits. ", el("a", { href: "#/" }, "Search traces")));
    return null;
  }
  let spans;
  try {
    spans = await api(`/trace/${encodeURIComponent(traceId)}`);
  } catch (error) {
    title.textContent = error.status === 404 ? `Trace ${traceId} not found` : "The trace could not be loaded";
    const status = document.getElementById("t-status");
    status.hidden = false;
    status.replaceChildren(error.status === 404
      ? el("span", {}, "The collector has no spans with this trace id: it may be mistyped, not sent yet, or removed by retention. ",
        el("a", { href: "#/" }, "Search traces"))
      : el("span", { class: "error" }, error.message));
    return null;
  }
  if (!Array.isArray(spans) || !spans.length) {
    title.textContent = `Trace ${traceId} has no spans`;
    return null;
  }
  // With a token the API link would answer 401 in a new tab: offer the spans already loaded.
  if (jsonBlobUrl) URL.revokeObjectURL(jsonBlobUrl);
  jsonBlobUrl = token() ? URL.createObjectURL(new Blob([JSON.stringify(spans, null, 2)], { type: "application/json" })) : null;
  return showSpans(root, spans, { traceId, json: jsonBlobUrl || `${API}/trace/${encodeURIComponent(traceId)}`, stored: true });
}

/** Shows the loaded trace `spans` (from the API, or a file) in `root`, clock skew corrected for
 * display, with the critical path; `json` is where the JSON link points, `stored` whether the
 * collector has the trace (then it can be compared with another). Returns its Waterfall. */
export function showSpans(root, spans, { traceId, json, stored = false }) {
  if (!root.querySelector("#t-title")) root.replaceChildren(template("tpl-trace"));
  performance.mark("trace:loaded");
  const asSent = summarize(spans);
  const { spans: shown, adjusted } = correctSpansForClockSkew(spans, asSent.roots);
  const summary = adjusted.size ? summarize(shown) : asSent;
  document.getElementById("t-title").textContent = `${serviceOf(summary.root)}: ${summary.root.name || "(unnamed)"}`;
  const facts = [["Duration", formatDuration(summary.duration)], ["Services", summary.services.length],
    ["Depth", summary.depth], ["Spans", summary.order.length], ["Errors", summary.errors],
    ["Started", Number.isFinite(summary.start) ? formatTime(summary.start) : "?"], ["Trace id", traceId]];
  const analyses = traceAnalyses(summary, adjusted);
  facts.push(...analyses.facts);
  document.getElementById("t-facts").replaceChildren(...facts.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v))));
  const jsonLink = document.getElementById("t-json");
  jsonLink.href = json;
  if (stored) jsonLink.after(el("a", { id: "t-compare", href: `#/compare?a=${encodeURIComponent(traceId)}` }, "Compare…"));
  document.getElementById("t-tools").hidden = false;
  document.getElementById("t-body").hidden = false;
  const waterfall = renderWaterfall(document.getElementById("waterfall"), document.getElementById("details"), summary, analyses);
  for (const [name, marked] of Object.entries(analyses.marks)) waterfall.mark(name, marked);
  connectTools(waterfall);
  return waterfall;
}

/** The tools above the waterfall: find with next/previous, collapse, expand, keyboard hints. */
function connectTools(waterfall) {
  const { summary } = waterfall;
  const input = document.getElementById("t-find");
  const count = document.getElementById("t-find-count");
  let matches = [];
  let current = -1;
  const showCount = () => {
    count.textContent = !input.value.trim() ? "" : matches.length ? `${current + 1} of ${matches.length}` : "no match";
    count.classList.toggle("none", Boolean(input.value.trim()) && !matches.length);
  };
  const go = (step) => {
    if (!matches.length) return;
    current = (current + step + matches.length) % matches.length;
    waterfall.setCurrentMatch(matches[current]);
    showCount();
  };
  let pending = 0;
  input.addEventListener("input", () => {
    clearTimeout(pending);
    // a 10 MB tag is searched too: wait for a pause in typing rather than search every key
    pending = setTimeout(() => {
      matches = findSpans(summary.order, input.value);
      current = -1;
      waterfall.setMatches(matches);
      if (matches.length) go(1); else showCount();
    }, summary.order.length > 2000 ? 150 : 30);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); go(event.shiftKey ? -1 : 1); }
    if (event.key === "Escape") { input.value = ""; input.dispatchEvent(new Event("input")); waterfall.focus(); }
  });
  document.getElementById("t-find-next").addEventListener("click", () => go(1));
  document.getElementById("t-find-prev").addEventListener("click", () => go(-1));

  const collapseBy = document.getElementById("t-collapse-by");
  const maxDepth = Math.min(summary.depth - 1, 12);
  for (let depth = 1; depth <= maxDepth; depth++) {
    collapseBy.append(el("option", { value: `depth:${depth}` }, `to ${plural(depth, "level")}`));
  }
  const parents = new Set(summary.order.filter((n) => n.children.length).map((n) => serviceOf(n.span)));
  for (const service of [...parents].sort()) collapseBy.append(el("option", { value: `service:${service}` }, `spans of ${service}`));
  collapseBy.addEventListener("change", () => {
    const [kind, value] = [collapseBy.value.slice(0, collapseBy.value.indexOf(":")), collapseBy.value.slice(collapseBy.value.indexOf(":") + 1)];
    if (kind === "depth") waterfall.collapseWhere((node) => node.depth >= Number(value) - 1, true);
    if (kind === "service") waterfall.collapseWhere((node) => serviceOf(node.span) === value, false);
    collapseBy.value = "";
  });
  document.getElementById("t-expand").addEventListener("click", () => waterfall.collapseWhere(() => false, true));
  document.getElementById("t-collapse").addEventListener("click", () => waterfall.collapseWhere((node) => node.depth > 0, true));
  // "/" jumps to the find box from anywhere on the page, as in GitHub or Gmail
  const slash = (event) => {
    if (!document.body.contains(input)) { document.removeEventListener("keydown", slash); return; }
    if (event.key === "/" && !/^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement.tagName)) {
      event.preventDefault();
      input.focus();
      input.select();
    }
  };
  document.addEventListener("keydown", slash);
}

/** 1, 2, 2.5 or 5 times a power of ten: the smallest such step of at least `rough` microseconds. */
function niceStep(rough) {
  const power = 10 ** Math.floor(Math.log10(Math.max(rough, 1)));
  for (const factor of [1, 2, 2.5, 5, 10]) if (factor * power >= rough) return factor * power;
  return 10 * power;
}

/**
 * Draws `summary` (from summarize()) as a waterfall in `section`; a click or Enter on a row shows
 * the span in `details`. Returns the Waterfall (see the top of this module).
 */
export function renderWaterfall(section, details, summary, decorations = {}) {
  const total = Math.max(1, summary.duration);
  const start = Number.isFinite(summary.start) ? summary.start : 0;
  const order = summary.order;
  const collapsed = new Set();
  const marks = new Map(); // mark name -> Set of spans or span ids
  const badges = [...(decorations.badges || [])];
  const overlays = decorations.overlays || [];
  let visible = []; // the nodes not hidden by a collapsed ancestor, in order
  let matchSet = new Set();
  let currentMatch = null;
  let active = null; // the row the keyboard is on
  let selected = null; // the span whose details are shown
  const drawn = new Map(); // node -> its row element, for the rows in the DOM now
  const pct = (us) => `${Math.max(0, Math.min(100, (100 * us) / total)).toFixed(3)}%`;
  const place = (from, to) => `left: ${pct(from - start)}; width: ${pct(to - from)}`;
  order.forEach((node, index) => { node.index = index; });

  const ticks = el("div", { class: "ticks" });
  const axis = el("div", { class: "wf-axis", "aria-hidden": "true" }, el("div", { class: "label" }, "Service and span"), ticks);
  const tree = el("div", { class: "wf-rows", role: "tree", tabindex: "0", "aria-label": `${plural(order.length, "span")}; arrow keys move, right and left expand and collapse, Enter shows details` });
  const scroller = el("div", { class: "wf-scroll" }, axis, tree);
  const canvas = el("canvas", { class: "minimap-canvas" });
  const windowBox = el("div", { class: "minimap-window" });
  const minimap = el("div", { class: "minimap", title: "The whole trace: drag to move the view", "aria-hidden": "true" }, canvas, windowBox);
  section.replaceChildren(el("div", { class: "wf-main" }, scroller, minimap));
  // Sizes come from a ResizeObserver and the scroll position from scroll events: drawing never
  // reads the layout back, which would make the browser lay out the page again mid-draw.
  const view = { top: 0, height: window.innerHeight, laneWidth: 0, mapWidth: 0, mapHeight: 0 };
  const rowsHeight = () => visible.length * ROW_HEIGHT;

  // ---- rows ---------------------------------------------------------------------------------

  function decorate(node, row) {
    const s = node.span;
    row.classList.toggle("selected", node === selected);
    row.classList.toggle("active", node === active);
    row.classList.toggle("match", matchSet.has(node));
    row.classList.toggle("current-match", node === currentMatch);
    for (const [name, ids] of marks) row.classList.toggle(`mark-${name}`, ids.has(s) || ids.has(s.id));
    row.setAttribute("aria-selected", String(node === selected));
    if (node.children.length) row.setAttribute("aria-expanded", String(!collapsed.has(node)));
    const toggle = row.firstChild.firstChild;
    toggle.textContent = node.children.length ? (collapsed.has(node) ? "▸" : "▾") : "";
  }

  function drawRow(node) {
    const s = node.span;
    const service = serviceOf(s);
    const color = serviceColor(service);
    const offset = s.timestamp ? s.timestamp - start : 0;
    const toggle = el("span", { class: "toggle", "aria-hidden": "true" });
    toggle.addEventListener("click", (event) => {
      event.stopPropagation();
      setCollapsed(node, !collapsed.has(node));
    });
    const row = el("div", { class: `wf-row${isError(s) ? " error" : ""}`, role: "treeitem", id: `wf-${node.index}`,
      "aria-level": node.depth + 1, "data-span-id": s.id, "data-depth": node.depth, style: `top: ${node.visibleIndex * ROW_HEIGHT}px` },
      // deep trees indent at most a third of the column, so the name stays readable
      el("div", { class: "label", style: `padding-left: calc(8px + min(${node.depth * 14}px, 33%))` },
        toggle,
        el("span", { class: "service", title: service }, el("i", { class: "swatch", style: `background: ${color}` }), service),
        el("span", { class: "span-name", title: s.name || "" }, s.name || "(unnamed)"),
        badges.map((badge) => badge(node))),
      el("div", { class: "lane" },
        el("div", { class: "bar", style: `left: ${pct(offset)}; width: ${pct(s.duration || 0)}; background: ${color}` }),
        (s.annotations || []).slice(0, 50).map((a) => el("div", { class: "note", title: a.value, style: `left: ${pct(a.timestamp - start)}` })),
        overlays.flatMap((overlay) => overlay(node, place)),
        el("span", { class: "bar-label", style: `left: calc(${pct(offset + (s.duration || 0))} + 4px)` }, formatDuration(s.duration))));
    row.addEventListener("click", () => { setActive(node, false); select(node); });
    decorate(node, row);
    return row;
  }

  // Only the rows in (or near) the view are in the DOM, positioned by their index.
  function drawWindow() {
    const first = Math.max(0, Math.floor(view.top / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(visible.length, Math.ceil((view.top + view.height) / ROW_HEIGHT) + OVERSCAN);
    const wanted = new Set(visible.slice(first, last));
    if (active && active.visibleIndex >= 0) wanted.add(active); // aria-activedescendant must exist
    for (const [node, row] of drawn) if (!wanted.has(node)) { row.remove(); drawn.delete(node); }
    const fresh = [];
    for (const node of wanted) if (!drawn.has(node)) { const row = drawRow(node); drawn.set(node, row); fresh.push(row); }
    if (fresh.length) tree.append(...fresh);
    placeWindowBox();
  }

  function redecorate() { for (const [node, row] of drawn) decorate(node, row); }

  // The visible list: every node, less the descendants of collapsed ones (a subtree is contiguous
  // in `order`, so one pass skips it).
  function layout() {
    visible = [];
    let skipBelow = Infinity;
    for (const node of order) {
      if (node.depth > skipBelow) { node.visibleIndex = -1; continue; }
      skipBelow = collapsed.has(node) ? node.depth : Infinity;
      node.visibleIndex = visible.length;
      visible.push(node);
    }
    tree.style.height = `${rowsHeight()}px`;
    for (const row of drawn.values()) row.remove();
    drawn.clear();
    drawWindow();
    drawMinimap();
  }

  // ---- axis ---------------------------------------------------------------------------------

  function drawAxis() {
    if (!view.laneWidth) return;
    const step = niceStep((total * TICK_SPACING) / view.laneWidth);
    const labels = [];
    for (let at = 0; at < total; at += step) labels.push(el("div", { class: "tick", style: `left: ${pct(at)}` }, formatDuration(at)));
    ticks.replaceChildren(...labels);
  }

  // ---- mini-map -----------------------------------------------------------------------------

  const colors = new Map(); // service -> colour, computed once per service
  function drawMinimap() {
    minimap.hidden = rowsHeight() + AXIS_HEIGHT <= view.height;
    if (minimap.hidden || !view.mapHeight) return;
    const width = view.mapWidth, height = view.mapHeight;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const context = canvas.getContext("2d");
    context.scale(ratio, ratio);
    const rowHeight = height / visible.length;
    const barHeight = Math.max(1, rowHeight - (rowHeight > 3 ? 1 : 0));
    const inner = width - 6; // the right edge shows where the matches are
    const groups = new Map(); // colour -> rows: one fillStyle per colour, not per span
    visible.forEach((node, i) => {
      const s = node.span;
      const service = serviceOf(s);
      if (!colors.has(service)) colors.set(service, serviceColor(service));
      const color = isError(s) ? "#d64541" : colors.get(service);
      if (!groups.has(color)) groups.set(color, []);
      groups.get(color).push(i);
    });
    for (const [color, rows] of groups) {
      context.fillStyle = color;
      for (const i of rows) {
        const s = visible[i].span;
        const offset = s.timestamp ? s.timestamp - start : 0;
        context.fillRect((inner * offset) / total, i * rowHeight, Math.max(1, (inner * (s.duration || 0)) / total), barHeight);
      }
    }
    context.fillStyle = MATCH_COLOR;
    for (const node of matchSet) if (node.visibleIndex >= 0) context.fillRect(inner + 1, node.visibleIndex * rowHeight, 5, Math.max(2, rowHeight));
    placeWindowBox();
  }

  function placeWindowBox() {
    if (minimap.hidden || !visible.length || !view.mapHeight) return;
    const scale = view.mapHeight / (rowsHeight() + AXIS_HEIGHT);
    windowBox.style.top = `${view.top * scale}px`;
    windowBox.style.height = `${Math.max(6, view.height * scale)}px`;
  }

  // A press on the mini-map centres the view there; dragging keeps moving it.
  minimap.addEventListener("pointerdown", (event) => {
    const move = (e) => {
      const y = e.clientY - minimap.getBoundingClientRect().top;
      const row = (y / view.mapHeight) * visible.length;
      scroller.scrollTop = row * ROW_HEIGHT - view.height / 2;
    };
    minimap.setPointerCapture(event.pointerId);
    move(event);
    const stop = () => { minimap.removeEventListener("pointermove", move); minimap.removeEventListener("pointerup", stop); };
    minimap.addEventListener("pointermove", move);
    minimap.addEventListener("pointerup", stop);
    event.preventDefault();
  });

  // ---- state changes ------------------------------------------------------------------------

  function scrollToRow(node) {
    const top = node.visibleIndex * ROW_HEIGHT; // below the sticky axis
    if (top < view.top) scroller.scrollTop = top;
    else if (top + ROW_HEIGHT + AXIS_HEIGHT > view.top + view.height) scroller.scrollTop = top + ROW_HEIGHT + AXIS_HEIGHT - view.height;
    view.top = scroller.scrollTop;
    // the page may be scrolled too: keep the waterfall itself in view
    const box = scroller.getBoundingClientRect();
    if (box.top < 0 || box.top > window.innerHeight - ROW_HEIGHT * 3) scroller.scrollIntoView({ block: "nearest" });
  }

  function reveal(node) {
    let changed = false;
    for (let up = node.parent; up; up = up.parent) if (collapsed.delete(up)) changed = true;
    if (changed) layout();
  }

  function setActive(node, scroll = true) {
    active = node;
    if (!node) { tree.removeAttribute("aria-activedescendant"); return; }
    reveal(node);
    if (scroll) scrollToRow(node);
    drawWindow();
    tree.setAttribute("aria-activedescendant", `wf-${node.index}`);
    redecorate();
  }

  function select(node) {
    selected = node;
    redecorate();
    showDetails(details, node.span, start, () => { selected = null; redecorate(); tree.focus(); });
  }

  function setCollapsed(node, value) {
    if (!node.children.length) return;
    if (value) collapsed.add(node); else collapsed.delete(node);
    layout();
    keepActiveVisible();
  }

  // After a collapse the keyboard stays on a shown row: the collapsed ancestor takes over.
  function keepActiveVisible() {
    if (!active) return;
    let up = active;
    while (up && up.visibleIndex < 0) up = up.parent;
    setActive(up || visible[0], false);
  }

  // ---- keyboard -----------------------------------------------------------------------------

  // Entering the waterfall (by Tab or a click) starts on the first row in view, without scrolling.
  tree.addEventListener("focus", () => {
    if (!active && visible.length) setActive(visible[Math.min(visible.length - 1, Math.ceil(view.top / ROW_HEIGHT))], false);
  });
  tree.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey || !visible.length) return;
    const at = active && active.visibleIndex >= 0 ? active.visibleIndex : 0;
    const page = Math.max(1, Math.floor((view.height - AXIS_HEIGHT) / ROW_HEIGHT) - 1);
    const to = (row) => setActive(visible[Math.max(0, Math.min(visible.length - 1, row))]);
    const node = visible[at];
    switch (event.key) {
      case "ArrowDown": case "j": to(at + 1); break;
      case "ArrowUp": case "k": to(at - 1); break;
      case "PageDown": to(at + page); break;
      case "PageUp": to(at - page); break;
      case "Home": to(0); break;
      case "End": to(visible.length - 1); break;
      case "ArrowRight": case "l":
        if (node.children.length && collapsed.has(node)) setCollapsed(node, false);
        else if (node.children.length) to(at + 1);
        break;
      case "ArrowLeft": case "h":
        if (node.children.length && !collapsed.has(node)) setCollapsed(node, true);
        else if (node.parent) setActive(node.parent);
        break;
      case "Enter": case " ": select(node); break;
      case "Escape": details.hidden = true; selected = null; redecorate(); break;
      default: return;
    }
    event.preventDefault();
  });

  scroller.addEventListener("scroll", () => {
    view.top = scroller.scrollTop;
    requestAnimationFrame(drawWindow);
  }, { passive: true });
  const observer = new ResizeObserver((entries) => {
    for (const { target, contentRect } of entries) {
      if (target === scroller) view.height = contentRect.height;
      if (target === ticks) view.laneWidth = contentRect.width;
      if (target === minimap) { view.mapWidth = contentRect.width; view.mapHeight = contentRect.height; }
    }
    drawAxis();
    drawWindow();
    drawMinimap();
  });
  for (const target of [scroller, ticks, minimap]) observer.observe(target);
  layout();
  performance.mark("trace:rendered");

  return {
    summary,
    badges,
    /** Puts class "mark-<name>" on the rows of `spanIds`, spans or ids (and takes it off every other row). */
    mark(name, spanIds) {
      marks.set(name, new Set(spanIds));
      redecorate();
    },
    /** Highlights the rows of these nodes (the find box's matches). */
    setMatches(nodes) {
      matchSet = new Set(nodes);
      currentMatch = null;
      redecorate();
      drawMinimap();
    },
    /** Shows `node` (expanding its ancestors), scrolled into view as the current match. */
    setCurrentMatch(node) {
      currentMatch = node;
      setActive(node);
      drawMinimap();
    },
    /** Collapses the nodes with children for which `predicate(node)` holds; `reset` expands the others. */
    collapseWhere(predicate, reset) {
      if (reset) collapsed.clear();
      for (const node of order) if (node.children.length && predicate(node)) collapsed.add(node);
      layout();
      keepActiveVisible();
    },
    /** Moves keyboard focus to the waterfall. */
    focus() { tree.focus(); },
  };
}

function showDetails(details, span, traceStart, onClose) {
  details.hidden = false;
  const rows = (pairs, cls) => el("table", {}, el("tbody", {}, pairs.map(([k, v]) =>
    el("tr", { class: cls && cls(k) }, el("th", { scope: "row" }, k), el("td", { class: "value" }, v)))));
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
    el("button", { class: "close", type: "button", "aria-label": "Close the span details",
      onclick: () => { details.hidden = true; onClose(); } }, "×"),
    el("h2", {}, span.name || "(unnamed)"),
    rows(info),
    el("h3", {}, `Tags (${tags.length})`),
    tags.length ? rows(tags, (k) => (k === "error" ? "error-tag" : null)) : el("p", { class: "empty" }, "no tags"),
    el("h3", {}, `Notes (${notes.length})`),
    notes.length ? rows(notes) : el("p", { class: "empty" }, "no notes"));
}
