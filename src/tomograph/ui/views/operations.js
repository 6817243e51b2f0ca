// The operations page: per span name of a service, call count, error rate and latency percentiles.

import { api } from "../lib/api.js";
import { el, fillSelect, setStatus, template } from "../lib/dom.js";
import { formatDuration } from "../lib/format.js";
import { routeParams } from "../lib/route.js";

/** Shows the operations of the route's (or the first) service in `root`. */
export async function show(root) {
  root.replaceChildren(template("tpl-ops"));
  const select = document.getElementById("o-service");
  const status = document.getElementById("ops-status");
  const table = document.getElementById("ops-table");
  const wanted = routeParams().serviceName;
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
