// The quantization benchmarks (quant-1.5b.bench.ts, quant-7b.bench.ts): a randomly initialised
// checkpoint with a real DeepSeek model's shapes (made once, kept in $FEDLORA_BENCH_MODELS), one
// LoRA step (batch 1, r=16 on q,k,v,o) per weight mode through the production path, each in its own
// process (quant-child.ts) so each peak RSS is its own, against a PyTorch CPU step on the same
// shapes in the same run (float32, and quantize_dynamic int8: ref/quant_step_torch.py), plus the
// quantization error against the float32 path (mean |Δ logprob|, KL, LoRA-B gradient cosine).
// The machine is shared: each child waits until enough memory is available, or its row says why
// it was not measured.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeRandomCheckpoint } from '../../site-agent/engine/checkpoint/random-checkpoint.ts';
import type { QuantMode } from '../../site-agent/engine/types.ts';
import type { BenchRow } from './run.ts';
import { PYTHON } from './sgemm-probe.ts';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = join(here, '..', '..');
const GB = 1e9;

export interface QuantBenchPlan {
  preset: string;
  label: string;
  seq: number;
  /** Engine runs: weight mode, recomputation, peak-RSS target (GB) and the memory to wait for (GB). */
  engine: { quantize: QuantMode; recompute: boolean; rssTarget?: number; needGb: number }[];
  /** PyTorch reference runs and the memory they need (GB). */
  torch: { weights: 'f32' | 'int8'; needGb: number }[];
  /** Quantization error figures against the float32 path (needs the float32 engine run). */
  errors: boolean;
  /** LoRA steps per run (engine and PyTorch), the first untimed (warm-up); default 3. */
  steps?: number;
}

function memAvailableGb(): number {
  const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? (Number(m[1]) * 1024) / GB : 0;
}

/** Wait (up to 15 minutes) until `gb` of memory is available; false if it never was. */
function waitForMemory(gb: number, what: string): boolean {
  const until = Date.now() + 15 * 60_000;
  for (;;) {
    const free = memAvailableGb();
    if (free >= gb) return true;
    if (Date.now() > until) return false;
    process.stderr.write(`  ${what}: waiting for ${gb} GB of memory (${free.toFixed(1)} GB available)\n`);
    spawnSync('sleep', ['30']);
  }
}

function child(req: Record<string, unknown>): Record<string, any> {
  // weight and graph caches next to the benchmark checkpoints (tens of GB), not in the shared graph cache
  const env = { ...process.env, FEDLORA_GRAPH_CACHE: process.env.FEDLORA_GRAPH_CACHE ?? join(modelsRoot(), 'graphs') };
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(here, 'quant-child.ts'), JSON.stringify(req)], { cwd: ROOT, env, encoding: 'utf8', maxBuffer: 1 << 24, stdio: ['ignore', 'pipe', 'inherit'] });
  if (r.status !== 0) throw new Error(`quant-child ${JSON.stringify(req)} exited ${r.status ?? r.signal}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!);
}

function torchStep(cfg: Record<string, unknown>): Record<string, any> | string {
  const r = spawnSync(PYTHON, [join(here, 'ref', 'quant_step_torch.py'), JSON.stringify(cfg)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0) return `PyTorch failed: ${(r.stderr ?? String(r.error)).trim().split('\n').at(-1)}`;
  return JSON.parse(r.stdout);
}

/** Benchmark checkpoints and their weight and graph caches: $FEDLORA_BENCH_MODELS, never the repository. */
const modelsRoot = () => process.env.FEDLORA_BENCH_MODELS ?? join(tmpdir(), 'fedlora-bench-models');

/** The benchmark checkpoint of a preset (written once; bf16 like the published weights). Written
 *  into a side folder and renamed when complete, so an interrupted write is never taken for one. */
function checkpoint(preset: string): string {
  const dir = join(modelsRoot(), preset);
  if (!existsSync(dir)) {
    const partial = `${dir}.partial`;
    rmSync(partial, { recursive: true, force: true });
    mkdirSync(partial, { recursive: true });
    process.stderr.write(`  writing ${preset} (random weights) to ${dir} ...\n`);
    writeRandomCheckpoint({ like: preset, out: partial, seed: 0 });
    renameSync(partial, dir);
  }
  return dir;
}

const cosine = (a: Float32Array, b: Float32Array) => {
  let d = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { d += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return d / Math.sqrt(na * nb);
};

export async function runQuantBench(p: QuantBenchPlan): Promise<BenchRow[]> {
  const dir = checkpoint(p.preset);
  const raw = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>; // the preset's, or fewer layers for a smoke run
  const c = (k: string) => raw[k] as number;
  const work = mkdtempSync(join(tmpdir(), 'fedlora-bench-quant-'));
  const rows: BenchRow[] = [];
  const name = (what: string) => `${p.label} ${what} (s${p.seq} b1 r16 q,k,v,o)`;
  try {
    // ---- our engine, one process per configuration (first: on a busy machine its figures, the
    // targets' subject, come before the references; each is logged as soon as it is measured) ---
    const grads = new Map<QuantMode, Float32Array>();
    const runs: { e: QuantBenchPlan['engine'][number]; tag: string; r: Record<string, any> | null; prepS: number }[] = [];
    for (const e of p.engine) {
      const tag = `${e.quantize}${e.recompute ? ' +recompute' : ''}`;
      const prep = child({ op: 'prepare', dir, quantize: e.quantize }); // first use builds the cache (timed here, not in the step)
      if (!waitForMemory(e.needGb, `engine ${tag}`)) { runs.push({ e, tag, r: null, prepS: prep.seconds }); continue; }
      process.stderr.write(`  engine ${tag} steps ...\n`);
      const gradsOut = join(work, `grads-${e.quantize}-${e.recompute}.bin`);
      const r = child({ op: 'train', dir, quantize: e.quantize, recompute: e.recompute, seq: p.seq, steps: p.steps ?? 3, gradsOut });
      process.stderr.write(`  engine ${tag}: steps ${r.stepS.map((x: number) => x.toFixed(1)).join('/')} s, peak RSS ${(r.peakRssBytes / GB).toFixed(2)} GB\n`);
      if (!grads.has(e.quantize)) grads.set(e.quantize, new Float32Array(readFileSync(gradsOut).buffer.slice(0)));
      runs.push({ e, tag, r, prepS: prep.seconds });
    }

    // ---- PyTorch references ---------------------------------------------------------------
    const torch: Record<string, Record<string, any> | string> = {};
    for (const t of p.torch) {
      if (!waitForMemory(t.needGb, `PyTorch ${t.weights}`)) { torch[t.weights] = `not run: ${t.needGb} GB of memory never became available`; continue; }
      process.stderr.write(`  PyTorch ${t.weights} step ...\n`);
      torch[t.weights] = torchStep({
        layers: c('num_hidden_layers'), hidden: c('hidden_size'), heads: c('num_attention_heads'), kv_heads: c('num_key_value_heads'), intermediate: c('intermediate_size'),
        vocab: c('vocab_size'), seq: p.seq, r: 16, alpha: 32, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], qkv_bias: raw.model_type === 'qwen2',
        rope_theta: c('rope_theta'), weights: t.weights, warmup: 1, reps: Math.max(1, (p.steps ?? 3) - 1),
      });
      process.stderr.write(`  PyTorch ${t.weights}: ${JSON.stringify(torch[t.weights])}\n`);
    }
    const ref = (w: 'f32' | 'int8') => (typeof torch[w] === 'object' ? (torch[w] as Record<string, any>) : null);
    const refName = (w: 'f32' | 'int8') => (ref(w) ? `PyTorch ${ref(w)!.torch} ${w === 'f32' ? 'float32' : 'quantize_dynamic int8'}` : `PyTorch ${w} (${torch[w] ?? 'not run'})`);

    for (const { e, tag, r, prepS } of runs) {
      if (!r) { rows.push({ bench: name(tag), metric: 'tokens/s', ours: NaN, reference: null, referenceName: '-', note: `not run: ${e.needGb} GB of memory never became available` }); continue; }
      const best = Math.min(...r.stepS.slice(1)); // the first step warms ONNX Runtime up
      const torchRef = e.quantize === 'none' ? 'f32' : 'int8';
      const note = `steps ${r.stepS.map((x: number) => x.toFixed(1)).join('/')} s; load ${r.loadS.toFixed(1)} s${prepS ? `, weights prepared once in ${prepS.toFixed(0)} s` : ''}`;
      rows.push({ bench: name(tag), metric: 'tokens/s', ours: p.seq / best, reference: ref(torchRef)?.tokens_per_s ?? null, referenceName: refName(torchRef), target: { value: e.quantize === 'none' ? 1.5 : 1.0, what: 'ratio' }, note });
      rows.push({ bench: name(tag), metric: 'peak RSS GB', ours: r.peakRssBytes / GB, reference: ref(torchRef) ? ref(torchRef)!.peak_rss_bytes / GB : null, referenceName: refName(torchRef), target: e.rssTarget ? { value: e.rssTarget, what: 'at most' } : undefined });
    }

    // ---- quantization error against the float32 path -------------------------------------------
    if (p.errors && grads.has('none')) {
      const refOut = join(work, 'logp-f32.bin');
      child({ op: 'logits', dir, quantize: 'none', seq: p.seq, refOut });
      for (const q of ['int8', 'int4'] as QuantMode[]) {
        if (!grads.has(q)) continue;
        const e = child({ op: 'logits', dir, quantize: q, seq: p.seq, ref: refOut });
        process.stderr.write(`  ${q} vs float32: ${JSON.stringify(e)}\n`);
        const note = `fixed text, ${p.seq} tokens; float32 mean log p ${e.meanLogp.toFixed(3)}`;
        rows.push({ bench: name(`${q} vs float32`), metric: 'mean |Δ logprob|', ours: e.meanAbsDlogp, reference: null, referenceName: '-', target: q === 'int8' ? { value: 0.02, what: 'at most' } : undefined, note });
        rows.push({ bench: name(`${q} vs float32`), metric: 'KL(f32 || q) per token', ours: e.kl, reference: null, referenceName: '-' });
        rows.push({ bench: name(`${q} vs float32`), metric: 'LoRA-B gradient cosine', ours: cosine(grads.get(q)!, grads.get('none')!), reference: null, referenceName: '-', target: q === 'int8' ? { value: 0.99, what: 'absolute' } : undefined });
      }
    }
    return rows;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
