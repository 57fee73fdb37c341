// Inference on the engine's graphs (no backward): per-token log-probabilities for scoring/evaluation,
// next-token logits, and generation with a key/value cache (greedy or temperature/top-p sampling).
// Graphs are built for length buckets so a few cached sessions serve all requests.

import * as ort from 'onnxruntime-node';
import { fail } from '../../shared/errors.ts';
import { loraShapes } from '../../shared/lora/keys.ts';
import { buildDecoder, type DecoderSpec } from './model.ts';
import { adapterFeeds, attentionBias, baseWeightsFor, createOrtSession, graphKey, materializeModel, seededUniform, type SessionOptions } from './session.ts';
import type { AdapterWeights, LoraConfig } from '../../shared/lora/types.ts';
import type { Checkpoint } from './types.ts';

interface Compiled {
  session: ort.InferenceSession;
  loraKeys: string[];
}

const sessions = new Map<string, Promise<Compiled>>();

async function compiled(ckpt: Checkpoint, spec0: DecoderSpec, opts: SessionOptions): Promise<Compiled> {
  const spec: DecoderSpec = { ...spec0, quantAccuracy: opts.quantAccuracy };
  const weights = baseWeightsFor(ckpt, opts);
  const key = graphKey(ckpt, { kind: 'infer', spec, weights: weights.key });
  const cacheKey = `${key}:${opts.device ?? 'cpu'}:${opts.threads ?? ''}`;
  let p = sessions.get(cacheKey);
  if (!p) {
    p = (async () => {
      const built = buildDecoder(ckpt, spec, weights);
      const path = materializeModel(ckpt, key, () => built.b.g, opts);
      return { session: await createOrtSession(path, opts, { prepack: weights.mode !== 'none', arena: true }), loraKeys: built.loraKeys };
    })();
    sessions.set(cacheKey, p);
    p.catch(() => sessions.delete(cacheKey));
  }
  return p;
}

/** Release every cached inference session (e.g. before exit or when switching models). */
export async function releaseInferenceSessions(): Promise<void> {
  const all = [...sessions.values()];
  sessions.clear();
  for (const p of all) await (await p.catch(() => null))?.session.release();
}

const bucket = (n: number, min = 8) => Math.max(min, 2 ** Math.ceil(Math.log2(Math.max(1, n))));

function checkLora(adapter: AdapterWeights | null, lora: LoraConfig | null): LoraConfig | null {
  if (adapter && !lora) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'an adapter was given without its LoraConfig');
  return adapter ? { ...lora!, dropout: 0 } : null;
}

function loraFeeds(ckpt: Checkpoint, c: Compiled, adapter: AdapterWeights | null, lora: LoraConfig | null): Record<string, ort.Tensor> {
  if (!adapter || !lora) return {};
  return adapterFeeds(c.loraKeys, loraShapes(ckpt.config, lora), adapter);
}

function checkIds(ckpt: Checkpoint, ids: number[], what: string): void {
  const V = ckpt.config.vocabSize;
  ids.forEach((t, i) => {
    if (!Number.isInteger(t) || t < 0 || t >= V) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `${what}[${i}] = ${t} is not a token id in [0, ${V})`);
  });
}

export interface ScoreOptions extends SessionOptions {
  /** Sequences per session run (rows of the graph); default min(8, count) rounded up to a power of 2. */
  batch?: number;
}

/** Log-probability of each token given the previous ones, per sequence: out[i][0] = NaN,
 *  out[i][t] = log p(ids[i][t] | ids[i][..t]). With an adapter, LoRA (no dropout) is applied. */
export async function scoreLogprobs(
  ckpt: Checkpoint, adapter: AdapterWeights | null, lora: LoraConfig | null, ids: number[][], opts: ScoreOptions = {},
): Promise<Float32Array[]> {
  const l = checkLora(adapter, lora);
  ids.forEach((s, i) => checkIds(ckpt, s, `ids[${i}]`));
  const results: Float32Array[] = ids.map((s) => new Float32Array(s.length).fill(NaN));
  if (ids.length === 0) return results;
  const B = opts.batch ?? Math.min(8, bucket(ids.length, 1));
  const S = bucket(Math.max(...ids.map((s) => s.length)));
  const c = await compiled(ckpt, { batch: B, seq: S, pastLen: 0, maxPositions: S, lora: l, loraDropout: false, head: 'tokenLogprobs', presentKv: false }, opts);
  const lf = loraFeeds(ckpt, c, adapter, l);
  for (let start = 0; start < ids.length; start += B) {
    const rows = ids.slice(start, start + B);
    const N = B * S;
    const inputIds = new BigInt64Array(N), positionIds = new BigInt64Array(N), targets = new BigInt64Array(N);
    const segs = new Int32Array(N);
    rows.forEach((s, r) => {
      for (let t = 0; t < s.length; t++) {
        inputIds[r * S + t] = BigInt(s[t]);
        positionIds[r * S + t] = BigInt(t);
        segs[r * S + t] = 1;
        if (t + 1 < s.length) targets[r * S + t] = BigInt(s[t + 1]);
      }
    });
    const out = await c.session.run({
      input_ids: new ort.Tensor('int64', inputIds, [B, S]),
      position_ids: new ort.Tensor('int64', positionIds, [B, S]),
      attn_bias: new ort.Tensor('float32', attentionBias(B, S, segs), [B, 1, 1, S, S]),
      targets: new ort.Tensor('int64', targets, [N, 1]),
      ...lf,
    });
    const lp = out.token_logprobs.data as Float32Array;
    rows.forEach((s, r) => {
      for (let t = 1; t < s.length; t++) results[start + r][t] = lp[r * S + t - 1];
    });
  }
  return results;
}

function causalBias(S: number, len: number): Float32Array {
  const segs = new Int32Array(S);
  segs.fill(1, 0, len);
  return attentionBias(1, S, segs);
}

async function prefill(ckpt: Checkpoint, adapter: AdapterWeights | null, lora: LoraConfig | null, ids: number[], presentKv: boolean, opts: SessionOptions) {
  const S = bucket(ids.length, 16);
  const c = await compiled(ckpt, { batch: 1, seq: S, pastLen: 0, maxPositions: S, lora, loraDropout: false, head: 'logits', presentKv }, opts);
  const inputIds = new BigInt64Array(S), positionIds = new BigInt64Array(S);
  ids.forEach((t, i) => { inputIds[i] = BigInt(t); positionIds[i] = BigInt(i); });
  const out = await c.session.run({
    input_ids: new ort.Tensor('int64', inputIds, [1, S]),
    position_ids: new ort.Tensor('int64', positionIds, [1, S]),
    attn_bias: new ort.Tensor('float32', causalBias(S, ids.length), [1, 1, 1, S, S]),
    ...loraFeeds(ckpt, c, adapter, lora),
  });
  const V = ckpt.config.vocabSize;
  const logits = (out.logits.data as Float32Array).slice((ids.length - 1) * V, ids.length * V);
  return { out, S, logits };
}

/** Logits [vocab] of the token after `ids`, recomputed from scratch (no cache). */
export async function nextTokenLogits(ckpt: Checkpoint, adapter: AdapterWeights | null, lora: LoraConfig | null, ids: number[], opts: SessionOptions = {}): Promise<Float32Array> {
  if (ids.length === 0) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'nextTokenLogits: ids is empty');
  checkIds(ckpt, ids, 'ids');
  return (await prefill(ckpt, adapter, checkLora(adapter, lora), ids, false, opts)).logits;
}

export interface GenerateOptions extends SessionOptions {
  maxNewTokens: number;
  /** 0 = greedy (argmax). */
  temperature?: number;
  topP?: number;
  seed?: number;
  /** Stop tokens; default the checkpoint's eos_token_id(s). */
  stopTokenIds?: number[];
  /** Called with each new token as soon as it is sampled (streaming); returning false stops
   *  generation after it (the caller found a stop sequence in the decoded text). */
  onToken?: (id: number) => boolean | void;
  /** Stops generation before the next token when aborted (the client went away). */
  signal?: AbortSignal;
}

/** Why generation ended: a stop token, maxNewTokens, onToken returned false, or the signal. */
export type FinishReason = 'eos' | 'length' | 'stopped' | 'aborted';

/** Pick the next token: argmax at temperature 0, else nucleus sampling from softmax(logits / T). */
export function sampleToken(logits: Float32Array, temperature: number, topP: number, rnd: () => number): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  if (!(temperature > 0)) return best;
  const probs = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += probs[i] = Math.exp((logits[i] - logits[best]) / temperature);
  const order = [...probs.keys()].sort((a, b) => probs[b] - probs[a]);
  const kept: number[] = [];
  let mass = 0;
  for (const i of order) {
    kept.push(i);
    mass += probs[i] / sum;
    if (mass >= topP) break;
  }
  let u = rnd() * kept.reduce((a, i) => a + probs[i], 0);
  for (const i of kept) if ((u -= probs[i]) <= 0) return i;
  return kept[kept.length - 1];
}

/** Generate up to maxNewTokens after `promptIds` with a key/value cache. Returns the new token ids
 *  (without the stop token that ended generation, if any). Deterministic for a given seed. */
export async function generate(
  ckpt: Checkpoint, adapter: AdapterWeights | null, lora: LoraConfig | null, promptIds: number[], opts: GenerateOptions,
): Promise<number[]> {
  return (await generateTokens(ckpt, adapter, lora, promptIds, opts)).tokens;
}

/** generate() with the reason it ended. The key/value cache belongs to this call (one per request). */
export async function generateTokens(
  ckpt: Checkpoint, adapter: AdapterWeights | null, lora: LoraConfig | null, promptIds: number[], opts: GenerateOptions,
): Promise<{ tokens: number[]; finish: FinishReason }> {
  if (promptIds.length === 0) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'generate: the prompt is empty');
  if (!Number.isInteger(opts.maxNewTokens) || opts.maxNewTokens < 0) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `generate: maxNewTokens ${opts.maxNewTokens} must be a non-negative integer`);
  checkIds(ckpt, promptIds, 'promptIds');
  const l = checkLora(adapter, lora);
  const cfg = ckpt.config;
  const stop = new Set(opts.stopTokenIds ?? cfg.eosTokenIds);
  const temperature = opts.temperature ?? 0, topP = opts.topP ?? 1;
  const rnd = seededUniform(opts.seed ?? 0, 'generate');
  const KV = cfg.numKvHeads, D = cfg.headDim;
  // Cache slots in powers of two: a long-running server then compiles a handful of decode graphs,
  // not one per prompt length (masked slots add exact zeros to the attention).
  const maxLen = bucket(promptIds.length + opts.maxNewTokens, 64);
  const newTokens: number[] = [];
  const emit = (id: number): boolean => {
    newTokens.push(id);
    return opts.onToken?.(id) !== false;
  };
  if (opts.signal?.aborted) return { tokens: newTokens, finish: 'aborted' };

  const first = await prefill(ckpt, adapter, l, promptIds, true, opts);
  let next = sampleToken(first.logits, temperature, topP, rnd);
  if (opts.maxNewTokens === 0) return { tokens: newTokens, finish: 'length' };
  if (stop.has(next)) return { tokens: newTokens, finish: 'eos' };
  if (!emit(next)) return { tokens: newTokens, finish: 'stopped' };

  // Cache [1, KV, maxLen, D] per layer, filled with the prompt's (already rotated) keys and values.
  const cache = Array.from({ length: cfg.numLayers }, () => ({ key: new Float32Array(KV * maxLen * D), value: new Float32Array(KV * maxLen * D) }));
  const store = (out: ort.InferenceSession.OnnxValueMapType, srcLen: number, from: number, count: number, at: number) => {
    cache.forEach((c, layer) => {
      for (const kind of ['key', 'value'] as const) {
        const src = out[`present.${layer}.${kind}`].data as Float32Array; // [1, KV, srcLen, D]
        for (let h = 0; h < KV; h++) {
          c[kind].set(src.subarray((h * srcLen + from) * D, (h * srcLen + from + count) * D), (h * maxLen + at) * D);
        }
      }
    });
  };
  store(first.out, first.S, 0, promptIds.length, 0);

  const dec = await compiled(ckpt, { batch: 1, seq: 1, pastLen: maxLen, maxPositions: maxLen, lora: l, loraDropout: false, head: 'logits', presentKv: true }, opts);
  const lf = loraFeeds(ckpt, dec, adapter, l);
  let cur = promptIds.length; // position of `next`
  while (newTokens.length < opts.maxNewTokens && cur < maxLen) {
    if (opts.signal?.aborted) return { tokens: newTokens, finish: 'aborted' };
    const bias = new Float32Array(maxLen + 1).fill(-1e9);
    bias.fill(0, 0, cur);
    bias[maxLen] = 0; // the new token sees itself
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.of(BigInt(next)), [1, 1]),
      position_ids: new ort.Tensor('int64', BigInt64Array.of(BigInt(cur)), [1, 1]),
      attn_bias: new ort.Tensor('float32', bias, [1, 1, 1, 1, maxLen + 1]),
      ...lf,
    };
    cache.forEach((c, layer) => {
      feeds[`past.${layer}.key`] = new ort.Tensor('float32', c.key, [1, KV, maxLen, D]);
      feeds[`past.${layer}.value`] = new ort.Tensor('float32', c.value, [1, KV, maxLen, D]);
    });
    const out = await dec.session.run(feeds);
    store(out, 1, 0, 1, cur);
    cur++;
    next = sampleToken(out.logits.data as Float32Array, temperature, topP, rnd);
    if (stop.has(next)) return { tokens: newTokens, finish: 'eos' };
    if (!emit(next)) return { tokens: newTokens, finish: 'stopped' };
  }
  return { tokens: newTokens, finish: 'length' };
}
