// `npm run bench`: runs every test/bench/*.bench.ts module in turn. Each module exports
// `run(): Promise<BenchRow[]>` measuring ours against a reference measured in the same run,
// and the results are printed as one table. Benchmarks never assert timings.
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export interface BenchRow {
  bench: string; // e.g. "LoRA step (8L h512 s512 b4 r16 q,v)"
  metric: string; // e.g. "tokens/s"
  ours: number;
  reference: number | null; // measured in the same run
  referenceName: string; // e.g. "PyTorch CPU"
  note?: string;
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
const fmt = (x: number | null) => (x === null ? '-' : Math.abs(x) >= 100 ? x.toFixed(0) : x.toPrecision(3));
const table = rows.map((r) => [r.bench, r.metric, fmt(r.ours), r.referenceName, fmt(r.reference), r.reference ? (r.ours / r.reference).toFixed(2) + 'x' : '-', r.note ?? '']);
const head = ['benchmark', 'metric', 'fedlora', 'reference', 'ref value', 'ratio', 'note'];
const widths = head.map((h, i) => Math.max(h.length, ...table.map((t) => String(t[i]).length)));
const line = (cells: string[]) => '| ' + cells.map((c, i) => String(c).padEnd(widths[i])).join(' | ') + ' |';
console.log(line(head));
console.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|');
for (const t of table) console.log(line(t as string[]));
