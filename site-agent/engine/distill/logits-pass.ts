// Full next-token logits of whole sequences, one sequence per session run (the teacher pass and the
// held-out comparison of a student with its teacher). Graphs are built per power-of-two length
// bucket and share the inference graph cache (same spec as infer.ts's logits head).

import * as ort from 'onnxruntime-node';
import { loraShapes } from '../../../shared/lora/keys.ts';
import type { AdapterWeights, LoraConfig } from '../../../shared/lora/types.ts';
import { buildDecoder, type DecoderSpec } from '../model.ts';
import { adapterFeeds, attentionBias, baseWeightsFor, createOrtSession, graphKey, materializeModel, type SessionOptions } from '../session.ts';
import type { Checkpoint } from '../types.ts';

export interface LogitsPass {
  /** Logits [ids.length, vocab] (row t predicts token t + 1). */
  run(ids: number[]): Promise<Float32Array>;
  release(): Promise<void>;
}

const bucket = (n: number) => Math.max(8, 2 ** Math.ceil(Math.log2(Math.max(1, n))));

export function openLogitsPass(ckpt: Checkpoint, adapter: { weights: AdapterWeights; lora: LoraConfig } | null, opts: SessionOptions = {}): LogitsPass {
  const lora = adapter ? { ...adapter.lora, dropout: 0 } : null;
  const weights = baseWeightsFor(ckpt, opts);
  const sessions = new Map<number, Promise<{ session: ort.InferenceSession; loraKeys: string[] }>>();
  const compiled = (S: number) => {
    let p = sessions.get(S);
    if (!p) {
      const spec: DecoderSpec = { batch: 1, seq: S, pastLen: 0, maxPositions: S, lora, loraDropout: false, head: 'logits', presentKv: false, quantAccuracy: opts.quantAccuracy };
      p = (async () => {
        const built = buildDecoder(ckpt, spec, weights);
        const path = materializeModel(ckpt, graphKey(ckpt, { kind: 'infer', spec, weights: weights.key }), () => built.b.g, opts);
        return { session: await createOrtSession(path, opts, { prepack: weights.mode !== 'none', arena: true }), loraKeys: built.loraKeys };
      })();
      sessions.set(S, p);
    }
    return p;
  };
  const V = ckpt.config.vocabSize;
  return {
    async run(ids) {
      const S = bucket(ids.length);
      const c = await compiled(S);
      const inputIds = new BigInt64Array(S), positionIds = new BigInt64Array(S), segs = new Int32Array(S);
      ids.forEach((t, i) => { inputIds[i] = BigInt(t); positionIds[i] = BigInt(i); segs[i] = 1; });
      const out = await c.session.run({
        input_ids: new ort.Tensor('int64', inputIds, [1, S]),
        position_ids: new ort.Tensor('int64', positionIds, [1, S]),
        attn_bias: new ort.Tensor('float32', attentionBias(1, S, segs), [1, 1, 1, S, S]),
        ...(adapter && lora ? adapterFeeds(c.loraKeys, loraShapes(ckpt.config, lora), adapter.weights) : {}),
      });
      return (out.logits.data as Float32Array).slice(0, ids.length * V);
    },
    async release() {
      for (const p of sessions.values()) await (await p.catch(() => null))?.session.release();
      sessions.clear();
    },
  };
}
