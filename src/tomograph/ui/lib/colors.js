// Service colours.

const PALETTE = ["#4e79a7", "#59a14f", "#9c755f", "#f28e2b", "#76b7b2", "#b07aa1", "#edc948",
  "#ff9da7", "#8cd17d", "#499894", "#86bcb6", "#d4a6c8", "#a0cbe8", "#f1ce63"];

/** The colour that marks a service's spans, bars and graph nodes. */
export function serviceColor(name) {
  let hash = 0;
  for (const ch of name || "?") hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}
