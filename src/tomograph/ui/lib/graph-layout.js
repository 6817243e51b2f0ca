// Layout of the service dependency graph. Pure (no DOM): Node's test runner imports it.
//
//   layoutGraph(links, measure) -> { nodes, edges, box }
//
// Services stand in columns by call depth (callers left of the services they call), ordered in
// each column to cut crossings. Every edge has its own attachment point on each node, so edges
// that converge on a service arrive apart, and every edge label is put where it overlaps no other
// label and no node: labels placed at the middle of converging edges printed over each other
// ("80 (9 err)" and "1" read "80 (91err)"). `measure(text)` gives a text's width in pixels.

import { largest, smallest } from "./extremes.js";

const MARGIN = 24;
const NODE_MIN_W = 110;
const NODE_MAX_W = 220;
const NODE_PAD = 14;
const NODE_MIN_H = 36;
const PORT_GAP = 14;
const GAP_Y = 30;
const MIN_GAP_X = 120;
const LABEL_H = 18;
const LABEL_PAD = 5;
// where along an edge (0: its start, 1: its end) and how far above or below it a label may go,
// in order of preference: the middle first, then further out
const ALONG = [0.5, 0.4, 0.6, 0.3, 0.7, 0.22, 0.78, 0.15, 0.85];
const ACROSS = [0, -1, 1, -2, 2, -3, 3];
const MAX_PLACES = 27;

/** The text on an edge: its calls, and its errors when it has some ("80 (9 err)"). */
export function edgeLabel(link) {
  return link.errorCount ? `${link.callCount} (${link.errorCount} err)` : String(link.callCount);
}

/** A name cut with "…" to fit `width` pixels. */
export function fitText(text, width, measure) {
  if (measure(text) <= width) return text;
  let cut = text;
  while (cut.length > 1 && measure(`${cut}…`) > width) cut = cut.slice(0, -1);
  return `${cut}…`;
}

/** Column of each service: the longest call path leading to it from a service nobody calls.
 * Calls that close a cycle (found by a depth-first walk from the callers) are left out, so
 * that two services calling each other stand in neighbouring columns. */
function layers(names, links) {
  const callees = new Map(names.map((name) => [name, []]));
  const called = new Set();
  for (const { parent, child } of links) {
    if (parent === child) continue;
    callees.get(parent).push(child);
    called.add(child);
  }
  const state = new Map(); // 1: on the walk's path, 2: done
  const order = []; // services after all they call: reversed, a topological order
  const forward = new Set();
  const visit = (start) => {
    // iterative, so that a long chain of calls cannot overflow the stack
    const stack = [[start, 0]];
    state.set(start, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [name, next] = top;
      if (next < callees.get(name).length) {
        top[1] += 1;
        const child = callees.get(name)[next];
        if (state.get(child) === 1) continue; // closes a cycle
        forward.add(`${name}\u0000${child}`);
        if (!state.has(child)) { state.set(child, 1); stack.push([child, 0]); }
      } else {
        state.set(name, 2);
        order.push(name);
        stack.pop();
      }
    }
  };
  for (const name of names) if (!called.has(name) && !state.has(name)) visit(name);
  for (const name of names) if (!state.has(name)) visit(name);
  const layer = new Map(names.map((name) => [name, 0]));
  for (const name of order.reverse()) {
    for (const child of callees.get(name)) {
      if (forward.has(`${name}\u0000${child}`)) layer.set(child, Math.max(layer.get(child), layer.get(name) + 1));
    }
  }
  return layer;
}

/** Orders each column by the mean position of its neighbours in the column before (then after). */
function orderColumns(columns, layer, links) {
  const index = new Map();
  const renumber = () => columns.forEach((column) => column.forEach((name, i) => index.set(name, i)));
  renumber();
  const neighbours = (name, side) => links
    .filter((l) => l.parent !== l.child && (side < 0 ? l.child === name : l.parent === name))
    .map((l) => (side < 0 ? l.parent : l.child))
    .filter((other) => layer.get(other) === layer.get(name) + side);
  const sweep = (from, to, step, side) => {
    for (let c = from; c !== to; c += step) {
      const key = new Map(columns[c].map((name) => {
        const near = neighbours(name, side);
        return [name, near.length ? near.reduce((sum, other) => sum + index.get(other), 0) / near.length : index.get(name)];
      }));
      columns[c].sort((a, b) => key.get(a) - key.get(b));
      renumber();
    }
  };
  for (let round = 0; round < 4; round++) {
    sweep(1, columns.length, 1, -1);
    sweep(columns.length - 2, -1, -1, 1);
  }
}

/** The point at `t` (0 to 1) of the cubic curve through the 4 points `p`. */
export function bezier(p, t) {
  const u = 1 - t;
  return {
    x: u * u * u * p[0].x + 3 * u * u * t * p[1].x + 3 * u * t * t * p[2].x + t * t * t * p[3].x,
    y: u * u * u * p[0].y + 3 * u * u * t * p[1].y + 3 * u * t * t * p[2].y + t * t * t * p[3].y,
  };
}

/** Area shared by two boxes { x, y, w, h }. */
export function overlap(a, b) {
  const w = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x);
  const h = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y);
  return w > 0 && h > 0 ? w * h : 0;
}

/**
 * Positions for the services and links of `links` ([{ parent, child, callCount, errorCount }]).
 * Returns { nodes: [{ name, label, x, y, w, h }], edges: [{ link, d, segments, label: { text, x, y, w, h } }],
 * box: { x, y, w, h } } where `d` is an SVG path (cubic `segments` of 4 points each) and `box`
 * holds everything (a viewBox).
 */
export function layoutGraph(links, measure = (text) => 7 * text.length) {
  const names = [];
  const seen = new Set();
  for (const { parent, child } of links) {
    for (const name of [parent, child]) if (!seen.has(name)) { seen.add(name); names.push(name); }
  }
  if (!names.length) return { nodes: [], edges: [], box: { x: 0, y: 0, w: 0, h: 0 } };
  const layer = layers(names, links);
  const columns = [];
  for (const name of [...names].sort()) (columns[layer.get(name)] ||= []).push(name);
  for (let c = 0; c < columns.length; c++) columns[c] ||= [];
  orderColumns(columns, layer, links);

  const outgoing = new Map(names.map((n) => [n, []]));
  const incoming = new Map(names.map((n) => [n, []]));
  for (const link of links) {
    if (link.parent === link.child) continue;
    outgoing.get(link.parent).push(link);
    incoming.get(link.child).push(link);
  }
  const nodes = new Map();
  for (const name of names) {
    const ports = Math.max(outgoing.get(name).length, incoming.get(name).length);
    const label = fitText(name, NODE_MAX_W - 2 * NODE_PAD, measure);
    nodes.set(name, {
      name, label, x: 0, y: 0,
      w: Math.max(NODE_MIN_W, Math.min(NODE_MAX_W, measure(label) + 2 * NODE_PAD)),
      h: Math.max(NODE_MIN_H, PORT_GAP * (ports + 1)),
    });
  }
  const labelWidth = (link) => measure(edgeLabel(link)) + 2 * LABEL_PAD;
  const gapX = largest(links.map((link) => labelWidth(link) + 60), MIN_GAP_X);
  const heights = columns.map((column) => column.reduce((sum, n) => sum + nodes.get(n).h, 0) + GAP_Y * (column.length - 1));
  const tallest = largest(heights);
  let x = MARGIN;
  const spans = []; // each column's left and right edge
  columns.forEach((column, c) => {
    const width = largest(column.map((n) => nodes.get(n).w), 0);
    spans.push({ left: x, right: x + width });
    let y = MARGIN + (tallest - heights[c]) / 2;
    for (const name of column) {
      const node = nodes.get(name);
      node.x = x + (width - node.w) / 2;
      node.y = y;
      y += node.h + GAP_Y;
    }
    x += width + gapX;
  });

  // attachment points: outgoing on the right, incoming on the left, in the order of the node at
  // the other end (top to bottom), so that edges leaving or reaching one node do not cross there
  const middle = (name) => nodes.get(name).y + nodes.get(name).h / 2;
  const start = new Map();
  const end = new Map();
  for (const name of names) {
    const node = nodes.get(name);
    const out = outgoing.get(name).sort((a, b) => middle(a.child) - middle(b.child));
    out.forEach((link, i) => start.set(link, { x: node.x + node.w, y: node.y + (node.h * (i + 1)) / (out.length + 1) }));
    const into = incoming.get(name).sort((a, b) => middle(a.parent) - middle(b.parent));
    into.forEach((link, i) => end.set(link, { x: node.x, y: node.y + (node.h * (i + 1)) / (into.length + 1) }));
  }

  // an edge past one column or more runs straight through a gap between that column's services
  // (the gap nearest its way), never across a service
  const lanes = new Map();
  const lane = (c, wantedY) => {
    const column = columns[c].map((name) => nodes.get(name));
    const gaps = [column[0].y - GAP_Y / 2];
    for (let i = 1; i < column.length; i++) gaps.push((column[i - 1].y + column[i - 1].h + column[i].y) / 2);
    gaps.push(column[column.length - 1].y + column[column.length - 1].h + GAP_Y / 2);
    const gap = gaps.reduce((best, y) => (Math.abs(y - wantedY) < Math.abs(best - wantedY) ? y : best));
    const key = `${c}/${gap}`;
    const used = lanes.get(key) || 0;
    lanes.set(key, used + 1);
    return gap + (used % 2 ? 1 : -1) * Math.ceil(used / 2) * 6; // several edges side by side
  };
  const curve = (p, q) => {
    const bend = Math.max(30, (q.x - p.x) / 2);
    return [p, { x: p.x + bend, y: p.y }, { x: q.x - bend, y: q.y }, q];
  };
  const edges = links.map((link) => {
    const a = nodes.get(link.parent);
    const b = nodes.get(link.child);
    const segments = [];
    if (link.parent === link.child) {
      // a loop over the node's right end
      segments.push([{ x: a.x + a.w - 30, y: a.y }, { x: a.x + a.w - 30, y: a.y - 44 },
        { x: a.x + a.w + 44, y: a.y - 20 }, { x: a.x + a.w, y: a.y + 8 }]);
    } else if (layer.get(link.child) > layer.get(link.parent)) {
      const p = start.get(link);
      const q = end.get(link);
      let from = p;
      const first = layer.get(link.parent);
      const last = layer.get(link.child);
      for (let c = first + 1; c < last; c++) {
        const y = lane(c, p.y + ((q.y - p.y) * (c - first)) / (last - first));
        const enter = { x: spans[c].left - 4, y };
        const leave = { x: spans[c].right + 4, y };
        segments.push(curve(from, enter), [enter, enter, leave, leave]);
        from = leave;
      }
      segments.push(curve(from, q));
    } else {
      // a call back to an earlier column (a cycle): under both nodes, from bottom to bottom
      const p = { x: a.x + a.w * 0.4, y: a.y + a.h };
      const q = { x: b.x + b.w * 0.6, y: b.y + b.h };
      const depth = 50 + Math.abs(p.x - q.x) / 6;
      segments.push([p, { x: p.x, y: Math.max(p.y, q.y) + depth }, { x: q.x, y: Math.max(p.y, q.y) + depth }, q]);
    }
    const d = `M ${segments[0][0].x} ${segments[0][0].y} ${segments.map(([, c1, c2, to]) => `C ${c1.x} ${c1.y}, ${c2.x} ${c2.y}, ${to.x} ${to.y}`).join(" ")}`;
    // places for the label along the whole edge, the middle first
    const places = [];
    segments.forEach((segment, i) => {
      for (const along of ALONG) places.push({ at: bezier(segment, along), from: Math.abs((i + along) / segments.length - 0.5) });
    });
    places.sort((x, y) => x.from - y.from);
    // the places nearest the middle are enough: a long edge has hundreds, and a label that finds
    // no free place in them takes the least covered one
    return { link, segments, places: places.slice(0, MAX_PLACES).map((place) => place.at), d };
  });

  // labels: the busiest links choose first; each takes the first free place along its edge
  const taken = [];
  // boxes by the 64-pixel cells they touch: a candidate place is compared with its neighbours
  // only (comparing with every box took seconds for a few hundred links)
  const cells = new Map();
  const cellsOf = (box) => {
    const keys = [];
    for (let cx = Math.floor(box.x / 64); cx <= Math.floor((box.x + box.w) / 64); cx++) {
      for (let cy = Math.floor(box.y / 64); cy <= Math.floor((box.y + box.h) / 64); cy++) keys.push(cx * 65536 + cy);
    }
    return keys;
  };
  const take = (box) => {
    taken.push(box);
    for (const key of cellsOf(box)) (cells.get(key) || cells.set(key, []).get(key)).push(box);
  };
  const cost = (box) => {
    const near = new Set();
    for (const key of cellsOf(box)) for (const other of cells.get(key) || []) near.add(other);
    let sum = 0;
    for (const other of near) sum += overlap(box, other);
    return sum;
  };
  for (const n of nodes.values()) take({ x: n.x - 3, y: n.y - 3, w: n.w + 6, h: n.h + 6 });
  const order = [...edges].sort((e, f) => f.link.callCount - e.link.callCount);
  for (const edge of order) {
    const text = edgeLabel(edge.link);
    const w = labelWidth(edge.link);
    let best = null;
    for (const at of edge.places) {
      for (const across of ACROSS) {
        const box = { x: at.x - w / 2, y: at.y - LABEL_H / 2 + across * (LABEL_H + 2), w, h: LABEL_H };
        const covered = cost(box);
        if (!best || covered < best.cost) best = { box, cost: covered };
        if (covered === 0) break;
      }
      if (best.cost === 0) break;
    }
    edge.label = { text, ...best.box };
    take({ x: best.box.x - 2, y: best.box.y - 2, w: best.box.w + 4, h: best.box.h + 4 });
  }

  // the box that holds every node, edge and label
  const boxes = [...taken, ...edges.flatMap((e) => e.segments.flat().map((p) => ({ x: p.x, y: p.y, w: 0, h: 0 })))];
  const left = smallest(boxes.map((b) => b.x)) - MARGIN;
  const top = smallest(boxes.map((b) => b.y)) - MARGIN;
  const right = largest(boxes.map((b) => b.x + b.w)) + MARGIN;
  const bottom = largest(boxes.map((b) => b.y + b.h)) + MARGIN;
  return {
    nodes: [...nodes.values()],
    edges: edges.map(({ link, d, segments, label }) => ({ link, d, segments, label })),
    box: { x: left, y: top, w: right - left, h: bottom - top },
  };
}
