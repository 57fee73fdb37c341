// Kept hand-written: uPlot (line-charts.js) draws line charts, not a heat map or a Gantt-style
// timeline, and these two are short SVG. Cells carry data-cell, rows data-round (tests count them).
const NS = 'http://www.w3.org/2000/svg';

export function el(tag, attrs = {}, ...children) {
  const e = tag === 'svg' || SVG_TAGS.has(tag) ? document.createElementNS(NS, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') e.textContent = String(v);
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}
const SVG_TAGS = new Set(['g', 'path', 'line', 'rect', 'circle', 'text', 'title', 'polyline', 'defs', 'linearGradient', 'stop']);

export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22'];

export const fmt = (v) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : String(+v.toFixed(3)));

/** Heat map: rows x cols of values (null = not evaluated). higherIsBetter picks the colour direction. */
export function heatMap(rows, cols, values, opts = {}) {
  const cell = 58, lw = 110, th = 70;
  const W = lw + cols.length * cell + 10, H = th + rows.length * cell + 10;
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart heatmap', width: W, height: H, role: 'img', 'aria-label': opts.title ?? 'heat map', 'data-chart': opts.id ?? '' });
  const flat = values.flat().filter((v) => v !== null);
  const lo = Math.min(...flat), hi = Math.max(...flat);
  const t = (v) => (hi > lo ? (v - lo) / (hi - lo) : 0.5);
  const colour = (v) => {
    const k = opts.higherIsBetter === false ? 1 - t(v) : t(v); // 1 = good
    const r = Math.round(230 - 170 * k), gch = Math.round(120 + 90 * k), b = Math.round(90 + 40 * k);
    return `rgb(${r},${gch},${b})`;
  };
  cols.forEach((c, j) => svg.append(el('text', { x: lw + j * cell + cell / 2, y: th - 8, 'text-anchor': 'start', transform: `rotate(-35 ${lw + j * cell + cell / 2} ${th - 8})`, class: 'hm-col', text: c })));
  rows.forEach((r, i) => {
    svg.append(el('text', { x: lw - 6, y: th + i * cell + cell / 2 + 4, 'text-anchor': 'end', class: 'hm-row', text: r }));
    cols.forEach((c, j) => {
      const v = values[i][j];
      const g = el('g', { 'data-cell': `${r}:${c}` });
      g.append(el('rect', { x: lw + j * cell, y: th + i * cell, width: cell - 2, height: cell - 2, fill: v === null ? '#eee' : colour(v), rx: 3 },
        el('title', { text: v === null ? `${r} on ${c}: not evaluated` : `data ${r}, model ${c}: ${fmt(v)}` })));
      g.append(el('text', { x: lw + j * cell + cell / 2 - 1, y: th + i * cell + cell / 2 + 4, 'text-anchor': 'middle', class: 'hm-val', text: v === null ? '–' : fmt(v) }));
      svg.append(g);
    });
  });
  return svg;
}

/** Timeline of round attempts: [{label, start, end, state, participants, detail}] (ms). */
export function timeline(items, opts = {}) {
  const W = opts.width ?? 1140, row = 26, lw = 90, top = 24;
  const H = top + items.length * row + 30;
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart timeline', role: 'img', 'aria-label': 'round timeline', 'data-chart': 'timeline' });
  if (items.length === 0) {
    svg.append(el('text', { x: W / 2, y: 20, 'text-anchor': 'middle', class: 'empty', text: 'no rounds yet' }));
    return svg;
  }
  const t0 = Math.min(...items.map((i) => i.start)), t1 = Math.max(...items.map((i) => i.end ?? i.start)) || t0 + 1;
  const X = (t) => lw + ((t - t0) / Math.max(1, t1 - t0)) * (W - lw - 420); // room on the right for the label
  items.forEach((it, k) => {
    const y = top + k * row;
    const g = el('g', { 'data-round': it.label, class: `round ${it.state}` });
    g.append(el('text', { x: lw - 6, y: y + 15, 'text-anchor': 'end', text: it.label }));
    g.append(el('rect', { x: X(it.start), y: y + 3, width: Math.max(3, X(it.end ?? it.start) - X(it.start)), height: row - 8, rx: 3, class: `bar ${it.state}` }, el('title', { text: it.detail })));
    g.append(el('text', { x: Math.max(X(it.end ?? it.start), X(it.start) + 3) + 6, y: y + 15, class: 'tl-label', text: it.detail }));
    svg.append(g);
  });
  svg.append(el('text', { x: lw, y: 14, class: 'axis-label', text: new Date(t0).toISOString().replace('T', ' ').slice(0, 19) + ' UTC' }));
  return svg;
}
