// The dependency graph: which service calls which, how often and with how many errors, in a time
// window (an end time and a lookback). A click on a service or on a link shows its calls and
// errors and leads to the matching traces.

import { api } from "../lib/api.js";
import { assignColors, serviceColor } from "../lib/colors.js";
import { el, setStatus, svg, template } from "../lib/dom.js";
import { largest } from "../lib/extremes.js";
import { plural } from "../lib/format.js";
import { edgeLabel, layoutGraph } from "../lib/graph-layout.js";
import { newestOnly } from "../lib/page-life.js";
import { routeParams, searchHref } from "../lib/route.js";
import { fillLookbacks, readWindow, showWindow, windowParams } from "../lib/time-window.js";

const byId = (id) => document.getElementById(id);
const rate = (errors, calls) => (calls ? `${((100 * errors) / calls).toFixed(1)}%` : "0%");
const newestGraph = newestOnly(); // a window shown again replaces the load under way

/** Shows the dependency graph of the route's time window (default: the last day) in `root`. */
export async function show(root) {
  root.replaceChildren(template("tpl-deps"));
  const form = byId("deps-form");
  const endInput = byId("d-end");
  const lookback = byId("d-lookback");
  const status = byId("deps-status");
  fillLookbacks(lookback, 86400000);
  showWindow(endInput, lookback, routeParams());
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const window = readWindow(endInput, lookback);
    if (window.error) { setStatus(status, window.error, true); return; }
    const hash = `#/dependencies?${new URLSearchParams(windowParams(window))}`;
    if (location.hash === hash) load(window); else location.hash = hash;
  });
  const window = readWindow(endInput, lookback);
  if (window.error) { setStatus(status, window.error, true); return; }
  await load(window);
}

async function load(window) {
  const status = byId("deps-status");
  const details = byId("deps-details");
  details.hidden = true;
  setStatus(status, "Loading…");
  let links;
  try {
    links = await newestGraph(api("/dependencies", { endTs: window.endTs, lookback: window.lookback }));
  } catch (error) { setStatus(status, error.message, true); return; }
  const services = new Set(links.flatMap((l) => [l.parent, l.child]));
  const calls = links.reduce((sum, l) => sum + l.callCount, 0);
  setStatus(status, links.length
    ? `${plural(services.size, "service")}, ${plural(links.length, "link")}, ${plural(calls, "call")}. Click a service or a link for its calls and traces.`
    : "No calls between services in this time range.");
  drawGraph(byId("graph"), links, window);
}

function drawGraph(container, links, window) {
  container.replaceChildren();
  if (!links.length) return;
  const root = svg("svg", { class: "deps-svg", role: "group", "aria-label": "service dependency graph" });
  container.append(root);
  // text widths as the browser draws them, so that labels are placed where they really fit
  const probe = svg("text", { class: "edge-text" });
  root.append(probe);
  const widths = new Map();
  const measure = (text) => {
    if (!widths.has(text)) { probe.textContent = text; widths.set(text, probe.getComputedTextLength()); }
    return widths.get(text);
  };
  const layout = layoutGraph(links, measure);
  probe.remove();
  const { box } = layout;
  root.setAttribute("viewBox", `${box.x} ${box.y} ${box.w} ${box.h}`);
  root.setAttribute("width", box.w);
  root.setAttribute("height", box.h);
  // colours in reading order: left to right, top to bottom
  assignColors([...layout.nodes].sort((a, b) => a.x - b.x || a.y - b.y).map((n) => n.name));

  const marker = (id) => svg("marker", { id, viewBox: "0 0 10 10", refX: "10", refY: "5", markerUnits: "userSpaceOnUse",
    markerWidth: "10", markerHeight: "10", orient: "auto-start-reverse" }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: id }));
  root.append(svg("defs", {}, marker("arrow"), marker("arrow-error")));

  const maxCalls = largest(links.map((l) => l.callCount));
  const edgeGroups = [];
  const nodeGroups = [];
  const select = (item) => {
    const chosen = item.link ? [item.link] : links.filter((l) => l.parent === item.name || l.child === item.name);
    const names = new Set(chosen.flatMap((l) => [l.parent, l.child]));
    for (const g of edgeGroups) {
      for (const part of [g.element, g.tag]) {
        part.classList.toggle("dim", !chosen.includes(g.link));
        part.classList.toggle("selected", g.link === item.link);
      }
    }
    for (const g of nodeGroups) {
      g.element.classList.toggle("dim", !names.has(g.name));
      g.element.classList.toggle("selected", g.name === item.name);
    }
    showDetails(item, links, window, select);
  };
  const activate = (element, item) => {
    element.addEventListener("click", () => select(item));
    element.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); select(item); }
    });
  };

  for (const { link, d, label } of layout.edges) {
    const error = link.errorCount > 0;
    const summary = `${link.parent} → ${link.child}: ${plural(link.callCount, "call")}, ${plural(link.errorCount, "error")}`;
    const group = svg("g", { class: `edge-group${error ? " has-error" : ""}`, "data-parent": link.parent, "data-child": link.child });
    group.append(
      svg("path", { d, class: "edge", "stroke-width": String(1.5 + (3 * link.callCount) / maxCalls), "marker-end": error ? "url(#arrow-error)" : "url(#arrow)" }),
      svg("path", { d, class: "edge-hit" }, svg("title", {}, summary)));
    const tag = svg("g", { class: "edge-label", tabindex: "0", role: "button", "aria-label": summary });
    tag.append(
      svg("rect", { x: label.x, y: label.y, width: label.w, height: label.h, rx: 4 }),
      svg("text", { x: label.x + label.w / 2, y: label.y + label.h / 2, class: "edge-text", "text-anchor": "middle", "dominant-baseline": "central" }, edgeLabel(link)));
    root.append(group);
    edgeGroups.push({ link, element: group, tag });
    activate(group.querySelector(".edge-hit"), { link });
    activate(tag, { link });
  }
  // labels above every edge line and node, so that no line crosses a label's text
  const labelLayer = svg("g", { class: "labels" });
  for (const { tag } of edgeGroups) labelLayer.append(tag);

  for (const node of layout.nodes) {
    const inbound = links.filter((l) => l.child === node.name && l.parent !== node.name);
    const received = inbound.reduce((sum, l) => sum + l.callCount, 0);
    const group = svg("g", { class: "node", "data-service": node.name, tabindex: "0", role: "button",
      "aria-label": `${node.name}: ${plural(received, "call")} received` });
    group.append(
      svg("rect", { x: node.x, y: node.y, width: node.w, height: node.h, rx: 6, class: "node-box", stroke: serviceColor(node.name) }),
      svg("rect", { x: node.x, y: node.y, width: 6, height: node.h, rx: 2, fill: serviceColor(node.name) }),
      svg("text", { x: node.x + node.w / 2 + 3, y: node.y + node.h / 2, class: "node-text", "text-anchor": "middle", "dominant-baseline": "central" }, node.label),
      svg("title", {}, node.name));
    root.append(group);
    nodeGroups.push({ name: node.name, element: group });
    activate(group, { name: node.name });
  }
  root.append(labelLayer);
}

function showDetails(item, links, window, select) {
  const details = byId("deps-details");
  details.hidden = false;
  const at = { endTs: window.endTs, lookback: window.lookback };
  const table = (pairs) => el("table", {}, el("tbody", {}, pairs.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "value" }, v)))));
  const linkList = (list, other) => list.length
    ? el("ul", { class: "peer-list" }, list.map((l) => el("li", {},
      el("button", { type: "button", class: "peer", onclick: () => select({ link: l }) },
        el("span", { class: "swatch", style: `background: ${serviceColor(other(l))}` }), other(l)),
      ` ${plural(l.callCount, "call")}`, l.errorCount ? el("span", { class: "bad" }, `, ${plural(l.errorCount, "error")}`) : null)))
    : el("p", { class: "empty" }, "none");
  const close = el("button", { class: "close", type: "button", "aria-label": "close", onclick: () => { details.hidden = true; } }, "×");

  if (item.link) {
    const { parent, child, callCount, errorCount } = item.link;
    const traces = el("ul", { class: "trace-links" },
      el("li", {}, el("a", { href: searchHref({ serviceName: child, ...at }) }, `Traces of ${child}`)));
    details.replaceChildren(close,
      el("h2", {}, el("span", { class: "swatch", style: `background: ${serviceColor(parent)}` }), parent, " → ",
        el("span", { class: "swatch", style: `background: ${serviceColor(child)}` }), child),
      table([["Calls", callCount], ["Errors", errorCount], ["Error rate", rate(errorCount, callCount)]]),
      el("h3", {}, "Traces"), traces);
    // the precise search needs the caller's spans to name the callee as their remote service
    api("/remoteServices", { serviceName: parent }).then((remotes) => {
      if (!remotes.includes(child.toLowerCase())) return;
      traces.prepend(
        el("li", {}, el("a", { href: searchHref({ serviceName: parent, remoteServiceName: child, ...at }) }, `Traces where ${parent} calls ${child}`)),
        errorCount ? el("li", {}, el("a", { href: searchHref({ serviceName: parent, remoteServiceName: child, annotationQuery: "error", ...at }) }, "…with errors")) : "");
    }).catch(() => { /* the link to the callee's traces remains */ });
    return;
  }
  const name = item.name;
  const callers = links.filter((l) => l.child === name && l.parent !== name);
  const callees = links.filter((l) => l.parent === name && l.child !== name);
  const self = links.find((l) => l.parent === name && l.child === name);
  const sum = (list, key) => list.reduce((total, l) => total + l[key], 0);
  const facts = [["Calls received", sum(callers, "callCount")], ["Errors received", sum(callers, "errorCount")],
    ["Calls made", sum(callees, "callCount")], ["Errors in calls made", sum(callees, "errorCount")]];
  if (self) facts.push(["Calls to itself", self.callCount]);
  details.replaceChildren(close,
    el("h2", {}, el("span", { class: "swatch", style: `background: ${serviceColor(name)}` }), name),
    table(facts),
    el("h3", {}, `Called by (${callers.length})`), linkList(callers, (l) => l.parent),
    el("h3", {}, `Calls (${callees.length})`), linkList(callees, (l) => l.child),
    el("h3", {}, "Traces"),
    el("ul", { class: "trace-links" },
      el("li", {}, el("a", { href: searchHref({ serviceName: name, ...at }) }, `Traces of ${name}`)),
      el("li", {}, el("a", { href: searchHref({ serviceName: name, annotationQuery: "error", ...at }) }, "…with errors")),
      el("li", {}, el("a", { href: `#/operations?${new URLSearchParams({ serviceName: name, ...windowParams(window) })}` }, `Operations of ${name}`))));
}
