// Measured matrix-multiply throughput of this machine: ONNX Runtime's MatMul (what our training
// graphs run on) and torch.mm (the reference's BLAS), on large square float32 matrices. The best
// of these is the "peak" against which model FLOP utilisation is reported.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { availableParallelism } from 'node:os';
import * as ort from 'onnxruntime-node';
import { Builder } from '../../site-agent/engine/graph/ir.ts';
import { encodeModel } from '../../site-agent/engine/graph/onnx-export.ts';

export const PYTHON = process.env.FEDLORA_PYTHON ?? '/usr/bin/python3';
export const TORCH_REF = join(dirname(fileURLToPath(import.meta.url)), 'ref', 'lora_step_torch.py');

/** GFLOP/s of an n×n·n×n float32 MatMul in ONNX Runtime (best of `reps`). */
export async function ortSgemmGflops(n = 2048, reps = 5): Promise<number> {
  const b = new Builder('sgemm');
  b.input('a', 'float32', [n, n]);
  b.input('b', 'float32', [n, n]);
  b.op1('MatMul', ['a', 'b'], {}, 'c');
  b.output('c');
  const sess = await ort.InferenceSession.create(encodeModel(b.g), { intraOpNumThreads: availableParallelism(), interOpNumThreads: 1, graphOptimizationLevel: 'all' });
  const a = new Float32Array(n * n).map((_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
  const feeds = { a: new ort.Tensor('float32', a, [n, n]), b: new ort.Tensor('float32', a.slice().reverse(), [n, n]) };
  await sess.run(feeds);
  let best = Infinity;
  for (let i = 0; i < reps; i++) {
    const t = performance.now();
    await sess.run(feeds);
    best = Math.min(best, (performance.now() - t) / 1000);
  }
  await sess.release();
  return (2 * n ** 3) / best / 1e9;
}

/** GFLOP/s of torch.mm (null when Debian's python has no torch). */
export function torchSgemmGflops(n = 2048, reps = 5): number | null {
  const r = spawnSync(PYTHON, [TORCH_REF, 'sgemm', JSON.stringify({ n, reps })], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  return (JSON.parse(r.stdout) as { gflops: number }).gflops;
}
