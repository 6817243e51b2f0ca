// The dependency graph: which service calls which, how often, with how many errors.

import { api } from "../lib/api.js";
import { serviceColor } from "../lib/colors.js";
import { setStatus, svg, template } from "../lib/dom.js";

/** Shows the dependency graph of the chosen time range in `root`. */
export async function show(root) {
  root.replaceChildren(template("tpl-deps"));
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
