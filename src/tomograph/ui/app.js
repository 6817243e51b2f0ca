// tomograph's web UI: plain JavaScript modules over the collector's Zipkin v2 API, no build step.
// This module only routes "#/..." addresses to the view that shows them; each view is a module in
// views/ exporting show(root, ...), shared helpers are in lib/, DOM-free analyses in analysis/.
// Every value from a span is put into the page as text, never as HTML.

import { takeTokenFromLink } from "./lib/api.js";
import * as dependencies from "./views/dependencies.js";
import * as operations from "./views/operations.js";
import * as search from "./views/search.js";
import * as trace from "./views/trace.js";

const view = document.getElementById("view");

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const path = hash.split("?")[0];
  const section = path.startsWith("/trace/") ? "trace" : path === "/dependencies" ? "dependencies" : path === "/operations" ? "operations" : "search";
  for (const link of document.querySelectorAll("[data-nav]")) link.classList.toggle("active", link.dataset.nav === section);
  if (section === "trace") return trace.show(view, decodeURIComponent(path.slice("/trace/".length)));
  if (section === "dependencies") return dependencies.show(view);
  if (section === "operations") return operations.show(view);
  return search.show(view);
}

document.getElementById("goto").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = document.getElementById("goto-id").value.trim().toLowerCase();
  if (id) location.hash = `#/trace/${id}`;
});
window.addEventListener("hashchange", () => { takeTokenFromLink(); route(); });
takeTokenFromLink();
route();
