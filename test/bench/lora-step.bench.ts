// One LoRA training step (forward + backward + AdamW) of a llama decoder (8 layers, hidden 512,
// 8 heads, seq 512, batch 4, r=16 on q,v, vocab 512) in tokens/s: our ONNX Runtime training graph
// vs the same model + LoRA in PyTorch (test/bench/ref/lora_step_torch.py) measured in the same
// run, plus the machine's measured sgemm rate and each side's model-FLOP utilisation.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BenchRow } from './run.ts';
import { writeTinyModel } from '../../site-agent/engine/checkpoint/tiny.ts';
import { readCheckpoint } from '../../site-agent/engine/checkpoint/read.ts';
import { createTrainStepSession } from '../../site-agent/engine/session.ts';
import { packExamples } from '../../site-agent/engine/data/pack.ts';
import { initLoraAdapter } from '../../shared/lora/init.ts';
import { trainableKeys } from '../../site-agent/engine/train/adapter-state.ts';
import { Optimizer } from '../../site-agent/engine/train/optim.ts';
import { clipGradNorm } from '../../site-agent/engine/train/grads.ts';
import type { LoraConfig, LoraTarget } from '../../shared/lora/types.ts';
import { ortSgemmGflops, PYTHON, TORCH_REF, torchSgemmGflops } from './sgemm-probe.ts';

export const BENCH_CFG = {
  layers: 8, hidden: 512, heads: 8, kvHeads: 8, intermediate: 1376, vocab: 512, seq: 512, batch: 4, r: 16, alpha: 32,
  targets: ['q_proj', 'v_proj'] as LoraTarget[],
};
type Cfg = typeof BENCH_CFG;

/** Analytic FLOPs of one step with a frozen base: forward + input-gradient backward of every base
 *  matmul (no weight gradients) + attention backward (2x its forward) + LoRA forward/backward
 *  (input and weight gradients). Attention counted over the full S×S score matrix (PaLM convention). */
export function loraStepFlops(c: Cfg): { forward: number; total: number } {
  const N = c.batch * c.seq;
  const d = c.hidden / c.heads;
  const q = c.heads * d, kv = c.kvHeads * d;
  const dims: Record<LoraTarget, [number, number]> = {
    q_proj: [c.hidden, q], k_proj: [c.hidden, kv], v_proj: [c.hidden, kv], o_proj: [q, c.hidden],
    gate_proj: [c.hidden, c.intermediate], up_proj: [c.hidden, c.intermediate], down_proj: [c.intermediate, c.hidden],
  };
  let linear = 0, lora = 0;
  for (const [t, [i, o]] of Object.entries(dims) as [LoraTarget, [number, number]][]) {
    linear += 2 * i * o;
    if (c.targets.includes(t)) lora += 2 * i * c.r + 2 * c.r * o;
  }
  const attn = 4 * c.seq * c.heads * d; // QK^T and AV per token
  const head = 2 * c.hidden * c.vocab;
  const fwdTok = c.layers * (linear + lora + attn) + head;
  const bwdTok = c.layers * (linear + 2 * attn + 2 * lora) + head;
  return { forward: N * fwdTok, total: N * (fwdTok + bwdTok) };
}

async function oursTokensPerSecond(c: Cfg, dir: string, reps: number): Promise<{ tps: number; loss: number }> {
  writeTinyModel({ arch: 'llama', out: dir, seed: 0, layers: c.layers, hidden: c.hidden, heads: c.heads, kvHeads: c.kvHeads, intermediate: c.intermediate, vocab: c.vocab, maxPositionEmbeddings: c.seq });
  const ckpt = readCheckpoint(dir);
  const lora: LoraConfig = { r: c.r, alpha: c.alpha, targets: c.targets, dropout: 0, useRslora: false, freezeA: false, initSeed: 0 };
  const session = await createTrainStepSession(ckpt, lora, { batch: c.batch, seq: c.seq, device: 'cpu' });
  // full rows of random tokens: every position but the last of each row carries a target
  let s = 1;
  const ids = Array.from({ length: c.seq }, () => ((s = (s * 1103515245 + 12345) >>> 0) % c.vocab));
  const [batch] = packExamples(Array.from({ length: c.batch }, () => ({ inputIds: ids, labels: ids })), { batch: c.batch, seq: c.seq, seed: 0, shuffle: false });
  const adapter = initLoraAdapter(ckpt.config, lora);
  const keys = trainableKeys(adapter, lora);
  const params = new Map(keys.map((k) => [k, adapter.get(k)!.data]));
  const opt = new Optimizer({ kind: 'adamw', weightDecay: 0 });
  const times: number[] = [];
  let loss = 0;
  for (let i = 0; i < reps + 1; i++) {
    const t = performance.now();
    const r = await session.run(batch, adapter, { lossDenominator: batch.countedTokens, dropoutSeed: i });
    clipGradNorm(r.grads, 1);
    opt.step(params, r.grads, 1e-4);
    loss = r.loss;
    if (i > 0) times.push((performance.now() - t) / 1000); // first run: ORT warm-up
  }
  await session.release();
  // best of the timed steps on both sides: on a shared machine the fastest step is the least disturbed
  return { tps: (c.batch * c.seq) / Math.min(...times), loss };
}

function torchTokensPerSecond(c: Cfg, reps: number): { tps: number; version: string; threads: number } | null {
  const cfg = { layers: c.layers, hidden: c.hidden, heads: c.heads, kv_heads: c.kvHeads, intermediate: c.intermediate, vocab: c.vocab, seq: c.seq, batch: c.batch, r: c.r, alpha: c.alpha, targets: c.targets, warmup: 1, reps };
  const r = spawnSync(PYTHON, [TORCH_REF, 'step', JSON.stringify(cfg)], { encoding: 'utf8' });
  if (r.status !== 0) {
    process.stderr.write(`PyTorch reference unavailable (${PYTHON}): ${r.stderr?.slice(-300) ?? r.error}\n`);
    return null;
  }
  const out = JSON.parse(r.stdout) as { tokens_per_s: number; threads: number };
  const v = spawnSync(PYTHON, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' }).stdout.trim();
  return { tps: out.tokens_per_s, version: v, threads: out.threads };
}

export async function run(): Promise<BenchRow[]> {
  // FEDLORA_BENCH_LORA_CFG='{"layers":2,"hidden":64,...}' overrides fields (quick smoke runs)
  const c: Cfg = { ...BENCH_CFG, ...(process.env.FEDLORA_BENCH_LORA_CFG ? JSON.parse(process.env.FEDLORA_BENCH_LORA_CFG) : {}) };
  const reps = Number(process.env.FEDLORA_BENCH_REPS ?? 3);
  const dir = mkdtempSync(join(tmpdir(), 'fedlora-bench-lora-'));
  try {
    const name = `LoRA step (${c.layers}L h${c.hidden} s${c.seq} b${c.batch} r${c.r} ${c.targets.map((t) => t[0]).join(',')})`;
    // sgemm before and after the step benchmarks (best of both): a busy machine lowers the peak
    const ortG0 = await ortSgemmGflops();
    const torchG0 = torchSgemmGflops();
    const ours = await oursTokensPerSecond(c, dir, reps);
    const ref = torchTokensPerSecond(c, reps);
    const ortG = Math.max(ortG0, await ortSgemmGflops());
    const t1 = torchSgemmGflops();
    const torchG = torchG0 === null && t1 === null ? null : Math.max(torchG0 ?? 0, t1 ?? 0);
    const load = loadavg()[0].toFixed(1);
    const peak = Math.max(ortG, torchG ?? 0);
    const flopsPerToken = loraStepFlops(c).total / (c.batch * c.seq);
    const mfu = (tps: number) => (tps * flopsPerToken) / (peak * 1e9);
    const refName = ref ? `PyTorch ${ref.version} CPU (${ref.threads} threads)` : 'PyTorch (unavailable)';
    return [
      { bench: name, metric: 'tokens/s (fwd+bwd+AdamW)', ours: ours.tps, reference: ref?.tps ?? null, referenceName: refName, note: `loss ${ours.loss.toFixed(3)}, best of ${reps} steps, ${cpus().length} cores, load avg ${load}` },
      { bench: name, metric: 'model FLOP utilisation', ours: mfu(ours.tps), reference: ref ? mfu(ref.tps) : null, referenceName: refName, note: `${(flopsPerToken / 1e6).toFixed(1)} MFLOP/token; peak = best measured sgemm ${peak.toFixed(0)} GFLOP/s` },
      { bench: 'sgemm 2048x2048 fp32', metric: 'GFLOP/s', ours: ortG, reference: torchG, referenceName: 'torch.mm', note: 'ours = ONNX Runtime MatMul' },
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
