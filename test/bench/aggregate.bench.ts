// FedAvg throughput through the production path: N = 2, 10, 50 accepted updates of a LoRA
// adapter with P = 4M and 40M float32 parameters, stored as the coordinator stores them
// (safetensors files in the job's update layout under updates/<job>/r<round>a<attempt>/, rows
// 'accepted' in its SQLite store), loaded the way the round engine hands them to strategies
// (coordinator/rounds/stored-updates.ts) and aggregated by the job's strategy from the registry
// (fedavg over deltas: global + weighted mean). Reference in the same run: Flower's numpy
// aggregate (test/bench/ref/aggregate_numpy.py) over the same files. Each side runs in its own
// child process so its peak RSS growth is its own. GB/s = N * P * 4 bytes / s.
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readSync, writeSync } from 'node:fs';
import { freemem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { BenchRow } from './run.ts';
import { CoordinatorStore } from '../../coordinator/store/store.ts';
import { createStrategy } from '../../coordinator/strategies/registry.ts';
import { storedUpdateRefs } from '../../coordinator/rounds/stored-updates.ts';
import type { AdapterLayout } from '../../shared/tensors.ts';
import { harness, online, rmDir, tinySpec, TINY_CONFIG } from '../coordinator/helpers.ts';

const PYTHON = process.env.FEDLORA_PYTHON ?? '/usr/bin/python3';
const here = dirname(fileURLToPath(import.meta.url));
const M = 1_000_000;
const TARGET_RATIO = 2;

/** q,v LoRA of rank 64 on a hidden-4096 model: 4·64·4096 = 1.05M parameters per layer. */
const modelFor = (layers: number) => ({ ...TINY_CONFIG, hidden_size: 4096, intermediate_size: 8192, num_hidden_layers: layers, num_attention_heads: 32, num_key_value_heads: 32 });

/** A stored update as the coordinator keeps it: safetensors, tensors in layout order. */
function writeUpdate(file: string, layout: AdapterLayout, seed: number): void {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  for (const e of layout.entries) header[e.name] = { dtype: 'F32', shape: e.shape, data_offsets: [e.offset * 4, (e.offset + e.length) * 4] };
  let json = Buffer.from(JSON.stringify(header));
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const fd = openSync(file, 'w');
  writeSync(fd, Buffer.concat([len, json]));
  const chunk = new Float32Array(1 << 20);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let off = 0; off < layout.total; off += chunk.length) {
    const n = Math.min(chunk.length, layout.total - off);
    for (let i = 0; i < n; i++) {
      s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
      chunk[i] = ((s >>> 8) / 16777216 - 0.5) * 1e-2;
    }
    writeSync(fd, new Uint8Array(chunk.buffer, 0, 4 * n));
  }
  closeSync(fd);
}

interface Cfg { db: string; jobId: string; layout: AdapterLayout; files: string[]; weights: number[]; offset: number; P: number; reps: number }
interface Out { seconds: number; peakRssDelta: number; checksum: number }

v8.setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Child mode: the production path, timed from the accepted rows to the new global adapter. */
async function child(cfg: Cfg): Promise<void> {
  const store = new CoordinatorStore(cfg.db);
  const strategy = createStrategy({ name: 'fedavg' });
  const global = new Float32Array(cfg.P); // the round's base (its values do not change the cost)
  const base = process.memoryUsage.rss();
  let best = Infinity;
  let cs = 0;
  for (let r = 0; r < cfg.reps; r++) {
    gc(); // the last repetition's adapter is garbage: collect it before timing the next
    const t0 = performance.now();
    const rows = store.roundUpdates(cfg.jobId, 1, 1, 'accepted');
    const refs = storedUpdateRefs(rows, cfg.layout, { reuseBuffer: strategy.meanBased === true });
    const res = await strategy.aggregate(refs, { round: 1, layout: cfg.layout, global, selected: rows.length, state: {}, seed: 0 });
    best = Math.min(best, (performance.now() - t0) / 1000);
    cs = 0;
    for (let i = 0; i < 100000; i++) cs += res.global[i];
  }
  store.close();
  const peak = process.resourceUsage().maxRSS * 1024;
  process.stdout.write(JSON.stringify({ seconds: best, peakRssDelta: peak - base, checksum: cs }) + '\n');
}

function runChild(cmd: string, args: string[]): Out {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.slice(0, 3).join(' ')} failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

const MiB = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;

export async function run(): Promise<BenchRow[]> {
  const quick = process.env.FEDLORA_BENCH_QUICK === '1';
  const rows: BenchRow[] = [];
  for (const layers of quick ? [4] : [4, 38]) {
    for (const N of [2, 10, 50]) {
      const h = harness();
      try {
        const sites = Array.from({ length: N }, (_, k) => `site-${String(k).padStart(2, '0')}`);
        online(h, ...sites);
        const jobId = await h.engine.submitJob(tinySpec({
          base_model: { id: 'bench/qwen2', manifest_sha256: 'a'.repeat(64), config: modelFor(layers) },
          lora: { r: 64, alpha: 128, target_modules: ['q_proj', 'v_proj'], init_seed: 1 }, min_sites: N, max_sites: N, round_deadline_s: 3600,
        }), 'job-bench');
        await h.engine.tick();
        const { layout } = h.engine.jobInfo(jobId);
        const P = layout.update.total;
        const dir = join(h.dir, 'updates', jobId, 'r1a1');
        mkdirSync(dir, { recursive: true });
        const files: string[] = [];
        const weights: number[] = [];
        for (const [k, site] of sites.entries()) {
          const task = h.store.openTasksFor(site).find((t) => t.job_id === jobId)!;
          const path = join(dir, `u-${site}.safetensors`);
          writeUpdate(path, layout.update, k + 1);
          files.push(path);
          weights.push(100 + 37 * k);
          h.store.tx(() => h.store.insertUpdate({
            update_id: `u-${site}`, job_id: jobId, round: 1, attempt: task.attempt, site_id: site, task_id: task.task_id, base_version: 0, path, sha256: '0'.repeat(64),
            size: 0, chunk_size: 1 << 20, examples: 100 + 37 * k, norm: null, clipped: null, status: 'accepted', signature: null, metadata_json: null, received_ms: h.clock.t,
          }));
        }
        const bench = `FedAvg N=${N} P=${(P / M).toFixed(0)}M f32 (stored updates)`;
        const header = 8 + Number(Buffer.from(readHead(files[0])).readBigUInt64LE(0));
        const cfg: Cfg = { db: join(h.dir, 'coordinator.sqlite'), jobId, layout: layout.update, files, weights, offset: header, P, reps: Math.max(1, Math.min(8, Math.round(1.6e9 / (N * P * 4)))) }; // best of several for the short ones
        // numpy holds every update and a weighted copy of each: skip it when that cannot fit
        const numpyBytes = 2.2 * N * P * 4;
        const refFits = numpyBytes < freemem() * 0.7;
        let ours: Out | null = null;
        let ref: Out | null = null;
        // alternate the two sides and keep each side's best: the machine is shared
        for (let pass = 0; pass < 2; pass++) {
          const o = runChild(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', JSON.stringify(cfg)]);
          if (!ours || o.seconds < ours.seconds) ours = o;
          if (refFits) {
            const r = runChild(PYTHON, [join(here, 'ref', 'aggregate_numpy.py'), JSON.stringify(cfg)]);
            if (!ref || r.seconds < ref.seconds) ref = r;
          }
        }
        const gb = (N * P * 4) / 1e9;
        const agree = !ref || Math.abs(ours!.checksum - ref.checksum) <= 1e-3 * Math.max(1, Math.abs(ref.checksum));
        rows.push({
          bench, metric: 'GB/s', ours: gb / ours!.seconds, reference: ref ? gb / ref.seconds : null, referenceName: 'numpy (Flower aggregate)',
          target: { value: TARGET_RATIO, what: 'ratio' },
          note: `peak RSS +${MiB(ours!.peakRssDelta)}${ref ? ` vs numpy +${MiB(ref.peakRssDelta)}` : `; numpy not run: needs ~${MiB(numpyBytes)}, ${MiB(freemem())} free`}${agree ? '' : `; RESULTS DIFFER (checksum ${ours!.checksum} vs ${ref!.checksum})`}`,
        });
        process.stderr.write(`${bench}: ours ${(gb / ours!.seconds).toFixed(2)} GB/s${ref ? `, numpy ${(gb / ref.seconds).toFixed(2)} GB/s` : ''}\n`);
      } finally {
        h.close();
        rmDir(h.dir);
      }
    }
  }
  return rows;
}

function readHead(file: string): Uint8Array {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(8);
    readSync(fd, b, 0, 8, 0);
    return b;
  } finally {
    closeSync(fd);
  }
}

if (process.argv.includes('--child')) await child(JSON.parse(process.argv[process.argv.indexOf('--child') + 1]));
