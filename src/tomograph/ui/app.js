// tomograph's web UI: plain JavaScript modules over the collector's Zipkin v2 API, no build step.
// This module only routes "#/..." addresses to the view that shows them; each view is a module in
// views/ exporting show(root, ...), shared helpers are in lib/, DOM-free analyses in analysis/.
// Every value from a span is put into the page as text, never as HTML. Each route change ends the
// page on show first (lib/page-life.js): its requests are aborted and its awaits never resume.

import { takeTokenFromLink } from "./lib/api.js";
import { nextPage } from "./lib/page-life.js";
import * as compare from "./views/compare.js";
import * as dependencies from "./views/dependencies.js";
import * as operations from "./views/operations.js";
import * as search from "./views/search.js";
import * as trace from "./views/trace.js";
import * as upload from "./views/upload.js";

const view = document.getElementById("view");

// "%E0" or a lone "%" is no escape: keep the text as typed, and the trace page says it is no trace id.
function decodedOrRaw(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function route() {
  nextPage();
  const hash = location.hash.replace(/^#/, "") || "/";
  const path = hash.split("?")[0];
  const pages = { "/dependencies": "dependencies", "/operations": "operations", "/compare": "compare", "/upload": "upload" };
  const section = path.startsWith("/trace/") ? "trace" : (Object.hasOwn(pages, path) ? pages[path] : "search");
  for (const link of document.querySelectorAll("[data-nav]")) link.classList.toggle("active", link.dataset.nav === section);
  if (section === "trace") return trace.show(view, decodedOrRaw(path.slice("/trace/".length)));
  if (section === "dependencies") return dependencies.show(view);
  if (section === "operations") return operations.show(view);
  if (section === "compare") return compare.show(view);
  if (section === "upload") return upload.show(view);
  return search.show(view);
}

document.getElementById("goto").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = document.getElementById("goto-id").value.trim().toLowerCase();
  if (id) location.hash = `#/trace/${encodeURIComponent(id)}`;
});
window.addEventListener("hashchange", () => { takeTokenFromLink(); route(); });
takeTokenFromLink();
route();
