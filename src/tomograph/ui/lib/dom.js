// Building page nodes. Every value is added as a text node or an attribute, never parsed as HTML:
// span names, tags and notes are whatever a client sent.

/** An HTML element: el("a", { href, class, onclick }, "text", childNode, [more, children]). */
export function el(tag, attrs, ...children) {
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

/** An SVG element: svg("rect", { x: 1, y: 2 }, childNode, "text"). */
export function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

/** A fresh copy of the <template id="..."> in index.html. */
export function template(id) { return document.getElementById(id).content.cloneNode(true); }

/** Shows a status line; an error is shown in the error colour. */
export function setStatus(node, text, isError) {
  node.textContent = text;
  node.classList.toggle("error", Boolean(isError));
}

/** Replaces a <select>'s options with `values` (after a `blank` one if given), keeping the choice. */
export function fillSelect(select, values, blank) {
  const current = select.value;
  select.replaceChildren();
  if (blank !== undefined) select.append(el("option", { value: "" }, blank));
  for (const value of values) select.append(el("option", { value }, value));
  if ([...select.options].some((o) => o.value === current)) select.value = current;
}
