// The upload page: open a Zipkin v2 JSON or OTLP/JSON trace file (one a colleague shared, say)
// and see it in the ordinary trace view. The file is read in the browser and never sent to the
// collector: nothing is stored, and leaving the page forgets it.

import { el, setStatus } from "../lib/dom.js";
import { formatDuration, plural } from "../lib/format.js";
import { whileShown } from "../lib/page-life.js";
import { serviceOf, summarize } from "../lib/spans.js";
import { parseTraceFile } from "../analysis/upload.js";
import { showSpans } from "./trace.js";

/** Largest file read: parsing holds the text and its spans in the tab at once. */
const MAX_FILE_BYTES = 256 * 1024 * 1024;

let jsonBlobUrl = null; // the JSON link of the trace on show

/** Shows the file picker in `root`; a file dropped or chosen is shown as a trace. */
export function show(root) {
  const input = el("input", { type: "file", id: "u-file", accept: ".json,application/json" });
  const status = el("p", { class: "status", id: "u-status", role: "status" });
  const choices = el("ol", { class: "trace-list", id: "u-traces" });
  const drop = el("label", { class: "panel drop-zone", for: "u-file" },
    el("strong", {}, "Open a trace file"),
    el("span", {}, " — Zipkin v2 JSON (a list of spans, or of traces) or OTLP/JSON. Drop it here or choose it: "),
    input,
    el("p", { class: "sub" }, "The file is read by this page only: it is not sent to the collector, and nothing is stored."));
  root.replaceChildren(drop, status, choices);

  const open = async (file) => {
    if (!file) return;
    choices.replaceChildren();
    if (file.size > MAX_FILE_BYTES) {
      setStatus(status, `${file.name} is ${Math.round(file.size / 1048576)} MB, more than this page reads (${MAX_FILE_BYTES / 1048576} MB)`, true);
      return;
    }
    setStatus(status, `Reading ${file.name}…`);
    let parsed;
    try {
      parsed = parseTraceFile(await whileShown(file.text()));
    } catch (error) {
      setStatus(status, `${file.name}: ${error.message}`, true);
      return;
    }
    const format = parsed.format === "otlp" ? "OTLP/JSON" : "Zipkin v2 JSON";
    if (parsed.traces.length === 1) {
      showTrace(root, parsed.traces[0], file.name);
      return;
    }
    setStatus(status, `${file.name} (${format}) holds ${parsed.traces.length} traces: pick one`);
    choices.replaceChildren(...parsed.traces.map((trace) => {
      const summary = summarize(trace.spans);
      return el("li", {}, el("button", { type: "button", class: "trace-row upload-choice", onclick: () => showTrace(root, trace, file.name) },
        el("span", { class: "name" }, `${serviceOf(summary.root)}: ${summary.root.name || "(unnamed)"}`),
        el("span", { class: "sub" }, `${plural(trace.spans.length, "span")} · ${plural(summary.services.length, "service")}`),
        el("span", { class: "duration" }, formatDuration(summary.duration)),
        el("span", { class: "when" }, trace.traceId)));
    }));
  };
  input.addEventListener("change", () => open(input.files[0]));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("dragging"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    open(event.dataTransfer.files[0]);
  });
}

function showTrace(root, trace, fileName) {
  if (jsonBlobUrl) URL.revokeObjectURL(jsonBlobUrl);
  jsonBlobUrl = URL.createObjectURL(new Blob([JSON.stringify(trace.spans, null, 2)], { type: "application/json" }));
  const waterfall = showSpans(root, trace.spans, { traceId: trace.traceId, json: jsonBlobUrl });
  const title = document.getElementById("t-title");
  title.prepend(el("span", { class: "badge", title: "opened from a file, not stored" }, `file ${fileName}`), " ");
  return waterfall;
}
