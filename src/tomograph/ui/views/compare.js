// The compare page: two traces of one endpoint side by side as one merged tree. Each row is a
// span matched by its service/name/kind path; a span in one trace only says so, and the change
// in duration from A to B is written out and coloured (slower, faster, about the same).

import { api } from "../lib/api.js";
import { serviceColor } from "../lib/colors.js";
import { el, setStatus } from "../lib/dom.js";
import { formatDuration, formatTime, plural } from "../lib/format.js";
import { routeParams } from "../lib/route.js";
import { buildTree, sameTraceId, serviceOf, summarize } from "../lib/spans.js";
import { correctSpansForClockSkew } from "../analysis/clock-skew.js";
import { mergeTraces } from "../analysis/merge.js";

const ID = /^[0-9a-f]{16}([0-9a-f]{16})?$/;

/** Shows the compare page in `root` for the route's traces a and b. */
export async function show(root) {
  const params = routeParams();
  const a = (params.a || "").trim().toLowerCase();
  const b = (params.b || "").trim().toLowerCase();
  const inputA = el("input", { id: "c-a", value: a, placeholder: "trace id", spellcheck: "false" });
  const inputB = el("input", { id: "c-b", value: b, placeholder: "trace id", spellcheck: "false" });
  const form = el("form", { class: "search", id: "compare-form", autocomplete: "off" },
    el("label", {}, "Trace A", inputA), el("label", {}, "Trace B", inputB),
    el("button", { type: "submit", id: "c-submit" }, "Compare"));
  const status = el("p", { class: "status", id: "compare-status", role: "status" });
  const result = el("section", { id: "compare-result" });
  root.replaceChildren(el("section", { class: "panel" }, form), status, result);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const [key, input] of [["a", inputA], ["b", inputB]]) if (input.value.trim()) query.set(key, input.value.trim().toLowerCase());
    location.hash = `#/compare?${query}`;
  });
  for (const [label, id] of [["A", a], ["B", b]]) {
    if (id && !ID.test(id)) { setStatus(status, `Trace ${label}: "${id}" is not a trace id (16 or 32 hex characters)`, true); return; }
  }
  if (!a) { setStatus(status, "Give two trace ids, or one to pick the other among traces of the same endpoint."); return; }

  let spansA;
  let spansB;
  try {
    setStatus(status, "Loading…");
    [spansA, spansB] = await Promise.all([load(a), b ? load(b) : null]);
  } catch (error) {
    setStatus(status, error.message, true);
    return;
  }
  if (!b) {
    setStatus(status, "");
    await offerCandidates(result, a, spansA);
    return;
  }
  setStatus(status, "");
  result.replaceChildren(...compared(a, spansA, b, spansB));
}

async function load(traceId) {
  try {
    const spans = await api(`/trace/${encodeURIComponent(traceId)}`);
    if (!Array.isArray(spans) || !spans.length) throw new Error(`Trace ${traceId} has no spans`);
    return spans;
  } catch (error) {
    if (error.status === 404) throw new Error(`Trace ${traceId} not found`);
    throw error;
  }
}

const endpointOf = (summary) => ({ service: serviceOf(summary.root), name: summary.root.name || "" });

// Traces of A's endpoint (its root's service and name), to pick B from.
async function offerCandidates(result, a, spansA) {
  const endpoint = endpointOf(summarize(spansA));
  const heading = el("h2", { class: "compare-pick" }, `Compare ${a} with another trace of `,
    serviceLabel(endpoint.service), " ", endpoint.name);
  let traces = [];
  try {
    traces = await api("/traces", { serviceName: endpoint.service, spanName: endpoint.name || undefined, lookback: 7 * 86400000, limit: 50 });
  } catch (error) {
    result.replaceChildren(heading, el("p", { class: "status error" }, error.message));
    return;
  }
  const others = traces.filter((spans) => spans.length && !sameTraceId(spans[0].traceId, a));
  if (!others.length) {
    result.replaceChildren(heading, el("p", { class: "empty" }, "No other trace of this endpoint in the last 7 days."));
    return;
  }
  result.replaceChildren(heading, el("ol", { class: "trace-list", id: "compare-candidates" }, others.map((spans) => {
    const summary = summarize(spans);
    const id = spans[0].traceId;
    return el("li", {}, el("a", { class: "trace-row", href: `#/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(id)}` },
      el("span", { class: "name" }, `${endpoint.service}: ${endpoint.name}`),
      el("span", { class: "sub" }, `${plural(spans.length, "span")} · ${plural(summary.errors, "error")} · ${id}`),
      el("span", { class: "duration" }, formatDuration(summary.duration)),
      el("span", { class: "when" }, Number.isFinite(summary.start) ? formatTime(summary.start) : "")));
  })));
}

function changeText(node) {
  if (node.only) return node.only === "a" ? "only in A" : "only in B";
  const { delta, ratio, verdict } = node.change;
  if (verdict === undefined) return "?";
  const sign = delta > 0 ? "+" : delta < 0 ? "−" : "±";
  const percent = ratio === undefined ? "" : ` (${sign}${Math.abs(Math.round((ratio - 1) * 100))}%)`;
  return `${sign}${formatDuration(Math.abs(delta))}${percent}`;
}

function bar(span, offset, total) {
  if (!span) return el("div", { class: "cmp-lane empty-lane" });
  const pct = (us) => `${Math.max(0, Math.min(100, (100 * us) / total)).toFixed(3)}%`;
  return el("div", { class: "cmp-lane" },
    el("div", { class: "bar", style: `left: ${pct(offset || 0)}; width: ${pct(span.duration || 0)}; background: ${serviceColor(serviceOf(span))}` }),
    el("span", { class: "cmp-dur" }, formatDuration(span.duration)));
}

function compared(a, spansA, b, spansB) {
  // clock skew corrected first, so that offsets within each trace read right
  const treeA = buildTree(correctSpansForClockSkew(spansA).spans);
  const treeB = buildTree(correctSpansForClockSkew(spansB).spans);
  const merged = mergeTraces(treeA.roots, treeB.roots);
  const summaryA = summarize(spansA);
  const summaryB = summarize(spansB);
  const total = Math.max(1, summaryA.duration, summaryB.duration);
  const endpointA = endpointOf(summaryA);
  const endpointB = endpointOf(summaryB);
  const out = [];
  if (endpointA.service !== endpointB.service || endpointA.name !== endpointB.name) {
    out.push(el("p", { class: "status error" }, `These traces start at different endpoints (${endpointA.service}: ${endpointA.name} and ${endpointB.service}: ${endpointB.name}): few spans will match.`));
  }
  const { counts } = merged;
  out.push(el("section", { class: "panel compare-head" },
    el("h1", { id: "c-title" }, `${endpointA.service}: ${endpointA.name || "(unnamed)"}`),
    el("dl", { class: "facts", id: "c-facts" },
      fact("A", `${a} · ${formatDuration(summaryA.duration)} · ${plural(spansA.length, "span")}`, `#/trace/${a}`),
      fact("B", `${b} · ${formatDuration(summaryB.duration)} · ${plural(spansB.length, "span")}`, `#/trace/${b}`),
      fact("Matched", plural(counts.both, "span")),
      fact("Only in A", String(counts.onlyA)), fact("Only in B", String(counts.onlyB)),
      fact("Slower in B", String(counts.slower)), fact("Faster in B", String(counts.faster))),
    el("p", { class: "legend" },
      el("span", { class: "chg slower" }, "slower"), " more than 10% and 100µs · ",
      el("span", { class: "chg faster" }, "faster"), " · ",
      el("span", { class: "chg only" }, "only in A / only in B"), " a span the other trace does not have")));
  const header = el("div", { class: "cmp-row cmp-header", role: "row" },
    el("div", { role: "columnheader" }, "Span"), el("div", { role: "columnheader" }, "A"),
    el("div", { role: "columnheader" }, "B"), el("div", { role: "columnheader", class: "num" }, "B − A"));
  out.push(el("div", { class: "compare", id: "compare-tree", role: "table", "aria-label": "spans of A and B" }, header,
    merged.order.map((node) => {
      const verdict = node.only ? `only only-${node.only}` : node.change.verdict || "unknown";
      return el("div", { class: `cmp-row ${node.only ? `only-${node.only}` : ""}`, role: "row", "data-depth": node.depth },
        el("div", { class: "label", role: "cell", style: `padding-left: ${8 + node.depth * 16}px` },
          serviceLabel(node.service),
          el("span", { class: "span-name", title: node.name }, node.name || "(unnamed)"),
          node.kind ? el("span", { class: "kind" }, node.kind.toLowerCase()) : null),
        el("div", { role: "cell" }, bar(node.a, node.offsetA, total)),
        el("div", { role: "cell" }, bar(node.b, node.offsetB, total)),
        el("div", { role: "cell", class: `num chg ${verdict}` }, changeText(node)));
    })));
  return out;
}

// A service's name after a swatch of its colour, as the trace view shows it.
function serviceLabel(service) {
  return el("span", { class: "service", title: service }, el("i", { class: "swatch", style: `background: ${serviceColor(service)}` }), service);
}

function fact(term, value, href) {
  return el("div", {}, el("dt", {}, term), el("dd", {}, href ? el("a", { href }, value) : value));
}
