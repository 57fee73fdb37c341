// FedAvg throughput: N = 2, 10, 50 updates of P = 4M and 40M float32 parameters, read from
// files (generated once, deterministically, in a temp dir), our streaming FedAvg against
// Flower's numpy aggregate (test/bench/ref/aggregate_numpy.py) in the same run. Each side runs
// in its own child process so peak RSS growth is measured cleanly. GB/s = N * P * 4 bytes / s.
// 40M x 50 is skipped: 8 GB of input files and ~16 GB numpy working set on a 24 GiB machine.
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchRow } from './run.ts';
import { createFedAvg } from '../../coordinator/strategies/fedavg.ts';
import { fileUpdateRefs } from '../../coordinator/strategies/file-updates.ts';

const PYTHON = process.env.FEDLORA_PYTHON ?? '/usr/bin/python3';
const here = dirname(fileURLToPath(import.meta.url));
const M = 1_000_000;

function writeData(file: string, p: number, seed: number): void {
  if (existsSync(file)) return;
  const fd = openSync(file, 'w');
  const chunk = 1 << 20;
  const buf = new Float32Array(chunk);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let off = 0; off < p; off += chunk) {
    const n = Math.min(chunk, p - off);
    for (let i = 0; i < n; i++) {
      s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
      buf[i] = (s >>> 8) / 16777216 - 0.5;
    }
    writeSync(fd, new Uint8Array(buf.buffer, 0, 4 * n));
  }
  closeSync(fd);
}

interface Cfg { files: string[]; weights: number[]; P: number; reps: number }
interface Out { seconds: number; peakRssDelta: number; checksum: number }

/** Child mode: aggregate with our FedAvg and print timing + memory as JSON. */
async function child(cfg: Cfg): Promise<void> {
  const base = process.memoryUsage().rss;
  const layout = { entries: [{ name: 'x', shape: [cfg.P], offset: 0, length: cfg.P }], total: cfg.P };
  let best = Infinity;
  let out!: Float32Array;
  for (let r = 0; r < cfg.reps; r++) {
    const t0 = performance.now();
    // the coordinator's file-backed updates: read-ahead on the thread pool, two recycled buffers
    const updates = fileUpdateRefs(cfg.files.map((f, k) => ({ siteId: `s${k}`, numExamples: cfg.weights[k], path: f })), cfg.P, { reuseBuffers: true, readAhead: process.env.FEDLORA_BENCH_READAHEAD === "1" });
    // weights payload: the result is the weighted mean itself (no global to add), like numpy's
    const res = await createFedAvg({ payloadKind: 'weights' }).aggregate(updates, { round: 1, layout, global: new Float32Array(cfg.P) /* calloc: untouched pages are not resident */, selected: cfg.files.length, state: {}, seed: 0 });
    out = res.global;
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  let cs = 0;
  for (let i = 0; i < 100000; i++) cs += out[i];
  const peak = process.resourceUsage().maxRSS * 1024;
  process.stdout.write(JSON.stringify({ seconds: best, peakRssDelta: peak - base, checksum: cs }) + '\n');
}

function runChild(cmd: string, args: string[]): Out {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args[0]} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

export async function run(): Promise<BenchRow[]> {
  const dir = join(tmpdir(), 'fedlora-bench-aggregate');
  mkdirSync(dir, { recursive: true });
  const quick = process.env.FEDLORA_BENCH_QUICK === '1';
  const rows: BenchRow[] = [];
  try {
    for (const P of quick ? [4 * M] : [4 * M, 40 * M]) {
      for (const N of [2, 10, 50]) {
        const bench = `FedAvg N=${N} P=${P / M}M f32`;
        if (P === 40 * M && N === 50) {
          rows.push({ bench, metric: 'GB/s', ours: NaN, reference: null, referenceName: 'numpy (Flower aggregate)', note: 'skipped: 8 GB of inputs, ~16 GB numpy working set on a 24 GiB, 2-core machine' });
          continue;
        }
        const files = Array.from({ length: N }, (_, k) => join(dir, `p${P}-s${k}.f32`));
        files.forEach((f, k) => writeData(f, P, k + 1));
        const weights = files.map((_, k) => 100 + 37 * k);
        const cfg: Cfg = { files, weights, P, reps: N * P >= 400 * M ? 1 : 2 };
        // alternate the two sides twice and keep each side's best: the machine is shared, so a
        // single pass is at the mercy of whatever else runs at that moment
        let ours: Out | null = null;
        let ref: Out | null = null;
        for (let pass = 0; pass < 2; pass++) {
          const o = runChild(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', JSON.stringify(cfg)]);
          const r = runChild(PYTHON, [join(here, 'ref', 'aggregate_numpy.py'), JSON.stringify(cfg)]);
          if (!ours || o.seconds < ours.seconds) ours = o;
          if (!ref || r.seconds < ref.seconds) ref = r;
        }
        const gb = (N * P * 4) / 1e9;
        const agree = Math.abs(ours!.checksum - ref!.checksum) <= 1e-3 * Math.max(1, Math.abs(ref!.checksum));
        rows.push({
          bench, metric: 'GB/s', ours: gb / ours!.seconds, reference: gb / ref!.seconds, referenceName: 'numpy (Flower aggregate)',
          note: `peak RSS +${(ours!.peakRssDelta / 2 ** 20).toFixed(0)} MiB vs numpy +${(ref!.peakRssDelta / 2 ** 20).toFixed(0)} MiB${agree ? '' : `; RESULTS DIFFER (checksum ${ours!.checksum} vs ${ref!.checksum})`}`,
        });
      }
    }
  } finally {
    if (process.env.FEDLORA_BENCH_KEEP !== '1') rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

if (process.argv.includes('--child')) await child(JSON.parse(process.argv[process.argv.indexOf('--child') + 1]));
