// The decoder forward pass of LlamaForCausalLM / Qwen2ForCausalLM as ONNX ops, written to read like
// the transformers modeling code (and llama2.c). Everything is computed in float32; F16/BF16 base
// weights are Cast once inside the graph (ORT constant-folds the Cast at load time).
//
// Shapes: B = batch, S = query length, T = key length (past + S), H = heads, KV = kv heads,
// G = H / KV (GQA group), D = head dim, N = B*S rows of the 2-D activations.
// LoRA as PEFT: y = base(x) + scaling * (dropout(x) @ A^T) @ B^T.

import { fail } from '../../shared/errors.ts';
import { Builder, type DType } from './graph/ir.ts';
import { loraKey, loraScaling } from './lora-keys.ts';
import { ropeTables } from './rope.ts';
import type { Checkpoint, LoraConfig, LoraTarget, ModelConfig } from './types.ts';

export type DecoderHead =
  | 'loss' // scalar: -sum(lossWeight * log p(target))
  | 'tokenLogprobs' // [B, S]: log p(target) per position
  | 'logits'; // [B, S, V]

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
}

export interface BuiltDecoder {
  b: Builder;
  /** Names of the head's output ("loss", "token_logprobs" or "logits"). */
  out: string;
  /** Adapter tensor keys in input order (each is a graph input of the same name). */
  loraKeys: string[];
}

/** HF layer names: model.layers.{l}.self_attn.q_proj ... */
const projName = (l: number, t: LoraTarget) => `model.layers.${l}.${['gate_proj', 'up_proj', 'down_proj'].includes(t) ? 'mlp' : 'self_attn'}.${t}`;

export function buildDecoder(ckpt: Checkpoint, spec: DecoderSpec): BuiltDecoder {
  const cfg: ModelConfig = ckpt.config;
  const { batch: B, seq: S, pastLen: P } = spec;
  const T = P + S;
  const N = B * S;
  const H = cfg.numHeads, KV = cfg.numKvHeads, D = cfg.headDim, G = H / KV;
  const b = new Builder(`${cfg.arch}_${spec.head}`);
  const loraKeys: string[] = [];
  const scaling = spec.lora ? loraScaling(spec.lora) : 0;

  // ---- weights: external initializers pointing into the safetensors files ---------------------
  const floatWeights = new Map<string, string>();
  const weight = (name: string): string => {
    const hit = floatWeights.get(name);
    if (hit) return hit;
    const t = ckpt.tensors.get(name);
    if (!t) throw fail('FEDLORA_ERR_MODEL_FILES', `${ckpt.dir}: weight "${name}" is missing from the checkpoint`);
    const dtype: DType = t.dtype === 'F32' ? 'float32' : t.dtype === 'F16' ? 'float16' : 'bfloat16';
    const init = b.initializer(name, dtype, t.shape, { kind: 'external', file: t.file, offset: t.offset, length: t.length });
    const v = dtype === 'float32' ? init : b.op1('Cast', [init], { to: 1 });
    floatWeights.set(name, v);
    return v;
  };
  const has = (name: string) => ckpt.tensors.has(name);

  // ---- inputs -----------------------------------------------------------------------------------
  const inputIds = b.input('input_ids', 'int64', [B, S]);
  const positionIds = b.input('position_ids', 'int64', [B, S]);
  // Additive attention bias: 0 where a query may see a key (causal, same packed segment), -1e9 elsewhere.
  const attnBias = b.input('attn_bias', 'float32', [B, 1, 1, S, T]);

  // Linear layer with the HF weight layout [out, in]: Gemm(transB=1) reads W as is (no transposed copy).
  const linear = (x: string /* [N, in] */, l: number, target: LoraTarget, withBias: boolean): string => {
    const name = projName(l, target);
    const inputs = [x, weight(`${name}.weight`)];
    if (withBias) inputs.push(weight(`${name}.bias`));
    let y = b.op1('Gemm', inputs, { transB: 1 }); // [N, out]
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
  const embed = weight('model.embed_tokens.weight'); // [V, hidden]
  let x = b.reshape(b.op1('Gather', [embed, inputIds], { axis: 0 }), [N, cfg.hiddenSize]); // [N, hidden]

  const qScale = b.constF([1 / Math.sqrt(D)], []);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
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
  }

  const hf = rmsNorm(x, 'model.norm.weight'); // [N, hidden]
  const lmHead = cfg.tieWordEmbeddings || !has('lm_head.weight') ? embed : weight('lm_head.weight'); // [V, hidden]
  const logits = b.op1('Gemm', [hf, lmHead], { transB: 1 }); // [N, V]

  let out: string;
  if (spec.head === 'logits') {
    out = b.op1('Reshape', [logits, b.constI([B, S, cfg.vocabSize])], {}, 'logits');
  } else {
    const logp = b.op1('LogSoftmax', [logits], { axis: 1 }); // [N, V]
    const targets = b.input('targets', 'int64', [N, 1]); // next-token ids, 0 where ignored
    const picked = b.op1('GatherElements', [logp, targets], { axis: 1 }); // [N, 1]
    if (spec.head === 'tokenLogprobs') {
      out = b.op1('Reshape', [picked, b.constI([B, S])], {}, 'token_logprobs');
    } else {
      // loss_weight = 1/lossDenominator where the target counts, 0 elsewhere.
      const w = b.input('loss_weight', 'float32', [N, 1]);
      out = b.op1('Neg', [b.reduceSum(b.mul(picked, w), [0, 1], false)], {}, 'loss'); // []
    }
  }
  b.output(out);
  return { b, out, loraKeys };
}
