// What the trace view draws from the analyses: the critical path as dark stretches on the bars
// (and the class mark-critical on its rows), and an "adjusted" badge on spans whose times were
// shifted for clock skew, saying by how much and when the span started as sent.

import { criticalPath } from "../analysis/critical-path.js";
import { el } from "../lib/dom.js";
import { formatDuration, formatTime, plural } from "../lib/format.js";

/** The waterfall decorations of a trace: { badges, overlays, marks, facts }. `summary` is the trace as
 * summarize() made it (of the corrected spans), `adjusted` the Map correctSpansForClockSkew gave. */
export function traceAnalyses(summary, adjusted) {
  const roots = summary.order.filter((node) => node.depth === 0);
  const sectionsOf = new Map();
  for (const section of criticalPath(roots).sections) {
    if (!sectionsOf.has(section.span)) sectionsOf.set(section.span, []);
    sectionsOf.get(section.span).push(section);
  }
  const adjustedBadge = (node) => {
    const skew = adjusted.get(node.span);
    if (!skew) return null;
    const moved = `${skew.shift > 0 ? "later" : "earlier"} by ${formatDuration(Math.abs(skew.shift))}`;
    const sent = Number.isFinite(skew.original.timestamp) ? formatTime(skew.original.timestamp) : "?";
    return el("span", { class: "badge adjusted", title: `Shown ${moved} to correct clock skew between hosts; as sent it started at ${sent}` },
      "adjusted");
  };
  const criticalStretches = (node, place) => (sectionsOf.get(node.span) || []).map((section) =>
    el("div", { class: "critical", style: place(section.start, section.end),
      title: `critical path: ${formatDuration(section.end - section.start)}` }));
  const facts = sectionsOf.size
    ? [["Critical path", `${plural(sectionsOf.size, "span")} (the dark line on the bars)`]]
    : [];
  if (adjusted.size) facts.push(["Clock skew", `${plural(adjusted.size, "span")} adjusted`]);
  return {
    facts,
    badges: [adjustedBadge],
    overlays: [criticalStretches],
    marks: { critical: [...sectionsOf.keys()], adjusted: [...adjusted.keys()] },
  };
}
