// One measured configuration of the quantization benchmarks, in its own process so that its peak
// RSS is its own. Run by quant-bench.ts; prints one JSON line. Operations:
//   prepare: build the (dir, quantize) weight cache if missing            -> { built, seconds (its build time) }
//   train:   load + `steps` LoRA steps (forward, backward, AdamW) on the production path
//            (createTrainStepSession), lora_B gradients of the first step to `gradsOut`
//                                                                          -> { loadS, stepS, loss, peakRssBytes }
//   logits:  next-token log-probabilities of a fixed text; with `refOut` they are written there,
//            with `ref` compared to it                                     -> { meanAbsDlogp, kl }
import { closeSync, openSync, readSync, writeFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { initLoraAdapter } from '../../shared/lora/init.ts';
import type { LoraConfig, LoraTarget } from '../../shared/lora/types.ts';
import { readCheckpoint } from '../../site-agent/engine/checkpoint/read.ts';
import { packExamples } from '../../site-agent/engine/data/pack.ts';
import { buildDecoder } from '../../site-agent/engine/model.ts';
import { baseWeightsFor, createOrtSession, createTrainStepSession, graphCacheDir, graphKey, materializeModel } from '../../site-agent/engine/session.ts';
import { ensureWeightCache, weightCacheRoot } from '../../site-agent/engine/quant/weight-cache.ts';
import { loadTokenizer } from '../../site-agent/engine/tokenizer.ts';
import { Optimizer } from '../../site-agent/engine/train/optim.ts';
import type { QuantMode } from '../../site-agent/engine/types.ts';

interface Req {
  op: 'prepare' | 'train' | 'logits';
  dir: string;
  quantize: QuantMode;
  seq?: number;
  recompute?: boolean;
  steps?: number;
  r?: number;
  targets?: LoraTarget[];
  gradsOut?: string;
  refOut?: string;
  ref?: string;
}

/** A fixed clinical-style text, repeated to the sequence length (the byte-level tokenizer of random checkpoints). */
export const FIXED_TEXT = 'A 67-year-old man presents with chest pain radiating to the left arm, sweating and shortness of breath for two hours. ' +
  'History of hypertension and type 2 diabetes. ECG shows ST elevation in leads II, III and aVF. Troponin is raised. ';

const peak = () => process.resourceUsage().maxRSS * 1024;

async function train(q: Req, ckpt: ReturnType<typeof readCheckpoint>) {
  const seq = q.seq ?? 256;
  const lora: LoraConfig = { r: q.r ?? 16, alpha: 2 * (q.r ?? 16), targets: q.targets ?? ['q_proj', 'k_proj', 'v_proj', 'o_proj'], dropout: 0, useRslora: false, freezeA: false, initSeed: 0 };
  const ids = loadTokenizer(q.dir).encode(FIXED_TEXT.repeat(Math.ceil(seq / 40))).slice(0, seq);
  const [batch] = packExamples([{ inputIds: ids, labels: ids }], { batch: 1, seq, seed: 0, shuffle: false });
  const t0 = performance.now();
  const s = await createTrainStepSession(ckpt, lora, { batch: 1, seq, quantize: q.quantize, recompute: q.recompute });
  const loadS = (performance.now() - t0) / 1000;
  const adapter = initLoraAdapter(ckpt.config, lora);
  const keys = [...adapter.keys()];
  const params = new Map(keys.map((k) => [k, adapter.get(k)!.data]));
  const opt = new Optimizer({ kind: 'adamw', weightDecay: 0 });
  const stepS: number[] = [];
  let loss = 0;
  for (let i = 0; i < (q.steps ?? 3); i++) {
    const t = performance.now();
    const r = await s.run(batch, adapter, { lossDenominator: batch.countedTokens, dropoutSeed: i });
    if (i === 0 && q.gradsOut) {
      const bs = keys.filter((k) => k.includes('lora_B')).map((k) => r.grads.get(k)!);
      const flat = new Float32Array(bs.reduce((n, g) => n + g.length, 0));
      let o = 0;
      for (const g of bs) { flat.set(g, o); o += g.length; }
      writeFileSync(q.gradsOut, new Uint8Array(flat.buffer));
    }
    opt.step(params, r.grads, 1e-4);
    loss = r.loss;
    stepS.push((performance.now() - t) / 1000);
  }
  await s.release();
  return { loadS, stepS, loss, tokens: seq, peakRssBytes: peak() };
}

async function logits(q: Req, ckpt: ReturnType<typeof readCheckpoint>) {
  const seq = q.seq ?? 256;
  const ids = loadTokenizer(q.dir).encode(FIXED_TEXT.repeat(Math.ceil(seq / 40))).slice(0, seq);
  const spec = { batch: 1, seq, pastLen: 0, maxPositions: seq, lora: null, loraDropout: false, head: 'logits' as const, presentKv: false };
  const weights = baseWeightsFor(ckpt, { quantize: q.quantize });
  const built = buildDecoder(ckpt, spec, weights);
  const path = materializeModel(ckpt, graphKey(ckpt, { kind: 'infer', spec, weights: weights.key }), () => built.b.g, {});
  const session = await createOrtSession(path, {}, { prepack: weights.mode !== 'none', arena: true });
  const out = await session.run({
    input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, seq]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from(ids, (_, i) => BigInt(i)), [1, seq]),
    attn_bias: new ort.Tensor('float32', Float32Array.from({ length: seq * seq }, (_, k) => (k % seq <= Math.floor(k / seq) ? 0 : -1e9)), [1, 1, 1, seq, seq]),
  });
  const V = ckpt.config.vocabSize;
  const lg = out.logits.data as Float32Array;
  await session.release();
  const logp = new Float32Array((seq - 1) * V); // positions 0..seq-2 predict ids[1..]
  for (let t = 0; t < seq - 1; t++) {
    const row = lg.subarray(t * V, (t + 1) * V);
    let m = -Infinity;
    for (let v = 0; v < V; v++) m = Math.max(m, row[v]);
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(row[v] - m);
    const lse = m + Math.log(z);
    for (let v = 0; v < V; v++) logp[t * V + v] = row[v] - lse;
  }
  if (q.refOut) {
    writeFileSync(q.refOut, new Uint8Array(logp.buffer));
    return { peakRssBytes: peak() };
  }
  const ref = new Float32Array(logp.length);
  const fd = openSync(q.ref!, 'r');
  readSync(fd, new Uint8Array(ref.buffer), 0, ref.byteLength, 0);
  closeSync(fd);
  let dl = 0, kl = 0;
  for (let t = 0; t < seq - 1; t++) {
    dl += Math.abs(logp[t * V + ids[t + 1]] - ref[t * V + ids[t + 1]]);
    for (let v = 0; v < V; v++) { const lr = ref[t * V + v]; kl += Math.exp(lr) * (lr - logp[t * V + v]); }
  }
  return { meanAbsDlogp: dl / (seq - 1), kl: kl / (seq - 1), meanLogp: ids.slice(1).reduce((s, id, t) => s + ref[t * V + id], 0) / (seq - 1), peakRssBytes: peak() };
}

const q = JSON.parse(process.argv[2]) as Req;
const ckpt = readCheckpoint(q.dir);
let result: unknown;
if (q.op === 'prepare') {
  // the weight cache of this mode: built now (first use) or earlier; its build time either way
  const graphs = graphCacheDir();
  const noCache = q.quantize === 'none' && [...ckpt.tensors.values()].every((t) => t.dtype === 'F32');
  const r = noCache ? { built: false, seconds: 0 } : ensureWeightCache(ckpt, q.quantize, weightCacheRoot(graphs), (m) => process.stderr.write(`${m}\n`), graphs);
  result = { ...r, peakRssBytes: peak() };
} else if (q.op === 'train') {
  result = await train(q, ckpt);
} else {
  result = await logits(q, ckpt);
}
process.stdout.write(JSON.stringify(result) + '\n');
