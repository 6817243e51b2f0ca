// Service colours. Each service takes the next colour of a palette the first time the page shows
// it, so the services on screen are told apart: hashing names into a few slots gave several
// services one colour. A service keeps its colour while the page is open, from view to view.

// Ten clearly different hues, each dark enough for white text on it (contrast at least 4.5:1),
// and no red: red marks errors.
const PALETTE = ["#2563eb", "#c2410c", "#15803d", "#7c3aed", "#0e7490", "#a21caf", "#854d0e",
  "#475569", "#4d7c0f", "#1e40af"];

const assigned = new Map();

/** The colour of the index-th service shown: the palette, then hues a golden angle apart. */
export function colorAt(index) {
  if (index < PALETTE.length) return PALETTE[index];
  const k = index - PALETTE.length;
  let hue = (k * 137.508 + 200) % 360;
  if (hue < 25 || hue > 335) hue = (hue + 50) % 360; // keep clear of the error red
  // lightness 28% or darker: white text keeps a 5:1 contrast at any hue
  const lightness = Math.floor(k / 8) % 2 ? 21 : 28;
  return `hsl(${hue.toFixed(1)}, 60%, ${lightness}%)`;
}

/** The colour that marks a service's spans, bars and graph nodes: serviceColor("shop"). */
export function serviceColor(name) {
  const key = String(name ?? "");
  let color = assigned.get(key);
  if (color === undefined) {
    color = colorAt(assigned.size);
    assigned.set(key, color);
  }
  return color;
}

/** Gives colours to `names` in their order (a view calls it with the order it shows them in). */
export function assignColors(names) {
  for (const name of names) serviceColor(name);
}
