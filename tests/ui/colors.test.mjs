// Service colours: given in order of appearance, all different, readable under white text.
import test from "node:test";
import assert from "node:assert/strict";
import { assignColors, colorAt, serviceColor } from "../../src/tomograph/ui/lib/colors.js";

function rgb(color) {
  const hex = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(color);
  if (hex) return hex.slice(1).map((part) => parseInt(part, 16) / 255);
  const [, h, s, l] = /^hsl\(([\d.]+), (\d+)%, (\d+)%\)$/.exec(color).map(Number);
  const a = (s / 100) * Math.min(l / 100, 1 - l / 100);
  const f = (n) => { const k = (n + h / 30) % 12; return l / 100 - a * Math.max(-1, Math.min(k - 3, 9 - k, 1)); };
  return [f(0), f(8), f(4)];
}

function contrastWithWhite(color) {
  const [r, g, b] = rgb(color).map((c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4));
  return 1.05 / (0.2126 * r + 0.7152 * g + 0.0722 * b + 0.05);
}

test("services get different colours in the order they first appear", () => {
  // the demo's services, which hashing into 14 slots coloured alike three by three
  const demo = ["demo-client", "shop", "inventory", "payments", "sqlite", "demo-server"];
  assignColors(demo);
  assert.deepEqual(demo.map(serviceColor), demo.map((_, i) => colorAt(i)));
  assert.equal(new Set(demo.map(serviceColor)).size, demo.length);
  assert.equal(serviceColor("shop"), colorAt(1)); // a service keeps its colour
});

test("the first hundred colours are all different and white text stays readable on them", () => {
  const colors = Array.from({ length: 100 }, (_, i) => colorAt(i));
  assert.equal(new Set(colors).size, 100);
  for (const color of colors) assert.ok(contrastWithWhite(color) >= 4.5, `${color}: ${contrastWithWhite(color)}`);
});
