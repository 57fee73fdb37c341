// Hand-written SVG charts for the dashboard (no library, no CDN). Every drawn series carries
// data-series="<id>" so tests (and people with devtools) can count what is plotted.
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

/** "Nice" tick values covering [lo, hi]. */
export function ticks(lo, hi, n = 5) {
  if (!(hi > lo)) {
    const d = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    lo -= d;
    hi += d;
  }
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out = [];
  for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(10));
  if (out[out.length - 1] < hi) out.push(+(out[out.length - 1] + step).toFixed(10));
  return out;
}

const fmt = (v) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : String(+v.toFixed(3)));

/**
 * Line chart. series: [{id, label, color, dashed, points: [{x, y, tip?}]}].
 * opts: {title, xLabel, yLabel, width, height, integerX, hline: {y, label}}
 */
export function lineChart(series, opts = {}) {
  const W = opts.width ?? 560, H = opts.height ?? 300;
  const m = { l: 56, r: 14, t: 28, b: 42 };
  const pts = series.flatMap((s) => s.points);
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': opts.title ?? 'chart', 'data-chart': opts.id ?? '' });
  svg.append(el('text', { x: m.l, y: 16, class: 'chart-title', text: opts.title ?? '' }));
  if (pts.length === 0) {
    svg.append(el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty', text: opts.empty ?? 'no data yet' }));
    return svg;
  }
  const ys = pts.map((p) => p.y).concat(opts.hline ? [opts.hline.y] : []);
  const xt = opts.integerX ? intTicks(Math.min(...pts.map((p) => p.x)), Math.max(...pts.map((p) => p.x))) : ticks(Math.min(...pts.map((p) => p.x)), Math.max(...pts.map((p) => p.x)));
  const yt = ticks(Math.min(...ys), Math.max(...ys));
  const x0 = xt[0], x1 = xt[xt.length - 1], y0 = yt[0], y1 = yt[yt.length - 1];
  const X = (x) => m.l + ((x - x0) / (x1 - x0 || 1)) * (W - m.l - m.r);
  const Y = (y) => H - m.b - ((y - y0) / (y1 - y0 || 1)) * (H - m.t - m.b);
  const axes = el('g', { class: 'axes' });
  for (const v of yt) {
    axes.append(el('line', { x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v), class: 'grid' }));
    axes.append(el('text', { x: m.l - 6, y: Y(v) + 4, 'text-anchor': 'end', text: fmt(v) }));
  }
  for (const v of xt) {
    axes.append(el('line', { x1: X(v), x2: X(v), y1: H - m.b, y2: H - m.b + 4, class: 'tick' }));
    axes.append(el('text', { x: X(v), y: H - m.b + 16, 'text-anchor': 'middle', text: fmt(v) }));
  }
  axes.append(el('line', { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: 'axis' }));
  axes.append(el('line', { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, class: 'axis' }));
  if (opts.xLabel) axes.append(el('text', { x: (m.l + W - m.r) / 2, y: H - 6, 'text-anchor': 'middle', class: 'axis-label', text: opts.xLabel }));
  if (opts.yLabel) axes.append(el('text', { x: 12, y: (m.t + H - m.b) / 2, 'text-anchor': 'middle', class: 'axis-label', transform: `rotate(-90 12 ${(m.t + H - m.b) / 2})`, text: opts.yLabel }));
  svg.append(axes);
  if (opts.hline) {
    svg.append(el('line', { x1: m.l, x2: W - m.r, y1: Y(opts.hline.y), y2: Y(opts.hline.y), class: 'hline', 'data-hline': opts.hline.label ?? '' }));
    svg.append(el('text', { x: W - m.r - 4, y: Y(opts.hline.y) - 4, 'text-anchor': 'end', class: 'hline-label', text: opts.hline.label ?? '' }));
  }
  for (const s of series) {
    if (s.points.length === 0) continue;
    const sorted = [...s.points].sort((a, b) => a.x - b.x);
    const g = el('g', { class: 'series', 'data-series': s.id });
    g.append(el('path', {
      d: sorted.map((p, i) => `${i ? 'L' : 'M'}${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`).join(' '),
      fill: 'none', stroke: s.color, 'stroke-width': 2, 'stroke-dasharray': s.dashed ? '6 4' : null, 'data-series': s.id, class: 'series-line',
    }));
    for (const p of sorted) g.append(el('circle', { cx: X(p.x), cy: Y(p.y), r: 3, fill: s.color }, el('title', { text: p.tip ?? `${s.label}: ${fmt(p.y)} @ ${p.x}` })));
    svg.append(g);
  }
  return svg;
}

function intTicks(lo, hi) {
  if (hi - lo <= 10) {
    const out = [];
    for (let v = Math.floor(lo); v <= Math.ceil(hi); v++) out.push(v);
    return out.length > 1 ? out : [out[0] - 1, out[0], out[0] + 1];
  }
  return ticks(lo, hi).map(Math.round);
}

/** A legend as HTML: [{color, dashed, label, id}] */
export function legend(items) {
  const ul = el('ul', { class: 'legend' });
  for (const it of items) {
    const sw = el('svg', { viewBox: '0 0 28 10', width: 28, height: 10 }, el('line', { x1: 1, x2: 27, y1: 5, y2: 5, stroke: it.color, 'stroke-width': 2.5, 'stroke-dasharray': it.dashed ? '6 4' : null }));
    ul.append(el('li', { 'data-legend': it.id ?? it.label }, sw, ' ', it.label));
  }
  return ul;
}

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
