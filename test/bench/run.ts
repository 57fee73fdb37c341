// `npm run bench`: runs every test/bench/*.bench.ts module in turn. Each module exports
// `run(): Promise<BenchRow[]>` measuring ours against a reference measured in the same run,
// and the results are printed as one table, each row against its target where it has one
// (met? yes/no). Benchmarks never assert timings. `npm run bench -- upload` runs only files
// whose name contains "upload".
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export interface BenchRow {
  bench: string; // e.g. "LoRA step (8L h512 s512 b4 r16 q,v)"
  metric: string; // e.g. "tokens/s"
  ours: number;
  reference: number | null; // measured in the same run
  referenceName: string; // e.g. "PyTorch CPU"
  /** What the project asks of this figure: at least `value` of the metric ('absolute'), at
   *  least `value` times the reference ('ratio'), or at most `value` of the metric ('at most',
   *  e.g. peak memory). */
  target?: { value: number; what: 'absolute' | 'ratio' | 'at most' };
  note?: string; // peak memory and what was measured
}

const here = dirname(fileURLToPath(import.meta.url));
const only = process.argv.slice(2);
const files = readdirSync(here).filter((f) => f.endsWith('.bench.ts')).filter((f) => only.length === 0 || only.some((o) => f.includes(o))).sort();
const rows: BenchRow[] = [];
for (const f of files) {
  process.stderr.write(`running ${f} ...\n`);
  const mod = await import(pathToFileURL(join(here, f)).href);
  try {
    rows.push(...(await mod.run()));
  } catch (e) {
    process.stderr.write(`${f} failed: ${(e as Error).stack}\n`);
    process.exitCode = 1;
  }
}
const fmt = (x: number | null) => (x === null || Number.isNaN(x) ? '-' : Math.abs(x) >= 100 ? x.toFixed(0) : x.toPrecision(3));
const ratioOf = (r: BenchRow) => (r.reference ? r.ours / r.reference : null);
const targetText = (r: BenchRow) =>
  !r.target ? '-' : r.target.what === 'ratio' ? `>= ${r.target.value}x` : `${r.target.what === 'at most' ? '<=' : '>='} ${r.target.value} ${r.metric}`;
const met = (r: BenchRow) => {
  if (!r.target) return '-';
  const got = r.target.what === 'ratio' ? ratioOf(r) : r.ours;
  if (got === null || Number.isNaN(got)) return 'n/a';
  return (r.target.what === 'at most' ? got <= r.target.value : got >= r.target.value) ? 'yes' : 'NO';
};
const table = rows.map((r) => [r.bench, r.metric, fmt(r.ours), r.referenceName, fmt(r.reference), ratioOf(r) === null ? '-' : ratioOf(r)!.toFixed(2) + 'x', targetText(r), met(r), r.note ?? '']);
const head = ['benchmark', 'metric', 'fedlora', 'reference', 'ref value', 'ratio', 'target', 'met?', 'note'];
const widths = head.map((h, i) => Math.max(h.length, ...table.map((t) => String(t[i]).length)));
const line = (cells: string[]) => '| ' + cells.map((c, i) => String(c).padEnd(widths[i])).join(' | ') + ' |';
console.log(line(head));
console.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|');
for (const t of table) console.log(line(t as string[]));
