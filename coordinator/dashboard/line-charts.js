// Line charts with uPlot (the coordinator serves it from node_modules; no CDN): hover read-outs,
// drag to zoom, click a legend entry to hide a series. A point may carry its 95% interval
// (lo, hi): drawn as an error bar in the series' colour by a small uPlot plugin (uPlot has
// bands between two series, not per-point bars). The figure keeps its plot as `figure.plot`
// and the bars it drew as `figure.errorBars` (tests read both).
import { el } from './svg.js';

const CAP = 4; // half-width of an error bar's caps, CSS pixels

/** Draws each visible series' intervals after uPlot drew the lines; counts what it drew. */
function errorBarsPlugin(lines, xs, box) {
  return {
    hooks: {
      draw: (u) => {
        const ctx = u.ctx;
        const px = devicePixelRatio;
        const drawn = [];
        ctx.save();
        ctx.lineWidth = 1.5 * px;
        lines.forEach((s, i) => {
          if (!u.series[i + 1].show) return;
          ctx.strokeStyle = s.color;
          for (const p of s.points) {
            if (p.lo === null || p.lo === undefined || p.hi === null || p.hi === undefined || !xs.includes(p.x)) continue;
            const x = u.valToPos(p.x, 'x', true);
            const y0 = u.valToPos(p.lo, 'y', true);
            const y1 = u.valToPos(p.hi, 'y', true);
            ctx.beginPath();
            ctx.moveTo(x, y0);
            ctx.lineTo(x, y1);
            ctx.moveTo(x - CAP * px, y0);
            ctx.lineTo(x + CAP * px, y0);
            ctx.moveTo(x - CAP * px, y1);
            ctx.lineTo(x + CAP * px, y1);
            ctx.stroke();
            drawn.push({ series: s.id, x: p.x, lo: p.lo, hi: p.hi });
          }
        });
        ctx.restore();
        box.errorBars = drawn;
      },
    },
  };
}

/**
 * series: [{id, label, color, dashed, points: [{x, y, lo?, hi?}]}]; one x value per round.
 * opts: {id, title, xLabel, yLabel, empty, hline: {y, label}, width, height}
 */
export function lineChart(series, opts) {
  const box = el('figure', { class: 'chart-box', 'data-chart': opts.id });
  const drawn = series.filter((s) => s.points.length);
  if (drawn.length === 0) {
    box.append(el('p', { class: 'muted empty', text: opts.empty ?? 'no data yet' }));
    return box;
  }
  const xs = [...new Set(drawn.flatMap((s) => s.points.map((p) => p.x)))].sort((a, b) => a - b);
  const lines = opts.hline
    ? [...drawn, { id: 'hline', label: opts.hline.label, color: '#b42318', dashed: true, rule: true, points: xs.map((x) => ({ x, y: opts.hline.y })) }]
    : drawn;
  const column = (s) => xs.map((x) => s.points.find((p) => p.x === x)?.y ?? null);
  // the y range must hold the intervals, not only the lines
  const ends = lines.flatMap((s) => s.points.flatMap((p) => [p.y, p.lo, p.hi])).filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  const [lo, hi] = [Math.min(...ends), Math.max(...ends)];
  const pad = (hi - lo) * 0.05 || Math.abs(hi) * 0.05 || 1;
  box.plot = new uPlot({
    title: opts.title,
    width: opts.width ?? 560,
    height: opts.height ?? 300,
    scales: { x: { time: false }, y: { range: () => [lo - pad, hi + pad] } },
    axes: [
      { label: opts.xLabel, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000], values: (_u, ticks) => ticks.map(String) },
      { label: opts.yLabel, size: 56 },
    ],
    series: [
      { label: 'round' },
      ...lines.map((s) => ({ label: s.label, stroke: s.color, width: s.rule || s.thin ? 1 : 2, dash: s.dashed ? [6, 4] : undefined, points: { show: !s.rule, size: 6 }, spanGaps: true })),
    ],
    plugins: [errorBarsPlugin(lines, xs, box)],
  }, [xs, ...lines.map(column)], box);
  box.dataset.series = lines.map((s) => s.id).join(' ');
  return box;
}
