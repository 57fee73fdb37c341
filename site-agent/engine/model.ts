// The decoder forward pass of LlamaForCausalLM / Qwen2ForCausalLM as ONNX ops, written to read like
// the transformers modeling code (and llama2.c). Everything is computed in float32; F16/BF16 base
// weights are Cast once inside the graph (ORT constant-folds the Cast at load time).
//
// Shapes: B = batch, S = query length, T = key length (past + S), H = heads, KV = kv heads,
// G = H / KV (GQA group), D = head dim, N = B*S rows of the 2-D activations.
// LoRA as PEFT: y = base(x) + scaling * (dropout(x) @ A^T) @ B^T.

import { fail } from '../../shared/errors.ts';
import { Builder, type DType, type TransposedWeight } from './graph/ir.ts';
import { loraKey, loraScaling } from '../../shared/lora/keys.ts';
import { ropeTables } from './rope.ts';
import type { BaseWeights, RawLocation } from './quant/weight-cache.ts';
import type { RecomputeSegment } from './graph/recompute.ts';
import type { Checkpoint } from './types.ts';
import type { LoraConfig, LoraTarget, ModelConfig } from '../../shared/lora/types.ts';
import { klRows } from './distill/kl-head.ts';

export type DecoderHead =
  | 'loss' // scalar: -sum(lossWeight * log p(target))
  | 'tokenLogprobs' // [B, S]: log p(target) per position
  | 'logits' // [B, S, V]
  | 'distill'; // scalars loss = (1-α)·ce + α·T²·kl, ce, kl (distill/kl-head.ts; needs spec.distill)

/** The distillation head's settings: teacher top-k per position, temperature, KL weight α. */
export interface DistillHeadSpec {
  topK: number;
  temperature: number;
  alpha: number;
}

export interface DecoderSpec {
  batch: number;
  seq: number;
  /** Key/value cache length fed as inputs (0 = no cache). Cached keys are already rotated. */
  pastLen: number;
  /** Rows of the cos/sin tables: every position_id must be below this. */
  maxPositions: number;
  lora: LoraConfig | null;
  /** Feed a dropout mask per LoRA projection ("dropout.<layer>.<target>", [N, in], 0 or 1/(1-p)). */
  loraDropout: boolean;
  head: DecoderHead;
  /** Also output the new keys/values of every layer ("present.<l>.key"/"present.<l>.value", [B, KV, S, D]). */
  presentKv: boolean;
  /** MatMulNBits accuracy_level for quantized weights: 4 (int8 activations inside the kernel, the
   *  fast path) or 0 (float32 arithmetic, exact; for gradient checks). Default 4. */
  quantAccuracy?: 0 | 4;
  /** Training: recompute each decoder layer's (and each loss-head chunk's) activations in the
   *  backward pass instead of keeping them (graph/recompute.ts). */
  recompute?: boolean;
  /** head 'distill': inputs teacher_ids [N, k] int64, teacher_logp [N, k], teacher_rest [N, 1]. */
  distill?: DistillHeadSpec;
}

export interface BuiltDecoder {
  b: Builder;
  /** Names of the head's output ("loss", "token_logprobs" or "logits"). */
  out: string;
  /** Adapter tensor keys in input order (each is a graph input of the same name). */
  loraKeys: string[];
  /** The decoder layers and loss-head chunks, for activation recomputation. */
  segments: RecomputeSegment[];
}

/** Rows of the loss head computed at a time: [rows, vocab] float32 tensors of about 32 MB, so a
 *  151k-token vocabulary never needs [tokens, vocab] tensors of gigabytes. */
const HEAD_CHUNK_VALUES = 8 * 1024 * 1024;

/** HF layer names: model.layers.{l}.self_attn.q_proj ... */
const projName = (l: number, t: LoraTarget) => `model.layers.${l}.${['gate_proj', 'up_proj', 'down_proj'].includes(t) ? 'mlp' : 'self_attn'}.${t}`;

export function buildDecoder(ckpt: Checkpoint, spec: DecoderSpec, weights?: BaseWeights): BuiltDecoder {
  const cfg: ModelConfig = ckpt.config;
  const { batch: B, seq: S, pastLen: P } = spec;
  const T = P + S;
  const N = B * S;
  const H = cfg.numHeads, KV = cfg.numKvHeads, D = cfg.headDim, G = H / KV;
  const b = new Builder(`${cfg.arch}_${spec.head}`);
  const loraKeys: string[] = [];
  const scaling = spec.lora ? loraScaling(spec.lora) : 0;
  const floatLocs = weights?.float ?? ckpt.tensors;
  const quant = weights?.quant ?? new Map();

  // ---- weights: external initializers pointing into the safetensors files ---------------------
  const floatWeights = new Map<string, string>();
  const weight = (name: string): string => {
    const hit = floatWeights.get(name);
    if (hit) return hit;
    const t = floatLocs.get(name);
    if (!t) throw fail('FEDLORA_ERR_MODEL_FILES', `${ckpt.dir}: weight "${name}" is missing from the checkpoint`);
    const dtype: DType = t.dtype === 'F32' ? 'float32' : t.dtype === 'F16' ? 'float16' : 'bfloat16';
    const init = b.initializer(name, dtype, t.shape, { kind: 'external', file: t.file, offset: t.offset, length: t.length });
    const v = dtype === 'float32' ? init : b.op1('Cast', [init], { to: 1 });
    floatWeights.set(name, v);
    return v;
  };
  const has = (name: string) => ckpt.tensors.has(name);
  const ext = (l: { file: string; offset: number; length: number }) => ({ kind: 'external' as const, ...l });

  // Quantized weight [rows, cols] as MatMulNBits initializers (+ its transposed copy for backward).
  const scheme = weights?.scheme ?? { bits: 8, block: 32, accuracy: 4, layerBackward: 'transposed', backwardBlock: 32, backwardAccuracy: 4 }; // (unused when nothing is quantized)
  const { bits, block, backwardBlock } = scheme;
  const qAttrs = (K: number, Nn: number) => ({ K, N: Nn, bits, block_size: block, accuracy_level: spec.quantAccuracy ?? scheme.accuracy });
  const quantInits = new Map<string, { data: string; scales: string }>();
  const quantInit = (name: string, rows: number, cols: number, blk: number, l: { data: RawLocation; scales: RawLocation }) => {
    const blocks = Math.ceil(cols / blk);
    return {
      data: b.initializer(`${name}.q`, 'uint8', [rows, blocks, (blk * bits) / 8], ext(l.data)),
      scales: b.initializer(`${name}.s`, 'float32', [rows, blocks], ext(l.scales)),
    };
  };
  const quantWeight = (name: string): { data: string; scales: string } => {
    const hit = quantInits.get(name);
    if (hit) return hit;
    const q = quant.get(name)!;
    const fwd = quantInit(name, q.rows, q.cols, block, q);
    let t: TransposedWeight | null = null;
    if (q.t) {
      b.transposedWeights.set(fwd.data, () => (t ??= { kind: 'transposed', ...quantInit(`${name}.t`, q.cols, q.rows, backwardBlock, q.t!), block: backwardBlock, accuracy: spec.quantAccuracy ?? scheme.backwardAccuracy }));
    } else if (scheme.layerBackward === 'dequantize') {
      b.transposedWeights.set(fwd.data, () => (t ??= { kind: 'dequantize', dequantized: () => dequantizedWeight(name, q) }));
    }
    quantInits.set(name, fwd);
    return fwd;
  };
  // W [rows, cols] dequantized to float32 inside the graph, for one product in the backward pass:
  // GatherBlockQuantized of every row, the same kernel and bytes as the quantized embedding. The
  // row indices depend on an input (0 · position ids), so ONNX Runtime cannot fold the product
  // into a float32 initializer at load, which would hold the whole model in float32.
  let runtimeZero: string | null = null;
  const dequantizedWeight = (name: string, q: { rows: number; cols: number; data: RawLocation; scales: RawLocation }): string => {
    runtimeZero ??= b.op1('ReduceMax', [b.op1('Mul', [positionIds, b.constI([0], [])]), b.constI([0, 1])], { keepdims: 0 });
    const rowIds = b.op1('Add', [b.constI(Array.from({ length: q.rows }, (_, i) => i)), runtimeZero]);
    const blocks = Math.ceil(q.cols / block);
    const data = b.initializer(`${name}.q.rows`, 'uint8', [q.rows, (blocks * block * bits) / 8], ext(q.data));
    const scales = b.initializer(`${name}.s.rows`, 'float32', [q.rows, blocks], ext(q.scales));
    const w = b.op1('GatherBlockQuantized', [data, rowIds, scales], { bits, block_size: block, gather_axis: 0, quantize_axis: 1 }); // [rows, padded]
    return blocks * block === q.cols ? w : b.op1('Slice', [w, b.constI([0]), b.constI([q.cols]), b.constI([1])]);
  };
  /** x [N, in] · W^T for an HF Linear weight W [out, in] (+ bias). */
  const matmulW = (x: string, name: string, bias: string | null): string => {
    if (quant.has(name)) {
      const q = quant.get(name)!;
      const { data, scales } = quantWeight(name);
      const y = b.op1('MatMulNBits', [x, data, scales], qAttrs(q.cols, q.rows));
      return bias ? b.add(y, weight(bias)) : y;
    }
    // Gemm(transB=1) reads W [out, in] as is (no transposed copy)
    return b.op1('Gemm', bias ? [x, weight(name), weight(bias)] : [x, weight(name)], { transB: 1 });
  };

  // ---- inputs -----------------------------------------------------------------------------------
  const inputIds = b.input('input_ids', 'int64', [B, S]);
  const positionIds = b.input('position_ids', 'int64', [B, S]);
  // Additive attention bias: 0 where a query may see a key (causal, same packed segment), -1e9 elsewhere.
  const attnBias = b.input('attn_bias', 'float32', [B, 1, 1, S, T]);

  // Linear layer with the HF weight layout [out, in].
  const linear = (x: string /* [N, in] */, l: number, target: LoraTarget, withBias: boolean): string => {
    const name = projName(l, target);
    let y = matmulW(x, `${name}.weight`, withBias ? `${name}.bias` : null); // [N, out]
    if (spec.lora && spec.lora.targets.includes(target)) {
      const aKey = loraKey(l, target, 'A'), bKey = loraKey(l, target, 'B');
      const [inF] = b.shape(x).slice(1);
      const outF = b.shape(y)[1];
      const A = b.input(aKey, 'float32', [spec.lora.r, inF]);
      const Bw = b.input(bKey, 'float32', [outF, spec.lora.r]);
      loraKeys.push(aKey, bKey);
      const xd = spec.loraDropout ? b.mul(x, b.input(`dropout.${l}.${target}`, 'float32', [N, inF])) : x; // [N, in]
      const h = b.op1('Gemm', [xd, A], { transB: 1 }); // [N, r]
      const d = b.op1('Gemm', [h, Bw], { transB: 1, alpha: { float: scaling } }); // [N, out]
      y = b.add(y, d);
    }
    return y;
  };

  // RMSNorm in float32: x * rsqrt(mean(x^2) + eps) * w
  const eps = b.constF([cfg.rmsNormEps], []);
  const rmsNorm = (x: string /* [N, hidden] */, w: string): string => {
    const variance = b.op1('ReduceMean', [b.mul(x, x), b.constI([-1])], { keepdims: 1 }); // [N, 1]
    const inv = b.op1('Reciprocal', [b.op1('Sqrt', [b.add(variance, eps)])]); // [N, 1]
    return b.mul(b.mul(x, inv), weight(w)); // [N, hidden]
  };

  // RoPE: cos/sin tables [maxPositions, D] gathered by position_ids -> [B, 1, S, D]
  const tables = ropeTables(cfg, spec.maxPositions);
  const cosT = b.initializer('rope_cos', 'float32', [spec.maxPositions, D], { kind: 'raw', bytes: new Uint8Array(tables.cos.buffer) });
  const sinT = b.initializer('rope_sin', 'float32', [spec.maxPositions, D], { kind: 'raw', bytes: new Uint8Array(tables.sin.buffer) });
  const cos = b.reshape(b.op1('Gather', [cosT, positionIds], { axis: 0 }), [B, 1, S, D]);
  const sin = b.reshape(b.op1('Gather', [sinT, positionIds], { axis: 0 }), [B, 1, S, D]);
  // x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1)
  const rope = (x: string /* [B, h, S, D] */): string => {
    const [x1, x2] = b.op('Split', [x], { axis: -1, num_outputs: 2 }, 2); // [B, h, S, D/2] each
    const rot = b.op1('Concat', [b.neg(x2), x1], { axis: -1 }); // [B, h, S, D]
    return b.add(b.mul(x, cos), b.mul(rot, sin));
  };

  // ---- embeddings ---------------------------------------------------------------------------------
  let x: string; // [N, hidden]
  if (quant.has('model.embed_tokens.weight')) {
    const q = quant.get('model.embed_tokens.weight')!;
    const blocks = Math.ceil(q.cols / block);
    const data = b.initializer('model.embed_tokens.weight.rows', 'uint8', [q.rows, (blocks * block * bits) / 8], ext(q.data));
    const scales = b.initializer('model.embed_tokens.weight.rows.s', 'float32', [q.rows, blocks], ext(q.scales));
    let e = b.op1('GatherBlockQuantized', [data, inputIds, scales], { bits, block_size: block, gather_axis: 0, quantize_axis: 1 }); // [B, S, padded]
    if (blocks * block !== q.cols) e = b.op1('Slice', [e, b.constI([0]), b.constI([q.cols]), b.constI([2])]);
    x = b.reshape(e, [N, cfg.hiddenSize]);
  } else {
    x = b.reshape(b.op1('Gather', [weight('model.embed_tokens.weight'), inputIds], { axis: 0 }), [N, cfg.hiddenSize]);
  }

  const segments: RecomputeSegment[] = [];
  const qScale = b.constF([1 / Math.sqrt(D)], []);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    const layerStart = b.g.nodes.length, layerInput = x;
    // ---- self-attention -------------------------------------------------------------------------
    const h = rmsNorm(x, `${p}.input_layernorm.weight`); // [N, hidden]
    const q = linear(h, l, 'q_proj', cfg.qkvBias); // [N, H*D]
    const k = linear(h, l, 'k_proj', cfg.qkvBias); // [N, KV*D]
    const v = linear(h, l, 'v_proj', cfg.qkvBias); // [N, KV*D]
    const qh = rope(b.transpose(b.reshape(q, [B, S, H, D]), [0, 2, 1, 3])); // [B, H, S, D]
    let kh = rope(b.transpose(b.reshape(k, [B, S, KV, D]), [0, 2, 1, 3])); // [B, KV, S, D]
    let vh = b.transpose(b.reshape(v, [B, S, KV, D]), [0, 2, 1, 3]); // [B, KV, S, D]
    if (spec.presentKv) {
      b.output(b.op1('Identity', [kh], {}, `present.${l}.key`));
      b.output(b.op1('Identity', [vh], {}, `present.${l}.value`));
    }
    if (P > 0) {
      kh = b.op1('Concat', [b.input(`past.${l}.key`, 'float32', [B, KV, P, D]), kh], { axis: 2 }); // [B, KV, T, D]
      vh = b.op1('Concat', [b.input(`past.${l}.value`, 'float32', [B, KV, P, D]), vh], { axis: 2 }); // [B, KV, T, D]
    }
    // GQA without repeat_kv: query heads of one kv head are stacked along the row axis.
    const qg = b.reshape(b.mul(qh, qScale), [B, KV, G * S, D]); // [B, KV, G*S, D]
    const scores = b.matmul(qg, b.transpose(kh, [0, 1, 3, 2])); // [B, KV, G*S, T]
    const masked = b.add(b.reshape(scores, [B, KV, G, S, T]), attnBias); // [B, KV, G, S, T]
    const probs = b.reshape(b.op1('Softmax', [masked], { axis: -1 }), [B, KV, G * S, T]); // float32 softmax
    const ctx = b.reshape(b.matmul(probs, vh), [B, H, S, D]); // [B, H, S, D]
    const attn = b.reshape(b.transpose(ctx, [0, 2, 1, 3]), [N, H * D]); // [N, H*D]
    x = b.add(x, linear(attn, l, 'o_proj', cfg.oBias)); // residual, [N, hidden]

    // ---- MLP: down(silu(gate(x)) * up(x)) ---------------------------------------------------------
    const h2 = rmsNorm(x, `${p}.post_attention_layernorm.weight`);
    const gate = linear(h2, l, 'gate_proj', cfg.mlpBias); // [N, I]
    const up = linear(h2, l, 'up_proj', cfg.mlpBias); // [N, I]
    const act = b.mul(b.mul(gate, b.op1('Sigmoid', [gate])), up); // [N, I]
    x = b.add(x, linear(act, l, 'down_proj', cfg.mlpBias)); // [N, hidden]
    segments.push({ start: layerStart, end: b.g.nodes.length, input: layerInput, output: x });
  }

  const hf = rmsNorm(x, 'model.norm.weight'); // [N, hidden]
  const lmHead = cfg.tieWordEmbeddings || !has('lm_head.weight') ? 'model.embed_tokens.weight' : 'lm_head.weight'; // [V, hidden]

  let out: string;
  if (spec.head === 'logits') {
    out = b.op1('Reshape', [matmulW(hf, lmHead, null), b.constI([B, S, cfg.vocabSize])], {}, 'logits');
  } else {
    const targets = b.input('targets', 'int64', [N, 1]); // next-token ids, 0 where ignored
    // loss_weight = 1/lossDenominator where the target counts, 0 elsewhere.
    const w = spec.head === 'loss' || spec.head === 'distill' ? b.input('loss_weight', 'float32', [N, 1]) : null;
    const kd = spec.head === 'distill' ? spec.distill : undefined;
    if (spec.head === 'distill' && !kd) throw fail('FEDLORA_ERR_INTERNAL', 'the distill head needs spec.distill');
    const teacher = kd
      ? { ids: b.input('teacher_ids', 'int64', [N, kd.topK]), logp: b.input('teacher_logp', 'float32', [N, kd.topK]), rest: b.input('teacher_rest', 'float32', [N, 1]) }
      : null;
    const klParts: string[] = [];
    const rows = Math.max(1, Math.floor(HEAD_CHUNK_VALUES / cfg.vocabSize));
    const parts: string[] = [];
    for (let r0 = 0; r0 < N; r0 += rows) {
      const r1 = Math.min(N, r0 + rows);
      const slice = (v: string) => (r1 - r0 === N ? v : b.op1('Slice', [v, b.constI([r0]), b.constI([r1]), b.constI([0])]));
      const [hc, tc, wc] = [slice(hf), slice(targets), w ? slice(w) : null];
      const start = b.g.nodes.length;
      const logits = matmulW(hc, lmHead, null); // [rows, V]
      const logp = b.op1('LogSoftmax', [logits], { axis: 1 }); // [rows, V]
      const picked = b.op1('GatherElements', [logp, tc], { axis: 1 }); // [rows, 1]
      parts.push(wc ? b.reduceSum(b.mul(picked, wc), [0, 1], false) : picked);
      if (teacher && kd && wc) {
        klParts.push(b.reduceSum(b.mul(klRows(b, logits, { ids: slice(teacher.ids), logp: slice(teacher.logp), rest: slice(teacher.rest) }, kd.temperature), wc), [0, 1], false));
      } else if (wc) segments.push({ start, end: b.g.nodes.length, input: hc, output: parts[parts.length - 1] });
    }
    if (spec.head === 'tokenLogprobs') {
      const picked = parts.length === 1 ? parts[0] : b.op1('Concat', parts, { axis: 0 }); // [N, 1]
      out = b.op1('Reshape', [picked, b.constI([B, S])], {}, 'token_logprobs');
    } else if (kd) {
      // the three scalars share one graph; only `loss` is differentiated
      const ce = b.op1('Neg', [parts.reduce((acc, p) => b.add(acc, p))], {}, 'ce');
      const kl = b.op1('Identity', [klParts.reduce((acc, p) => b.add(acc, p))], {}, 'kl');
      b.output(ce);
      b.output(kl);
      out = b.op1('Add', [b.scale(ce, 1 - kd.alpha), b.scale(kl, kd.alpha * kd.temperature ** 2)], {}, 'loss');
    } else {
      out = b.op1('Neg', [parts.reduce((acc, p) => b.add(acc, p))], {}, 'loss'); // []
    }
  }
  b.output(out);
  return { b, out, loraKeys, segments };
}
