// A minimal writer for the Prometheus text exposition format 0.0.4 (no client library is
// installed, and we only need gauges, counters and histograms computed at scrape time from
// SQLite). Each family gets `# HELP` and `# TYPE`; label values are escaped (\\, \", \n);
// HELP text escapes \\ and \n. Used by the coordinator (/metrics) and the site agent.
//
// Format reference: https://prometheus.io/docs/instrumenting/exposition_formats/

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type Labels = Record<string, string | number>;
export type MetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}
function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}
function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function labelText(labels: Labels | undefined): string {
  const keys = Object.keys(labels ?? {});
  if (keys.length === 0) return '';
  return '{' + keys.map((k) => {
    if (!LABEL_RE.test(k) || k.startsWith('__')) throw new Error(`prometheus label name ${JSON.stringify(k)} is invalid`);
    return `${k}="${escapeLabelValue(String(labels![k]))}"`;
  }).join(',') + '}';
}

/** Collects metric families and renders them; a family with no samples still gets HELP/TYPE. */
export class Exposition {
  private readonly families = new Map<string, { help: string; type: MetricType; lines: string[] }>();

  private family(name: string, help: string, type: MetricType) {
    if (!NAME_RE.test(name)) throw new Error(`prometheus metric name ${JSON.stringify(name)} is invalid`);
    let f = this.families.get(name);
    if (!f) {
      f = { help, type, lines: [] };
      this.families.set(name, f);
    } else if (f.type !== type) throw new Error(`prometheus metric ${name} declared as ${f.type} and ${type}`);
    return f;
  }

  /** Declare a family (HELP/TYPE) even when it has no sample yet. */
  declare(name: string, help: string, type: MetricType): this {
    this.family(name, help, type);
    return this;
  }

  gauge(name: string, help: string, value: number, labels?: Labels): this {
    this.family(name, help, 'gauge').lines.push(`${name}${labelText(labels)} ${formatValue(value)}`);
    return this;
  }

  counter(name: string, help: string, value: number, labels?: Labels): this {
    if (!name.endsWith('_total')) throw new Error(`prometheus counter ${name} must end in _total`);
    this.family(name, help, 'counter').lines.push(`${name}${labelText(labels)} ${formatValue(value)}`);
    return this;
  }

  /** A histogram from raw observations (cumulative buckets, +Inf, _sum, _count). */
  histogram(name: string, help: string, buckets: number[], observations: number[], labels?: Labels): this {
    const h = new HistogramCounts(buckets);
    for (const o of observations) h.observe(o);
    return this.histogramOf(name, help, h, labels);
  }

  /** A histogram from counts kept as observations came (HistogramCounts). */
  histogramOf(name: string, help: string, h: HistogramCounts, labels?: Labels): this {
    const f = this.family(name, help, 'histogram');
    h.buckets.forEach((le, i) => f.lines.push(`${name}_bucket${labelText({ ...labels, le: formatValue(le) })} ${h.counts[i]}`));
    f.lines.push(`${name}_bucket${labelText({ ...labels, le: '+Inf' })} ${h.count}`);
    f.lines.push(`${name}_sum${labelText(labels)} ${formatValue(h.sum)}`);
    f.lines.push(`${name}_count${labelText(labels)} ${h.count}`);
    return this;
  }

  render(): string {
    const out: string[] = [];
    for (const [name, f] of this.families) {
      out.push(`# HELP ${name} ${escapeHelp(f.help)}`, `# TYPE ${name} ${f.type}`, ...f.lines);
    }
    return out.join('\n') + '\n';
  }
}

/** A histogram kept as cumulative bucket counts, its sum and count: memory fixed by the buckets,
 *  whatever the number of observations (a long-running server observes without end). */
export class HistogramCounts {
  readonly buckets: number[];
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(buckets: number[]) {
    this.buckets = [...buckets].sort((a, b) => a - b);
    this.counts = this.buckets.map(() => 0);
  }

  observe(v: number): void {
    this.count++;
    this.sum += v;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]) this.counts[i]++;
  }
}
